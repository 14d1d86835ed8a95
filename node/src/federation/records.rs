//! The party's replicated federation records as a gateway follows them:
//! the trusted cards and the exported services, read from their registers
//! (`shoal_protocol::federation::records`) every [`REFRESH`] and handed to
//! the link task and the tunnel server.

use super::Card;
use crate::tasks::TasksHandle;
use shoal_protocol::federation::records::{ExportRecord, EXPORTS_REGISTER, TRUST_REGISTER};
use std::time::Duration;
use tokio::sync::watch;

/// How often a gateway reads the records; a `shoal fed trust` reaches
/// every gateway within about this long.
pub const REFRESH: Duration = Duration::from_millis(500);

/// The records as last read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FedRecords {
    /// Whether they were read at least once (until then nothing is known:
    /// a gateway keeps only its `--fed-trust` cards).
    pub read: bool,
    /// Trusted cards.
    pub cards: Vec<Card>,
    /// Exported services.
    pub exports: Vec<ExportRecord>,
}

impl FedRecords {
    /// The export of `service` to party `to`, if there is one.
    pub fn export(&self, to: &str, service: &str) -> Option<&ExportRecord> {
        self.exports
            .iter()
            .find(|e| e.to == to && e.service == service)
    }
}

/// Keeps the records fresh in the background.
pub fn watch_records(tasks: TasksHandle) -> watch::Receiver<FedRecords> {
    let (tx, rx) = watch::channel(FedRecords::default());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let read = async {
                let trust = tasks.read_records(TRUST_REGISTER).await?;
                let exports = tasks.read_records(EXPORTS_REGISTER).await?;
                Ok::<_, crate::tasks::TaskError>((trust, exports))
            };
            match read.await {
                Ok((trust, exports)) => {
                    let records = FedRecords {
                        read: true,
                        cards: crate::api::fed::cards_of(&trust),
                        exports: crate::api::fed::exports_of(&exports),
                    };
                    tx.send_if_modified(|old| {
                        let changed = *old != records;
                        *old = records;
                        changed
                    });
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the federation records yet"),
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}
