//! The agent process's own resources, read from `/proc/self` at scrape
//! time: what an operator watches first when a node misbehaves.

use std::time::{SystemTime, UNIX_EPOCH};

/// One reading of the process's resources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessReading {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Threads.
    pub threads: u64,
}

/// Reads `/proc/self`; `None` where it is not mounted (then the process
/// metrics stay at their last value).
pub fn read() -> Option<ProcessReading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let mut reading = parse(
        &stat,
        &statm,
        rustix::param::clock_ticks_per_second(),
        rustix::param::page_size() as u64,
    )?;
    reading.open_fds = open_fds;
    Some(reading)
}

/// Parses `/proc/self/stat` and `/proc/self/statm` (proc(5)); open_fds is
/// left at 0.
fn parse(stat: &str, statm: &str, ticks_per_second: u64, page_size: u64) -> Option<ProcessReading> {
    // The command name (field 2) is in parentheses and may hold spaces and
    // parentheses itself: the fields that follow start after the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = field(14)? + field(15)?;
    let threads = field(20)?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(ProcessReading {
        cpu_seconds: ticks as f64 / ticks_per_second.max(1) as f64,
        resident_bytes: resident_pages.saturating_mul(page_size),
        open_fds: 0,
        threads,
    })
}

/// Seconds since the Unix epoch, for `process_start_time_seconds`.
pub fn unix_now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "4242 (shoal (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 50 0 0 20 0 9 0 1234 1000000 300 18446744073709551615";
        let reading = parse(stat, "2500 300 200 100 0 400 0\n", 100, 4096).unwrap();
        assert_eq!(reading.cpu_seconds, 2.0);
        assert_eq!(reading.threads, 9);
        assert_eq!(reading.resident_bytes, 300 * 4096);
    }

    #[test]
    fn a_truncated_stat_is_no_reading() {
        assert_eq!(parse("4242 (shoal) S 1 2", "1 2", 100, 4096), None);
        assert_eq!(parse("no parenthesis", "1 2", 100, 4096), None);
    }

    #[test]
    fn this_process_reads() {
        let reading = read().expect("/proc/self is mounted where the tests run");
        assert!(reading.resident_bytes > 0 && reading.threads >= 1 && reading.open_fds >= 3);
    }
}
