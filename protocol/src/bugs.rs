//! Planted bugs: deliberately wrong code paths that prove the checkers of
//! the chaos tests and the simulator can fail.
//!
//! The wrong paths exist only in builds with the `planted-bugs` feature;
//! without it [`Bugs::has`] is a constant `false` and the optimiser removes
//! them, whatever set the host passes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::str::FromStr;

/// One planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Bug {
    /// An acceptor lets a higher ballot replace another owner's live lease
    /// (the original PaxosLease rule).
    LeaseOverwrite,
    /// A restarted acceptor grants leases at once instead of waiting one
    /// lease length.
    NoQuarantine,
    /// A holder keeps its attempt running after its lease ran out.
    NoSelfFence,
    /// Finishing ignores the attempt number (no fencing token).
    StaleCommit,
    /// Acceptor lease timers ignore the clock drift bound.
    NoDriftMargin,
    /// A job owner begins the next attempt without waiting for the job
    /// leases of parts not confirmed stopped.
    JobNoFence,
    /// A node whose own health is critical still pulls and claims work.
    CriticalTakesWork,
    /// A node takes a task whose resource request its free amounts do not
    /// cover (it counts only slots).
    OverCommit,
}

impl Bug {
    /// Every planted bug.
    pub const ALL: [Bug; 8] = [
        Bug::LeaseOverwrite,
        Bug::NoQuarantine,
        Bug::NoSelfFence,
        Bug::StaleCommit,
        Bug::NoDriftMargin,
        Bug::JobNoFence,
        Bug::CriticalTakesWork,
        Bug::OverCommit,
    ];

    /// The name used by `--bug NAME`.
    pub fn name(self) -> &'static str {
        match self {
            Bug::LeaseOverwrite => "lease-overwrite",
            Bug::NoQuarantine => "no-quarantine",
            Bug::NoSelfFence => "no-self-fence",
            Bug::StaleCommit => "stale-commit",
            Bug::NoDriftMargin => "no-drift-margin",
            Bug::JobNoFence => "job-no-fence",
            Bug::CriticalTakesWork => "critical-takes-work",
            Bug::OverCommit => "over-commit",
        }
    }
}

impl FromStr for Bug {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Bug::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<_> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("unknown bug {s:?}; known: {}", names.join(", "))
        })
    }
}

/// The set of planted bugs switched on for one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bugs(BTreeSet<Bug>);

impl Bugs {
    /// No bug (the only meaningful value without the `planted-bugs` feature).
    pub fn none() -> Self {
        Bugs::default()
    }

    /// Exactly `bug`.
    pub fn one(bug: Bug) -> Self {
        Bugs([bug].into_iter().collect())
    }

    /// Whether `bug` is on. Always `false` without the `planted-bugs` feature.
    #[inline]
    pub fn has(&self, bug: Bug) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            self.0.contains(&bug)
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = bug;
            false
        }
    }

    /// Whether planted bugs can be switched on in this build.
    pub const fn compiled_in() -> bool {
        cfg!(feature = "planted-bugs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for b in Bug::ALL {
            assert_eq!(b.name().parse::<Bug>(), Ok(b));
        }
        assert!("lease-overwite".parse::<Bug>().is_err());
        assert_eq!(
            Bugs::one(Bug::StaleCommit).has(Bug::StaleCommit),
            Bugs::compiled_in()
        );
        assert!(!Bugs::none().has(Bug::StaleCommit));
    }
}
