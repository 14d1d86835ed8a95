//! Tunables and the formulas derived from them (Lifeguard, memberlist).

use std::time::Duration;
use thiserror::Error;

/// Tunables. Use a preset and adjust.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Time between two probe rounds of this node.
    pub probe_interval: Duration,
    /// How long a direct probe waits for its ack before indirect probes go out.
    pub probe_timeout: Duration,
    /// How many members are asked to probe a target indirectly (`k`).
    pub indirect_probes: usize,
    /// Lifeguard `alpha`: the minimum suspicion timeout is
    /// `alpha * log10(N) * probe_interval`.
    pub suspicion_alpha: f64,
    /// Lifeguard `beta`: the maximum suspicion timeout is `beta` times the minimum.
    pub suspicion_beta: f64,
    /// Lower bound of the minimum suspicion timeout, whatever `N`: the
    /// longest pause a live node must survive plus the spread of its
    /// refutation. The log10(N) formula alone falls below a 1.5 s pause in
    /// small clusters.
    pub suspicion_timeout_floor: Duration,
    /// Independent suspicions needed to fall from the maximum to the minimum
    /// suspicion timeout.
    pub suspicion_confirmations: u32,
    /// Dissemination `lambda`: an update is sent `lambda * ceil(log2(N+1))` times.
    pub retransmit_mult: u32,
    /// Time between two push-pull full-state exchanges of this node, for a
    /// cluster of up to 32 members; scaled up with the cluster size (see
    /// [`Config::push_pull_interval_for`]) so its bandwidth stays bounded.
    pub push_pull_interval: Duration,
    /// Upper bound of the Lifeguard local health multiplier.
    pub max_local_health: u32,
    /// How long a down or left member is remembered before it is forgotten.
    pub down_retention: Duration,
    /// Interval between re-sends of a join to the seeds while unjoined.
    pub join_retry_interval: Duration,
    /// Time between two gossip-only sends of pending updates. Piggybacking
    /// on probes alone spreads an update too slowly at 1000 members.
    pub gossip_interval: Duration,
    /// How many random members each gossip-only send goes to.
    pub gossip_fanout: usize,
    /// Time between two pings to a random down member, which heal a
    /// partition once it is over (both sides hold the other down and would
    /// otherwise never talk again).
    pub reconnect_interval: Duration,
}

/// Why a [`Config`] cannot be used.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    /// A period that must be positive is zero.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// The direct probe must time out before the round ends, leaving time
    /// for indirect probes.
    #[error(
        "probe_timeout ({timeout_ms} ms) must be shorter than probe_interval ({interval_ms} ms)"
    )]
    ProbeTimeoutTooLong {
        /// The configured probe timeout.
        timeout_ms: u64,
        /// The configured probe interval.
        interval_ms: u64,
    },
    /// A Lifeguard factor is out of range.
    #[error("{name} must be a finite number >= {min}, got {value}")]
    BadFactor {
        /// Which factor.
        name: &'static str,
        /// Its smallest sensible value.
        min: f64,
        /// The configured value.
        value: f64,
    },
}

/// Cluster size below which push-pull is not scaled (memberlist's
/// `pushPullScaleThreshold`).
const PUSH_PULL_SCALE_THRESHOLD: usize = 32;

impl Config {
    /// A LAN: sub-millisecond to few-millisecond latencies.
    ///
    /// Tuned for 1000 members, 1% loss and pauses up to 1.5 s: a 200 ms probe
    /// interval makes the first probe of a crashed member come soon (probes
    /// of all members reach it as a Poisson stream of one per interval, so
    /// the 99th percentile wait is ~4.6 intervals); `alpha = 3.5` gives a
    /// 2.1 s minimum suspicion at N = 1000, longer than a 1.5 s pause plus
    /// the spread of the refutation (a paused node refutes as soon as it
    /// runs again, see `Stats::stalls`); gossip every 100 ms to 3 members
    /// spreads an update to all in about 0.3 s. `lambda = 2` sends each
    /// update 20 times per node at N = 1000 (memberlist's LAN default sends
    /// 12): a node misses an update with odds of about e^-20, push-pull
    /// repairs the rest, and every wave of updates (a thousand joins, a
    /// partition's suspicions and refutations) costs a third less than
    /// with 3.
    pub fn lan() -> Self {
        Config {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(80),
            indirect_probes: 3,
            suspicion_alpha: 3.5,
            suspicion_beta: 3.0,
            suspicion_timeout_floor: Duration::from_millis(2000),
            suspicion_confirmations: 3,
            retransmit_mult: 2,
            push_pull_interval: Duration::from_secs(60),
            max_local_health: 8,
            down_retention: Duration::from_secs(300),
            join_retry_interval: Duration::from_secs(1),
            gossip_interval: Duration::from_millis(100),
            gossip_fanout: 3,
            reconnect_interval: Duration::from_secs(2),
        }
    }

