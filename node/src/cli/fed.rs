//! `shoal fed init | card | links`.

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
        }];
        let table = links_table(&links);
        let row = table.lines().nth(1).unwrap();
        assert!(!row.contains('\u{1b}'), "{row}");
        assert!(row.starts_with("be\\u{1b}ta       up"), "{row}");
        assert!(row.contains("0.50"), "{row}");
        assert!(row.contains(" yes "), "{row}");
    }
}
