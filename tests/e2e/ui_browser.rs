//! The web view in a real browser: headless Chromium driven through
//! chromedriver's WebDriver HTTP API. A 3-node party; the page lists the
//! members and a task with a hostile name as plain text; `kill -9` of the
//! task's holder shows it down and the task on another node within bounded
//! times. Saves the page as a PNG (`SHOAL_UI_SCREENSHOT=docs/ui.png` for the README's).
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh installs
//! them); skipped with a printed reason without chromedriver or with
//! `SHOAL_SKIP_BROWSER=1`.

use serde_json::{json, Value};
use shoal_tests::agents::{free_tcp_port, logs, wait_for, Agent, Party};
use shoal_tests::repo_root;
use shoal_tests::task_helpers::{http, wait_replicated};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A task name that runs script if the page ever writes it as markup.
const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)>";
/// From `kill -9` to the page showing the member down.
const DOWN_WITHIN: Duration = Duration::from_secs(15);
/// From `kill -9` to the page showing the task's next attempt elsewhere.
const MOVED_WITHIN: Duration = Duration::from_secs(30);

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// One HTTP/1.1 exchange read by its Content-Length: chromedriver keeps the
/// connection open after answering, so reading to the end would hang.
fn webdriver_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).ok()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let mut length = 0usize;
    for _ in 0..100 {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut buf = vec![0; length];
    reader.read_exact(&mut buf).ok()?;
    Some((status, String::from_utf8(buf).ok()?))
}

