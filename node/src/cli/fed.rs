//! `shoal fed init | card | links | trust | untrust | trusted | export |
//! unexport | exports`.

use crate::cli::FedLinksArgs;
use crate::federation::keys::{load_keypair, public_key_bytes, FEDERATION_KEY_FILE};
use crate::federation::{Card, LinkView};
use crate::tls::ca::{CaError, CA_CERT_FILE};
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

/// How long the CLI waits for a node.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a `shoal fed` command failed.
#[derive(Debug, Error)]
pub enum FedCliError {
    /// The CA directory is unusable.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A gateway address is unusable.
    #[error(transparent)]
    Card(#[from] crate::federation::card::CardError),
    /// `--party` names another party than the CA.
    #[error("--party {given:?} but the CA in this directory is party {ca:?}")]
    OtherParty {
        /// The flag's value.
        given: String,
        /// The CA's party.
        ca: String,
    },
    /// The CA has no federation key.
    #[error("{0} has no federation key; make one with `shoal fed init --dir DIR`")]
    NoFederationKey(String),
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    /// The node could not be reached or answered badly.
    #[error("the shoal API at {url}: {reason}")]
    Api {
        /// The URL asked.
        url: String,
        /// Why.
        reason: String,
    },
}

/// `shoal fed card`: the card of the party whose CA is in `dir`.
pub fn card(dir: &Path, party: Option<&str>, gateways: &[String]) -> Result<Card, FedCliError> {
    let ca_path = dir.join(CA_CERT_FILE);
    let ca_pem = std::fs::read_to_string(&ca_path).map_err(|source| CaError::Io {
        path: ca_path.clone(),
        source,
    })?;
    let ca_party = crate::tls::identity::ca_party_from_pem(&ca_pem)
        .ok_or_else(|| CaError::NoParty(ca_path.clone()))?;
    if let Some(given) = party {
        if given != ca_party {
            return Err(FedCliError::OtherParty {
                given: given.to_string(),
                ca: ca_party,
            });
        }
    }
    let key_path = dir.join(FEDERATION_KEY_FILE);
    if !key_path.exists() {
        return Err(FedCliError::NoFederationKey(dir.display().to_string()));
    }
    let key = public_key_bytes(&load_keypair(&key_path)?)?;
    Ok(Card::new(&ca_party, &key, gateways)?)
}

/// What a request carries.
pub enum Body {
    /// Nothing.
    Empty,
    /// Text (a card's TOML).
    Text(String),
    /// A JSON document.
    Json(serde_json::Value),
}

/// One request to a node's API; the answer's JSON, or the API's error.
pub async fn call<T: serde::de::DeserializeOwned>(
    api: &crate::cli::tasks::ApiArgs,
    method: reqwest::Method,
    path: &str,
    body: Body,
) -> Result<T, FedCliError> {
    let url = format!("{}{path}", api.api.trim_end_matches('/'));
    let fail = |reason: String| FedCliError::Api {
        url: url.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(crate::tasks::REQUEST_TIMEOUT + REQUEST_TIMEOUT)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut request = client.request(method, &url);
    if let Some(token) = &api.api_token {
        request = request.bearer_auth(token);
    }
    request = match body {
        Body::Empty => request,
        Body::Text(text) => request
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(text),
        Body::Json(json) => request.json(&json),
    };
    let response = request.send().await.map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        return Err(fail(format!("HTTP {status}: {}", message.escape_debug())));
    }
    serde_json::from_str(&text).map_err(|e| fail(format!("unexpected answer: {e}")))
}

/// `shoal fed trust`: stores the card; the stored card.
pub async fn trust(api: &crate::cli::tasks::ApiArgs, card: &Path) -> Result<Card, FedCliError> {
    // Checked here too, so that a bad file is named as the file.
    let parsed = Card::load(card)?;
    call(
        api,
        reqwest::Method::POST,
        "/v1/fed/trust",
        Body::Text(parsed.to_toml()),
    )
    .await
}

/// `shoal fed untrust`.
pub async fn untrust(api: &crate::cli::tasks::ApiArgs, party: &str) -> Result<bool, FedCliError> {
    let removed: crate::api::fed::Removed = call(
        api,
        reqwest::Method::DELETE,
        &format!("/v1/fed/trust/{}", path_segment(party)),
        Body::Empty,
    )
    .await?;
    Ok(removed.removed)
}

/// `shoal fed export`.
pub async fn export(
    api: &crate::cli::tasks::ApiArgs,
    service: &str,
    port: u16,
    to: &str,
) -> Result<crate::api::fed::ExportView, FedCliError> {
    let body = serde_json::json!({ "service": service, "port": port, "to": to });
    call(
        api,
        reqwest::Method::POST,
        "/v1/fed/exports",
        Body::Json(body),
    )
    .await
}

/// `shoal fed unexport`.
pub async fn unexport(
    api: &crate::cli::tasks::ApiArgs,
    service: &str,
    to: &str,
) -> Result<bool, FedCliError> {
    let removed: crate::api::fed::Removed = call(
        api,
        reqwest::Method::DELETE,
        &format!(
            "/v1/fed/exports/{}/{}",
            path_segment(to),
            path_segment(service)
        ),
        Body::Empty,
    )
    .await?;
    Ok(removed.removed)
}

/// `shoal tunnel PARTY/SERVICE`: the local address of the new tunnel.
pub async fn tunnel(args: &crate::cli::TunnelArgs) -> Result<String, FedCliError> {
    let usage = |m: String| FedCliError::Usage(m);
    if let Some(close) = &args.close {
        let port = close
            .strip_prefix("127.0.0.1:")
            .unwrap_or(close)
            .parse::<u16>()
            .map_err(|_| usage(format!("--close {close:?}: want 127.0.0.1:PORT")))?;
        let closed: crate::federation::tunnel::TunnelView = call(
            &args.api,
            reqwest::Method::DELETE,
            &format!("/v1/tunnels/{port}"),
            Body::Empty,
        )
        .await?;
        return Ok(closed.local);
    }
    if args.list {
        let open: Vec<crate::federation::tunnel::TunnelView> =
            call(&args.api, reqwest::Method::GET, "/v1/tunnels", Body::Empty).await?;
        let mut out = String::new();
        for t in open {
            let _ = writeln!(
                out,
                "{} {}/{}",
                t.local,
                escaped(&t.party),
                escaped(&t.service)
            );
        }
        return Ok(out.trim_end().to_string());
    }
    let target = args.target.as_deref().unwrap_or_default();
    let Some((party, service)) = target.split_once('/') else {
        return Err(usage(format!(
            "{:?}: want PARTY/SERVICE, e.g. beta/db",
            escaped(target)
        )));
    };
    let body = serde_json::json!({ "party": party, "service": service });
    let open: crate::federation::tunnel::TunnelView = call(
        &args.api,
        reqwest::Method::POST,
        "/v1/tunnels",
        Body::Json(body),
    )
    .await?;
    Ok(open.local)
}

/// Percent-encodes everything but unreserved characters, for a URL path.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The trusted cards as a table, names escaped.
pub fn trusted_table(cards: &[Card]) -> String {
    let mut out = format!("{:<16} {:<66} {}\n", "PARTY", "PUBLIC_KEY", "GATEWAYS");
    for card in cards {
        let _ = writeln!(
            out,
            "{:<16} {:<66} {}",
            escaped(&card.party),
            escaped(&card.public_key),
            escaped(&card.gateways.join(","))
        );
    }
    out
}

/// The exports as a table, names escaped.
pub fn exports_table(exports: &[crate::api::fed::ExportView]) -> String {
    let mut out = format!("{:<16} {:<24} {:>6} {}\n", "TO", "SERVICE", "PORT", "NODE");
    for e in exports {
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:>6} {}",
            escaped(&e.to),
            escaped(&e.service),
            e.port,
            escaped(&e.node)
        );
    }
    out
}