    /// A WAN: round trips of 50-150 ms between sites, some loss.
    ///
    /// A direct probe waits 500 ms (over three times the longest round
    /// trip) before asking 3 others. Their ping-reqs arrive by ~575 ms, a
    /// relayed ack by ~800 ms and a relay's nack (at 0.8 x 500 ms after the
    /// ping-req) by ~1050 ms, so the round lasts 1.5 s: a nack is counted
    /// before the round ends, and the local health multiplier does not
    /// grow on slow but healthy links. `alpha = 2.5` gives a 7.5 s minimum
    /// suspicion at 100 members (22.5 s at most before confirmations),
    /// far above a 1.5 s pause plus a refutation's spread. Gossip every
    /// 200 ms to 4 members covers 100 members in about four rounds of
    /// ~275 ms each (interval plus one-way latency); `lambda = 3` spends
    /// a little more on retransmits because WAN loss is burstier.
    pub fn wan() -> Self {
        Config {
            probe_interval: Duration::from_millis(1500),
            probe_timeout: Duration::from_millis(500),
            suspicion_alpha: 2.5,
            retransmit_mult: 3,
            push_pull_interval: Duration::from_secs(60),
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 4,
            join_retry_interval: Duration::from_secs(2),
            reconnect_interval: Duration::from_secs(5),
            ..Config::lan()
        }
    }

    /// One machine (loopback): fast probing for tests and demos.
    pub fn local() -> Self {
        Config {
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(40),
            push_pull_interval: Duration::from_secs(10),
            gossip_interval: Duration::from_millis(50),
            join_retry_interval: Duration::from_millis(500),
            reconnect_interval: Duration::from_secs(1),
            // Loopback tests want fast detection; nothing pauses there.
            suspicion_timeout_floor: Duration::ZERO,
            ..Config::lan()
        }
    }

    /// Checks that the machine can run on this configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let periods = [
            ("probe_interval", self.probe_interval),
            ("probe_timeout", self.probe_timeout),
            ("push_pull_interval", self.push_pull_interval),
            ("join_retry_interval", self.join_retry_interval),
            ("gossip_interval", self.gossip_interval),
            ("reconnect_interval", self.reconnect_interval),
        ];
        for (name, period) in periods {
            if period.as_millis() == 0 {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if self.probe_timeout >= self.probe_interval {
            return Err(ConfigError::ProbeTimeoutTooLong {
                timeout_ms: crate::time::duration_ms(self.probe_timeout),
                interval_ms: crate::time::duration_ms(self.probe_interval),
            });
        }
        for (name, value, min) in [
            ("suspicion_alpha", self.suspicion_alpha, 0.0),
            ("suspicion_beta", self.suspicion_beta, 1.0),
        ] {
            if !value.is_finite() || value < min {
                return Err(ConfigError::BadFactor { name, min, value });
            }
        }
        Ok(())
    }

    /// A usable copy: what `validate` rejects is replaced by the LAN preset's
    /// value, so a bad config degrades instead of spinning or panicking.
    pub(crate) fn sanitized(&self) -> Config {
        let lan = Config::lan();
        let mut c = self.clone();
        let fix = |d: &mut Duration, default: Duration| {
            if d.as_millis() == 0 {
                *d = default;
            }
        };
        fix(&mut c.probe_interval, lan.probe_interval);
        fix(&mut c.probe_timeout, lan.probe_timeout);
        fix(&mut c.push_pull_interval, lan.push_pull_interval);
        fix(&mut c.join_retry_interval, lan.join_retry_interval);
        fix(&mut c.gossip_interval, lan.gossip_interval);
        fix(&mut c.reconnect_interval, lan.reconnect_interval);
        if c.probe_timeout >= c.probe_interval {
            c.probe_timeout = c.probe_interval / 2;
        }
        if !c.suspicion_alpha.is_finite() || c.suspicion_alpha < 0.0 {
            c.suspicion_alpha = lan.suspicion_alpha;
        }
        if !c.suspicion_beta.is_finite() || c.suspicion_beta < 1.0 {
            c.suspicion_beta = lan.suspicion_beta;
        }
        c.indirect_probes = c.indirect_probes.min(MAX_INDIRECT_PROBES);
        c.gossip_fanout = c.gossip_fanout.min(MAX_GOSSIP_FANOUT);
        c.max_local_health = c.max_local_health.min(MAX_LOCAL_HEALTH);
        c.retransmit_mult = c.retransmit_mult.clamp(1, MAX_RETRANSMIT_MULT);
        c
    }

    /// Lifeguard's minimum suspicion timeout for a cluster of `n` members:
    /// `alpha * max(1, log10(n)) * probe_interval`, at least
    /// `suspicion_timeout_floor`.
    pub fn suspicion_timeout_min(&self, n: usize) -> Duration {
        let scale = (n.max(1) as f64).log10().max(1.0);
        round_ms(self.probe_interval.as_secs_f64() * 1000.0 * self.suspicion_alpha * scale)
            .max(self.suspicion_timeout_floor)
    }

    /// Lifeguard's maximum suspicion timeout: `beta` times the minimum.
    pub fn suspicion_timeout_max(&self, n: usize) -> Duration {
        round_ms(
            self.suspicion_timeout_min(n).as_secs_f64() * 1000.0 * self.suspicion_beta.max(1.0),
        )
    }

    /// How many times each update is sent: `lambda * ceil(log2(n + 1))`.
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        let rounds = ((n as f64) + 1.0).log2().ceil().max(1.0) as u32;
        self.retransmit_mult.max(1).saturating_mul(rounds)
    }

    /// memberlist's `pushPullScale`: the interval grows by one step per
    /// doubling of the cluster beyond 32 members, so that the bytes a node
    /// spends on full-state exchanges per second stay roughly constant.
    pub fn push_pull_interval_for(&self, n: usize) -> Duration {
        if n <= PUSH_PULL_SCALE_THRESHOLD {
            return self.push_pull_interval;
        }
        let steps = ((n as f64).log2() - (PUSH_PULL_SCALE_THRESHOLD as f64).log2()).ceil() as u32;
        self.push_pull_interval.saturating_mul(steps + 1)
    }
}

