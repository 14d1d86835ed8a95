//! Federated job attempts (docs/protocol.md §10): the
//! owner party's view of one job ([`JobOwner`]) and a participant's view of
//! one of its parts ([`JobPart`]).
//!
//! A job attempt is a cross-party lease, the task fencing argument of §6 one
//! level up:
//! - gang start: the owner sends `StartAll{n}` only once every part claimed
//!   its slot for attempt `n`; `start_timeout_ms` without that stops the
//!   attempt (releasing every reservation) and counts against `max_attempts`;
//! - a part runs attempt `n` only while it holds a job lease of attempt `n`,
//!   counted on its own clock from *before* it asked the owner, and kills its
//!   process `fence_margin_ms` before that lease ends (self-fencing);
//! - the owner times each grant for `lease × (1+rho)/(1−rho)` on its own
//!   clock and begins attempt `n+1` only once every part of attempt `n` is
//!   confirmed stopped or its grant ran out, so two attempts never have
//!   parts running at one real instant, even across a partition;
//! - a result counts only from the current attempt: every message carries
//!   its attempt number, and both machines ignore older ones.
//!
//! Both machines are sans-IO: `handle_*(now, ..)` feeds an input, `poll_*`
//! drains outputs, `poll_timeout` names the next instant `handle_timeout`
//! is due. `now` is the host's own monotonic clock and must never go back.

mod owner;
mod part;
#[cfg(test)]
mod sim_tests;

pub use owner::{JobOutcome, JobOwner, OwnerOutput};
pub use part::{JobPart, KillReason, PartOutput};

use crate::bugs::Bugs;
use crate::paxos::lease::{acceptor_lease_ms, lease_timing_error};
use thiserror::Error;

/// Most parts one job may have.
pub const MAX_PARTS: usize = 64;
/// Most attempts a job may be given.
pub const MAX_ATTEMPTS: u32 = 100;

/// One part of a job: the party that runs it and its name in the job file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartKey {
    /// The party that runs the part.
    pub party: String,
    /// The part's name, unique in the job.
    pub part: String,
}

impl PartKey {
    /// The part `part` of party `party`.
    pub fn new(party: &str, part: &str) -> Self {
        PartKey {
            party: party.to_string(),
            part: part.to_string(),
        }
    }
}

/// From the owner to one part. Every variant names its attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToPart {
    /// Claim a slot for this attempt; start nothing yet.
    Reserve {
        /// The attempt.
        attempt: u64,
    },
    /// The job lease asked by `ask` is granted.
    Grant {
        /// The attempt.
        attempt: u64,
        /// The ask being answered.
        ask: u64,
    },
    /// Every part is claimed: start (while holding the lease).
    StartAll {
        /// The attempt.
        attempt: u64,
    },
    /// Stop the process or release the reservation, then confirm.
    StopAll {
        /// The attempt.
        attempt: u64,
    },
}

impl ToPart {
    /// The attempt the message belongs to.
    pub fn attempt(&self) -> u64 {
        match *self {
            ToPart::Reserve { attempt }
            | ToPart::Grant { attempt, .. }
            | ToPart::StartAll { attempt }
            | ToPart::StopAll { attempt } => attempt,
        }
    }
}

/// From one part to the owner. Every variant names its attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToOwner {
    /// The part's party claimed its slot for the attempt.
    Claimed {
        /// The attempt.
        attempt: u64,
    },
    /// Asks for (or renews) the job lease; the part started its timer
    /// before sending this.
    RenewAsk {
        /// The attempt.
        attempt: u64,
        /// Names the ask, echoed by the grant.
        ask: u64,
    },
    /// The part's process started.
    Started {
        /// The attempt.
        attempt: u64,
    },
    /// The part's process ended by itself.
    Exited {
        /// The attempt.
        attempt: u64,
        /// Its exit code.
        code: i32,
    },
    /// Nothing of the attempt runs or is reserved here any more.
    Stopped {
        /// The attempt.
        attempt: u64,
    },
}

impl ToOwner {
    /// The attempt the message belongs to.
    pub fn attempt(&self) -> u64 {
        match *self {
            ToOwner::Claimed { attempt }
            | ToOwner::RenewAsk { attempt, .. }
            | ToOwner::Started { attempt }
            | ToOwner::Exited { attempt, .. }
            | ToOwner::Stopped { attempt } => attempt,
        }
    }
}

/// Tunables of a job's attempts, the same on the owner and every part.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    /// The part's job lease, on its own clock.
    pub lease_ms: u64,
    /// Interval of the part's renewals (and of the owner's resends).
    pub renew_ms: u64,
    /// Bound on clock rate drift: every clock runs at `1 ± rho`.
    pub rho: f64,
    /// How long before its lease ends a part that could not renew kills
    /// its process (covers the host's kill latency).
    pub fence_margin_ms: u64,
    /// How long the parts of one attempt may wait for each other's claims.
    pub start_timeout_ms: u64,
    /// Attempts before the job fails.
    pub max_attempts: u32,
    /// Planted bugs (only with the `planted-bugs` feature).
    pub bugs: Bugs,
}

impl Default for JobConfig {
    /// The task lease timings of the coordinator (800 ms renewed every
    /// 260 ms, fenced 100 ms early), and the job file's defaults.
    fn default() -> Self {
        JobConfig {
            lease_ms: 800,
            renew_ms: 260,
            rho: 0.01,
            fence_margin_ms: 100,
            start_timeout_ms: 60_000,
            max_attempts: 3,
            bugs: Bugs::none(),
        }
    }
}

/// Why a job could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JobError {
    /// A tunable is out of its range; nothing was created.
    #[error("{field}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// The job has no part, or more than [`MAX_PARTS`].
    #[error("a job needs 1..={MAX_PARTS} parts, got {0}")]
    PartCount(usize),
    /// Two parts share a party and name.
    #[error("duplicate part {party}/{part}")]
    DuplicatePart {
        /// The party.
        party: String,
        /// The part.
        part: String,
    },
}

impl JobConfig {
    /// Checks every field's range and their relations.
    pub fn validate(&self) -> Result<(), JobError> {
        let bad = |field, why| Err(JobError::Invalid { field, why });
        if let Some((field, why)) =
            lease_timing_error(self.rho, self.lease_ms, self.renew_ms, self.fence_margin_ms)
        {
            return bad(field, why);
        }
        if self.start_timeout_ms == 0 {
            return bad("start_timeout_ms", "must be positive");
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return bad("max_attempts", "must be 1..=100");
        }
        Ok(())
    }

    /// The owner's timer for one grant, drift-corrected so that it outlasts
    /// the part's lease in real time.
    pub fn owner_lease_ms(&self) -> u64 {
        acceptor_lease_ms(self.lease_ms, self.rho, &self.bugs)
    }
}