/// `GET /v1/fed/links`.
pub async fn links(args: &FedLinksArgs) -> Result<Vec<LinkView>, FedCliError> {
    let url = format!("{}/v1/fed/links", args.api.trim_end_matches('/'));
    let fail = |reason: String| FedCliError::Api {
        url: url.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut request = client.get(&url);
    if let Some(token) = &args.api_token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        return Err(fail(format!(
            "HTTP {status}: {}",
            body.trim().escape_debug()
        )));
    }
    serde_json::from_str(&body).map_err(|e| fail(format!("not a link list: {e}")))
}

/// A name escaped for a terminal, as a `String` so that width pads it.
fn escaped(text: &str) -> String {
    text.escape_debug().collect()
}

/// The links as a table; names are escaped before they reach a terminal.
pub fn links_table(links: &[LinkView]) -> String {
    let mut out = format!(
        "{:<16} {:<10} {:<7} {:>8} {:<52} {}\n",
        "PARTY", "STATE", "HOLDING", "RTT_MS", "PEER", "REMOTE"
    );
    for link in links {
        let rtt = link
            .rtt_ms
            .map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        let _ = writeln!(
            out,
            "{:<16} {:<10} {:<7} {:>8} {:<52} {}",
            escaped(&link.party),
            format!("{:?}", link.state).to_lowercase(),
            if link.holding { "yes" } else { "no" },
            rtt,
            escaped(link.peer.as_deref().unwrap_or("-")),
            escaped(link.remote.as_deref().unwrap_or("-")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::LinkState;

    #[test]
    fn links_table_aligns_and_escapes_names() {
        let links = [LinkView {
            party: "be\u{1b}ta".into(),
            state: LinkState::Up,
            peer: Some("12D3Koo".into()),
            remote: Some("/ip4/127.0.0.1/udp/1/quic-v1".into()),
            since_ms: 0,
            rtt_ms: Some(0.5),
            holding: true,
            holders: vec!["00".into()],
            slot: Some(0),
            holder: Some("00".into()),
        }];
        let table = links_table(&links);
        let row = table.lines().nth(1).unwrap();
        assert!(!row.contains('\u{1b}'), "{row}");
        assert!(row.starts_with("be\\u{1b}ta       up"), "{row}");
        assert!(row.contains("0.50"), "{row}");
        assert!(row.contains(" yes "), "{row}");
    }
}
