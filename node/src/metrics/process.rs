//! The agent process's own resources, read from `/proc/self` at scrape
//! time: what an operator watches first when a node misbehaves.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `shoal_process_*` metrics.
#[derive(Debug)]
pub struct ProcessMetrics {
    cpu: Counter<f64, AtomicU64>,
    resident: Gauge,
    open_fds: Gauge,
    threads: Gauge,
    start_time: Gauge<f64, AtomicU64>,
    /// The CPU time already counted: a counter only moves forward.
    counted_cpu_seconds: Mutex<f64>,
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        let metrics = ProcessMetrics {
            cpu: Counter::default(),
            resident: Gauge::default(),
            open_fds: Gauge::default(),
            threads: Gauge::default(),
            start_time: Gauge::default(),
            counted_cpu_seconds: Mutex::new(0.0),
        };
        metrics.start_time.set(unix_now_seconds());
        metrics
    }
}

impl ProcessMetrics {
    /// Adds every metric to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time of the agent process",
            self.cpu.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the agent process (attempts not included)",
            self.resident.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors of the agent process",
            self.open_fds.clone(),
        );
        registry.register(
            "process_threads",
            "Threads of the agent process",
            self.threads.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "When the agent process started, in seconds since the Unix epoch",
            self.start_time.clone(),
        );
    }

    /// Brings every metric up to date from `/proc/self`.
    pub fn observe(&self) {
        let Some(reading) = read() else {
            return;
        };
        let mut counted = self
            .counted_cpu_seconds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if reading.cpu_seconds > *counted {
            self.cpu.inc_by(reading.cpu_seconds - *counted);
            *counted = reading.cpu_seconds;
        }
        let as_gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.resident.set(as_gauge(reading.resident_bytes));
        self.open_fds.set(as_gauge(reading.open_fds));
        self.threads.set(as_gauge(reading.threads));
    }
}

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
fn unix_now_seconds() -> f64 {
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
