//! The `process_*` metrics etcd exports through Go's Prometheus client (its process collector),
//! read from `/proc` as that collector reads them: `etcdctl check datascale` reads
//! `process_resident_memory_bytes`, and etcd's dashboards chart memory, CPU and descriptors.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::http::gauge;

/// One reading of this process.
#[derive(Debug, Clone, PartialEq)]
struct Reading {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    start_time_seconds: f64,
    open_fds: i64,
    max_fds: i64,
}

/// Field `n` (1-based, as proc(5) numbers them) of `/proc/self/stat`; the command name (field 2)
/// may hold spaces, so fields are counted after its closing parenthesis.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?)
}

fn read() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let num = |n: usize| stat_field(&stat, n)?.parse::<f64>().ok();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let boot_time: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0);
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    Some(Reading {
        cpu_seconds: (num(14)? + num(15)?) / ticks,
        resident_bytes: num(24)? as i64 * rustix::param::page_size() as i64,
        virtual_bytes: num(23)? as i64,
        start_time_seconds: boot_time + num(22)? / ticks,
        open_fds,
        max_fds,
    })
}

/// Registers the process metrics, as Go's collector names and describes them.
pub(crate) fn register(registry: &mut Registry) {
    let Some(r) = read() else {
        return;
    };
    // A gauge, as every other metric here: prometheus-client names a counter's family without
    // `_total`, which the 0.0.4 text format served here does not expect. `rate()` reads it alike.
    let cpu: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
    cpu.set(r.cpu_seconds);
    registry.register(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        cpu,
    );
    let start: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
    start.set(r.start_time_seconds);
    registry.register(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        start,
    );
    gauge(
        registry,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        r.resident_bytes,
    );
    gauge(
        registry,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        r.virtual_bytes,
    );
    gauge(
        registry,
        "process_open_fds",
        "Number of open file descriptors.",
        r.open_fds,
    );
    gauge(
        registry,
        "process_max_fds",
        "Maximum number of open file descriptors.",
        r.max_fds,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_after_the_command_name() {
        let stat =
            "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 4 0 900 1000 25";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 14), Some("7"));
        assert_eq!(stat_field(stat, 15), Some("3"));
        assert_eq!(stat_field(stat, 22), Some("900"));
        assert_eq!(stat_field(stat, 24), Some("25"));
    }

    #[test]
    fn this_process_reads_as_plausible() {
        let r = read().expect("a reading of /proc");
        assert!(r.resident_bytes > 1 << 20, "{r:?}");
        assert!(r.virtual_bytes >= r.resident_bytes, "{r:?}");
        assert!(r.open_fds > 0 && r.max_fds >= r.open_fds, "{r:?}");
        assert!(r.start_time_seconds > 1.6e9, "{r:?}");
        assert!(r.cpu_seconds >= 0.0, "{r:?}");
    }
}
