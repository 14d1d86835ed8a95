//! `shoal health`: asks an agent's `/healthz` (or `/readyz`) and answers with
//! the exit code, so a container HEALTHCHECK or a probe needs no curl (images
//! FROM scratch have none).

use clap::Args;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long one probe request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between probes while `--wait` lasts.
const RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// `shoal health` flags.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The API of the agent to probe.
    #[arg(long, env = "SHOAL_API_URL", default_value = super::DEFAULT_API_URL, value_parser = super::parse_api_url)]
    pub api: String,
    /// Probe `/readyz` (joined a mesh) instead of `/healthz` (process up).
    #[arg(long)]
    pub ready: bool,
    /// Keep probing until it passes or this long has gone by (e.g. `30s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
}

/// Why the agent is not healthy.
#[derive(Debug, Error)]
pub enum HealthError {
    /// Nothing answered.
    #[error(
        "cannot reach the shoal API at {url}: {reason} (is an agent running there? try --api)"
    )]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The agent answered, but not 200.
    #[error("the shoal agent at {url} is not {what}: HTTP {status}: {body}")]
    Failing {
        /// The URL asked.
        url: String,
        /// "healthy" or "ready".
        what: &'static str,
        /// HTTP status.
        status: u16,
        /// Its body (escaped for the terminal).
        body: String,
    },
}

impl HealthArgs {
    fn url(&self) -> String {
        let path = if self.ready { "/readyz" } else { "/healthz" };
        format!("{}{path}", self.api.trim_end_matches('/'))
    }
}

/// Probes once, or until `--wait` runs out; `Ok` means HTTP 200.
pub async fn check(args: &HealthArgs) -> Result<(), HealthError> {
    let url = args.url();
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| HealthError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let deadline = Instant::now() + args.wait.unwrap_or(Duration::ZERO);
    loop {
        let outcome = probe(&client, &url, args.ready).await;
        if outcome.is_ok() || Instant::now() + RETRY_INTERVAL > deadline {
            return outcome;
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}

async fn probe(client: &reqwest::Client, url: &str, ready: bool) -> Result<(), HealthError> {
    let unreachable = |reason: String| HealthError::Unreachable {
        url: url.to_string(),
        reason,
    };
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(HealthError::Failing {
        url: url.to_string(),
        what: if ready { "ready" } else { "healthy" },
        status: status.as_u16(),
        body: body.trim().escape_debug().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(api: &str, ready: bool) -> HealthArgs {
        HealthArgs {
            api: api.to_string(),
            ready,
            wait: None,
        }
    }

    #[test]
    fn probes_healthz_or_readyz_under_the_given_api() {
        assert_eq!(
            args("http://10.0.0.1:7480/", false).url(),
            "http://10.0.0.1:7480/healthz"
        );
        assert_eq!(
            args("http://10.0.0.1:7480", true).url(),
            "http://10.0.0.1:7480/readyz"
        );
    }

    #[tokio::test]
    async fn a_port_with_nothing_listening_is_unhealthy_even_after_waiting() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut probe = args(&format!("http://127.0.0.1:{port}"), false);
        probe.wait = Some(Duration::from_millis(600));
        let started = Instant::now();
        let err = check(&probe).await.unwrap_err();
        assert!(matches!(err, HealthError::Unreachable { .. }), "{err}");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "it retried"
        );
    }
}
