//! `shoal members`: fetch `/v1/members` from a node and print it.

use crate::api::view::MemberView;
use crate::cli::terminal::terminal_safe;
use crate::cli::MembersArgs;
use shoal_protocol::gossip::labels_text;
use shoal_protocol::resources::{cpu_text, memory_text, Resources};
use std::fmt::Write;
use std::time::Duration;
use thiserror::Error;

/// How long the CLI waits for a node.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the member list could not be shown.
#[derive(Debug, Error)]
pub enum MembersError {
    /// The node could not be reached.
    #[error(
        "cannot reach the shoal API at {url}: {reason} (is an agent running there? try --api)"
    )]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The node answered with an error.
    #[error("the shoal API at {url} answered HTTP {status}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// HTTP status.
        status: u16,
        /// Its body.
        body: String,
    },
    /// The answer was not a member list.
    #[error("the shoal API at {url} sent something that is not a member list: {reason}")]
    BadBody {
        /// The URL asked.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Fetches the member list.
pub async fn fetch(args: &MembersArgs) -> Result<Vec<MemberView>, MembersError> {
    let url = format!("{}/v1/members", args.api.trim_end_matches('/'));
    let unreachable = |reason: String| MembersError::Unreachable {
        url: url.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let mut request = client.get(&url);
    if let Some(token) = &args.api_token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !status.is_success() {
        return Err(MembersError::Status {
            url,
            status: status.as_u16(),
            body: body.trim().to_string(),
        });
    }
    serde_json::from_str(&body).map_err(|e| MembersError::BadBody {
        url,
        reason: e.to_string(),
    })
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn heard(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) if ms < 1_000 => format!("{ms}ms ago"),
        Some(ms) if ms < 120_000 => format!("{:.1}s ago", ms as f64 / 1000.0),
        Some(ms) => format!("{}m ago", ms / 60_000),
    }
}

/// `free/capacity` of one kind, `-` before the node's state arrived.
fn free_of(m: &MemberView, text: impl Fn(&Resources) -> String) -> String {
    match (&m.free, &m.capacity) {
        (Some(free), Some(capacity)) => format!("{}/{}", text(free), text(capacity)),
        _ => "-".into(),
    }
}

/// The member table.
pub fn table(members: &[MemberView]) -> String {
    let header = [
        "ID",
        "NAME",
        "ADDRESS",
        "STATE",
        "INC",
        "SLOTS",
        "CPU",
        "MEMORY",
        "LOAD",
        "LABELS",
        "HEALTH",
        "LAST HEARD",
    ];
    let rows: Vec<[String; 12]> = members
        .iter()
        .map(|m| {
            let health = match &m.health_reason {
                Some(reason) => format!("{} ({reason})", m.health),
                None => m.health.clone(),
            };
            let name = if m.is_self {
                format!("{} *", m.name)
            } else {
                m.name.clone()
            };
            [
                terminal_safe(&m.id.chars().take(8).collect::<String>()).into_owned(),
                terminal_safe(&name).into_owned(),
                terminal_safe(&m.addr).into_owned(),
                if m.draining {
                    format!("{} (draining)", crate::metrics::state_name(m.state))
                } else {
                    crate::metrics::state_name(m.state).to_string()
                },
                m.incarnation.to_string(),
                format!("{}/{}", opt(m.slots_free), opt(m.slots_total)),
                free_of(m, |r| cpu_text(r.cpu_milli)),
                free_of(m, |r| memory_text(r.memory_mib)),
                m.cpu_load_permille
                    .map(|l| format!("{:.2}", f64::from(l) / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                if m.labels.is_empty() {
                    "-".into()
                } else {
                    terminal_safe(&labels_text(&m.labels)).into_owned()
                },
                terminal_safe(&health).into_owned(),
                heard(m.last_heard_ms_ago),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header.map(String::from));
    for row in &rows {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::membership::MemberState;

    #[test]
    fn table_shows_state_slots_and_failing_check() {
        let mut m = MemberView::base(
            "n1",
            &"ab".repeat(16),
            "127.0.0.1:1",
            MemberState::Suspect,
            3,
            None,
        );
        m.slots_free = Some(2);
        m.slots_total = Some(4);
        m.capacity = Some(Resources::new(4000, 8192));
        m.free = Some(Resources::new(3500, 7936));
        m.health = "critical".into();
        m.health_reason = Some("disk: 1 MiB free".into());
        m.labels = [
            ("zone".to_string(), "a".to_string()),
            ("gpu".into(), "1".into()),
        ]
        .into();
        let text = table(&[m]);
        assert!(text.contains("gpu=1,zone=a"), "{text}");
        assert!(text.contains("suspect"), "{text}");
        assert!(text.contains("2/4"), "{text}");
        assert!(text.contains("3500m/4"), "{text}");
        assert!(text.contains("7936Mi/8Gi"), "{text}");
        assert!(text.contains("critical (disk: 1 MiB free)"), "{text}");
        assert!(text.lines().count() == 2);
    }

    #[test]
    fn table_escapes_control_characters_of_user_strings() {
        let mut m = MemberView::base(
            "n1\nFAKE  alive",
            &"ab".repeat(16),
            "127.0.0.1:1",
            MemberState::Alive,
            1,
            None,
        );
        m.health = "critical".into();
        m.health_reason = Some("db: \x1b[2Jgone".into());
        let text = table(&[m]);
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("n1\\nFAKE"), "{text:?}");
        assert!(text.contains("db: \\x1b[2Jgone"), "{text:?}");
    }
}
