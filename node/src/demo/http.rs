//! A minimal blocking HTTP/1.1 client for agents on loopback: the demo
//! polls several nodes many times a second and needs no runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a member-list or health poll may take.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(2);
/// Answers larger than this are cut.
const BODY_LIMIT_BYTES: u64 = 4 << 20;

/// `GET path` on `addr`; the body of a 200 answer, `None` otherwise.
pub fn get(addr: SocketAddr, path: &str) -> Option<String> {
    match request(addr, "GET", path, None, POLL_TIMEOUT) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// One request; `(status, body)` or why there was no answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let body = json_body.unwrap_or("");
    let content = if json_body.is_some() {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    } else {
        String::new()
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{content}Connection: close\r\n\r\n{body}"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut response = String::new();
    stream
        .take(BODY_LIMIT_BYTES)
        .read_to_string(&mut response)
        .map_err(|e| format!("answer from {addr}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr} sent no HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr} sent a bad status line"))?;
    Ok((status, body.to_string()))
}
