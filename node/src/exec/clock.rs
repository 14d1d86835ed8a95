//! The clock shared by the agent and its supervisors. Deadlines cross the
//! pipe as absolute CLOCK_BOOTTIME milliseconds: both processes read the
//! same system-wide clock, so a deadline stays right even when the agent
//! froze between computing it and writing it (a relative duration would
//! be stretched by the freeze). BOOTTIME also counts suspended time, as the
//! other nodes' lease timers do.

use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// Milliseconds of CLOCK_BOOTTIME, rounded down.
pub fn boot_now_ms() -> u64 {
    // CLOCK_BOOTTIME exists on every Linux since 2.6.39; a failure here
    // means a broken kernel, where no deadline can be kept.
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME is readable");
    let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

/// The BOOTTIME deadline `remaining` from now (rounded down: never later
/// than the caller meant).
pub fn boot_deadline_ms(remaining: Duration) -> u64 {
    boot_now_ms().saturating_add(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX))
}
