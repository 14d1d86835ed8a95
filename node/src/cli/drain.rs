//! `shoal drain`: asks an agent to take no new work, then waits until it has
//! left the mesh (its running attempts ended, or the deadline passed and
//! they restart elsewhere). `--cancel` stops a drain under way.

use clap::Args;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between looks at the draining agent.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Time the agent gets past the deadline to announce its leave and exit.
const LEAVE_GRACE: Duration = Duration::from_secs(10);

/// `shoal drain` flags.
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// The API of the agent to drain.
    #[arg(long, env = "SHOAL_API_URL", default_value = super::DEFAULT_API_URL, value_parser = super::parse_api_url)]
    pub api: String,
    /// How long running attempts get to finish before the agent leaves
    /// anyway and they restart elsewhere (e.g. `5m`).
    #[arg(long, visible_alias = "wait", value_parser = humantime::parse_duration, default_value = "5m")]
    pub deadline: Duration,
    /// Cancel a drain under way: the node takes work again and stays.
    #[arg(long)]
    pub cancel: bool,
    /// Return once the drain started instead of waiting for the agent to leave.
    #[arg(long)]
    pub no_wait: bool,
    /// Bearer token for an API off loopback.
    #[arg(long, env = "SHOAL_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

/// Why the drain did not complete.
#[derive(Debug, Error)]
pub enum DrainError {
    /// Nothing answered the drain request.
    #[error(
        "cannot reach the shoal API at {url}: {reason} (is an agent running there? try --api)"
    )]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The agent refused.
    #[error("the shoal agent at {url} refused the drain: HTTP {status}: {body}")]
    Refused {
        /// The URL asked.
        url: String,
        /// HTTP status.
        status: u16,
        /// Its body (escaped for the terminal).
        body: String,
    },
    /// The agent still answers after the deadline and the grace period.
    #[error("the shoal agent at {url} is still up {waited:?} after the drain started")]
    StillUp {
        /// The API asked.
        url: String,
        /// How long this command waited.
        waited: Duration,
    },
}

/// What happened, for the one line printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// The agent left the mesh and its API went away.
    Left,
    /// The drain started (`--no-wait`).
    Started,
    /// The drain was cancelled.
    Cancelled,
}

/// Sends the drain and, unless told not to, waits until the agent is gone.
pub async fn drain(args: &DrainArgs) -> Result<DrainOutcome, DrainError> {
    let base = args.api.trim_end_matches('/').to_string();
    let url = format!("{base}/v1/drain");
    let unreachable = |reason: String| DrainError::Unreachable {
        url: url.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let body = if args.cancel {
        serde_json::json!({ "cancel": true })
    } else {
        let ms = u64::try_from(args.deadline.as_millis()).unwrap_or(u64::MAX);
        serde_json::json!({ "deadline_ms": ms })
    };
    let mut request = client.post(&url).json(&body);
    if let Some(token) = &args.api_token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(DrainError::Refused {
            url,
            status: status.as_u16(),
            body: body.trim().escape_debug().to_string(),
        });
    }
    if args.cancel {
        return Ok(DrainOutcome::Cancelled);
    }
    if args.no_wait {
        return Ok(DrainOutcome::Started);
    }
    let started = Instant::now();
    let limit = args.deadline + LEAVE_GRACE;
    let healthz = format!("{base}/healthz");
    while started.elapsed() < limit {
        if client.get(&healthz).send().await.is_err() {
            return Ok(DrainOutcome::Left);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Err(DrainError::StillUp {
        url: base,
        waited: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        drain: DrainArgs,
    }

    #[test]
    fn wait_is_another_name_for_deadline() {
        let a = Cli::parse_from(["x", "--wait", "30s"]).drain;
        let b = Cli::parse_from(["x", "--deadline", "30s"]).drain;
        assert_eq!(a.deadline, Duration::from_secs(30));
        assert_eq!(b.deadline, Duration::from_secs(30));
        assert_eq!(
            Cli::parse_from(["x"]).drain.deadline,
            Duration::from_secs(300)
        );
    }
}