/// Whole milliseconds, at least one, so timers stay on the ms grid of
/// [`crate::Instant`] and never fire in a loop.
fn round_ms(ms: f64) -> Duration {
    let ms = if ms.is_finite() { ms.round() } else { 1.0 };
    Duration::from_millis((ms as u64).max(1))
}

/// Upper bound on `indirect_probes` (each costs four messages).
pub const MAX_INDIRECT_PROBES: usize = 16;
/// Upper bound on `gossip_fanout`.
pub const MAX_GOSSIP_FANOUT: usize = 16;
/// Upper bound on `max_local_health`.
pub const MAX_LOCAL_HEALTH: u32 = 64;
/// Upper bound on `retransmit_mult`.
pub const MAX_RETRANSMIT_MULT: u32 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for c in [Config::lan(), Config::wan(), Config::local()] {
            assert_eq!(c.validate(), Ok(()));
            assert_eq!(c.sanitized(), c);
        }
    }

    #[test]
    fn bad_config_is_reported_and_sanitized() {
        let bad = Config {
            probe_interval: Duration::ZERO,
            suspicion_beta: f64::NAN,
            ..Config::lan()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::ZeroDuration("probe_interval"))
        );
        assert_eq!(bad.sanitized().validate(), Ok(()));
    }

    #[test]
    fn wan_rounds_leave_room_for_indirect_probes_and_nacks() {
        let c = Config::wan();
        let one_way = Duration::from_millis(75);
        // A relay's nack: ping-req out at the timeout, the relay waits 0.8
        // of a timeout, the nack comes back.
        let nack_back = c.probe_timeout + one_way + c.probe_timeout.mul_f64(0.8) + one_way;
        assert!(nack_back < c.probe_interval, "{nack_back:?}");
        assert!(
            c.probe_timeout >= Duration::from_millis(450),
            "3x a 150 ms RTT"
        );
        assert_eq!(c.suspicion_timeout_min(100), Duration::from_millis(7500));
        assert!(c.suspicion_timeout_min(100) > Duration::from_millis(1500) * 3);
    }

    #[test]
    fn lan_suspicion_bounds_at_a_thousand_members() {
        let c = Config::lan();
        assert_eq!(c.suspicion_timeout_min(1000), Duration::from_millis(2100));
        assert_eq!(c.suspicion_timeout_max(1000), Duration::from_millis(6300));
        assert_eq!(c.suspicion_timeout_min(3), Duration::from_millis(2000));
        assert_eq!(c.suspicion_timeout_min(50), Duration::from_millis(2000));
        assert_eq!(
            Config::local().suspicion_timeout_min(3),
            Duration::from_millis(350)
        );
        assert_eq!(c.retransmit_limit(1000), 20);
        assert_eq!(c.push_pull_interval_for(10), Duration::from_secs(60));
        assert_eq!(c.push_pull_interval_for(1000), Duration::from_secs(360));
    }
}