/// Why the test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if std::env::var("SHOAL_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        return Some("SHOAL_SKIP_BROWSER=1".into());
    }
    if find_on_path("chromedriver").is_none() {
        return Some("no chromedriver on PATH (apt-get install chromium chromium-driver)".into());
    }
    None
}

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    fn start() -> Driver {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let child = Command::new("chromedriver")
            .arg(format!("--port={}", addr.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver { child, addr };
        let ready = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
            let (code, body) = webdriver_http(addr, "GET", "/status", None)?;
            let status: Value = serde_json::from_str(&body).ok()?;
            (code == 200 && status["value"]["ready"] == true).then_some(())
        });
        assert!(ready.is_some(), "chromedriver never became ready");
        driver
    }

    /// A WebDriver command: its `value`, or the error WebDriver answered.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string());
        let (code, text) = webdriver_http(self.addr, method, path, body.as_deref())
            .ok_or_else(|| format!("{method} {path}: no answer from chromedriver"))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}: {text}"))?;
        if code == 200 {
            Ok(value["value"].clone())
        } else {
            Err(format!("{method} {path}: HTTP {code}: {}", value["value"]))
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session, closed when dropped.
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl<'a> Browser<'a> {
    fn open(driver: &'a Driver) -> Browser<'a> {
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,720"]
        });
        if let Some(binary) = find_on_path("chromium") {
            options["binary"] = json!(binary);
        }
        let caps = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": options } } });
        let value = driver
            .call("POST", "/session", Some(caps))
            .expect("open a Chromium session");
        let session = value["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Browser { driver, session }
    }

    fn command(&self, method: &str, tail: &str, body: Option<Value>) -> Result<Value, String> {
        let path = format!("/session/{}{tail}", self.session);
        self.driver.call(method, &path, body)
    }

    fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .expect("navigate");
    }

    fn run(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// `(name, state)` of every member row on the page.
    fn members(&self) -> Vec<(String, String)> {
        let rows = self.run(
            "return [...document.querySelectorAll('#members tbody tr')]\
             .map(r => [r.dataset.name, r.dataset.state]);",
        );
        pairs(&rows)
    }

    /// The text of every cell of the task rows.
    fn task_rows(&self) -> Vec<Vec<String>> {
        let rows = self.run(
            "return [...document.querySelectorAll('#tasks tbody tr')]\
             .map(r => [...r.cells].map(c => c.textContent));",
        );
        rows.as_array()
            .map(|rows| {
                rows.iter()
                    .map(|cells| {
                        cells
                            .as_array()
                            .map(|cs| {
                                cs.iter()
                                    .map(|c| c.as_str().unwrap_or("").to_string())
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An open `alert()` dialog's text, if script ever ran one.
    fn alert_text(&self) -> Option<String> {
        self.command("GET", "/alert/text", None)
            .ok()
            .map(|v| v.as_str().unwrap_or("").to_string())
    }

    fn screenshot_png(&self) -> Vec<u8> {
        let value = self
            .command("GET", "/screenshot", None)
            .expect("take a screenshot");
        decode_base64(value.as_str().expect("base64 text")).expect("valid base64")
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self.command("DELETE", "", None);
    }
}

fn pairs(rows: &Value) -> Vec<(String, String)> {
    rows.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let text = |i: usize| r[i].as_str().unwrap_or("").to_string();
                    (text(0), text(1))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Standard base64 (WebDriver's screenshot encoding), padding optional.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let sextet = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= sextet(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Submits a long mock task with the hostile name; its id.
fn submit_hostile(agent: &Agent) -> String {
    let body = json!({ "driver": "mock", "duration": "120s", "name": HOSTILE_NAME }).to_string();
    let (code, answer) = http(agent.spec.api, "POST", "/v1/tasks", Some(&body)).expect("submit");
    assert_eq!(code, 201, "submit: {answer}");
    let answer: Value = serde_json::from_str(&answer).expect("submit answer");
    answer["id"].as_str().expect("an id").to_string()
}

/// The node a task runs on, as the API reports it.
fn running_on(agent: &Agent, id: &str) -> Option<(String, u64)> {
    let task: Value = serde_json::from_str(&agent.get(&format!("/v1/tasks/{id}"))?).ok()?;
    if task["state"] != "running" {
        return None;
    }
    Some((
        task["node"].as_str()?.to_string(),
        task["attempt"].as_u64()?,
    ))
}

#[test]
fn the_web_view_shows_members_tasks_and_a_failover_in_chromium() {
    if let Some(reason) = skip_reason() {
        println!("skipped: {reason}");
        return;
    }
    let party = Party::new();
    let mut agents = party.mesh(3);
    wait_replicated(&agents, 3);
    let id = submit_hostile(&agents[0]);
    let (holder, first_attempt) =
        wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
            running_on(&agents[0], &id)
        })
        .unwrap_or_else(|| panic!("task never ran:\n{}", logs(&agents)));
    let victim = agents
        .iter()
        .position(|a| a.name() == holder)
        .expect("holder is ours");
    let viewer = (victim + 1) % agents.len();

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.goto(&format!("http://{}/ui", agents[viewer].spec.api));
    let all_alive = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        let members = browser.members();
        (members.len() == 3 && members.iter().all(|(_, s)| s == "alive")).then_some(members)
    });
    assert!(
        all_alive.is_some(),
        "page never listed 3 alive members: {:?}",
        browser.members()
    );
    let shown = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        browser
            .task_rows()
            .into_iter()
            .find(|cells| cells.first() == Some(&id))
    })
    .expect("the submitted task never appeared");
    assert_eq!(
        shown[1], HOSTILE_NAME,
        "the name is shown as text: {shown:?}"
    );
    assert_eq!(shown[4], holder, "{shown:?}");
    let images = browser.run("return document.querySelectorAll('img').length;");
    assert_eq!(images, json!(0), "the task name became markup");
    assert_eq!(browser.alert_text(), None, "the task name ran script");

    let killed_at = Instant::now();
    agents[victim].kill();
    let down = wait_for(DOWN_WITHIN, Duration::from_millis(100), || {
        browser
            .members()
            .into_iter()
            .any(|(name, state)| name == holder && state == "down")
            .then(|| killed_at.elapsed())
    });
    let down = down.unwrap_or_else(|| {
        panic!(
            "{holder} not shown down within {DOWN_WITHIN:?}: {:?}",
            browser.members()
        )
    });
    println!("page shows {holder} down {down:?} after kill -9");
    let moved = wait_for(MOVED_WITHIN, Duration::from_millis(100), || {
        browser.task_rows().into_iter().find(|cells| {
            cells.first() == Some(&id)
                && cells[2] == "running"
                && cells[4] != holder
                && cells[3].parse::<u64>().is_ok_and(|a| a > first_attempt)
        })
    });
    let moved = moved.unwrap_or_else(|| {
        panic!(
            "task not shown moved within {MOVED_WITHIN:?}: {:?}",
            browser.task_rows()
        )
    });
    println!(
        "page shows the task on {} {:?} after kill -9",
        moved[4],
        killed_at.elapsed()
    );
    // Let the page settle on its next poll so the picture shows the new state.
    std::thread::sleep(Duration::from_millis(1200));
    let png = browser.screenshot_png();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // The README's picture is refreshed on request only, so a test run
    // leaves the working tree as it found it.
    let out = match std::env::var_os("SHOAL_UI_SCREENSHOT") {
        Some(path) => repo_root().join(path),
        None => std::env::temp_dir().join(format!("shoal-ui-{}.png", std::process::id())),
    };
    std::fs::write(&out, png).expect("write the screenshot");
    println!("screenshot: {}", out.display());
}

#[test]
fn base64_decodes_what_webdriver_sends() {
    assert_eq!(decode_base64("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
    assert_eq!(decode_base64("aGk").as_deref(), Some(&b"hi"[..]));
    assert_eq!(
        decode_base64("iVBORw0KGgo=").as_deref(),
        Some(&b"\x89PNG\r\n\x1a\n"[..])
    );
    assert_eq!(decode_base64("a$b="), None);
}

#[test]
fn the_web_view_asks_for_the_api_token_and_sends_it() {
    if let Some(reason) = skip_reason() {
        println!("skipped: {reason}");
        return;
    }
    let party = Party::new();
    let mut spec = party.spec("n1");
    spec.api_token = Some("s3cret-token".into());
    let agent = spec.start_fresh(&[]);
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.goto(&format!("http://{}/ui", agent.spec.api));
    let form_shown = "return !document.getElementById('token-form').hidden;";
    let asked = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        (browser.run(form_shown) == json!(true)).then_some(())
    });
    assert!(asked.is_some(), "the page never asked for the token");
    assert!(
        browser.members().is_empty(),
        "members shown without a token"
    );
    let enter = |token: &str| {
        let script = format!(
            "document.getElementById('token').value = {};\
             document.getElementById('token-form').requestSubmit();",
            json!(token)
        );
        browser.run(&script);
    };
    enter("wrong-token");
    let refused = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let text = browser.run("return document.getElementById('token-error').textContent;");
        (text == json!("that token was refused")).then_some(())
    });
    assert!(refused.is_some(), "a wrong token was not reported");
    enter("s3cret-token");
    let listed = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let members = browser.members();
        (members == [("n1".to_string(), "alive".to_string())]).then_some(())
    });
    assert!(
        listed.is_some(),
        "members not shown with the right token: {:?}",
        browser.members()
    );
    assert_eq!(
        browser.run(form_shown),
        json!(false),
        "the form stays after success"
    );
}
