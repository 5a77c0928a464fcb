//! What every benchmark shares: repeated side-by-side runs, medians with their spread, and one
//! table row format, so `scripts/bench.sh` can print all of them as one table.
#![allow(dead_code, unreachable_pub)] // Each bench uses a different part; this is a bench module.

use std::time::Duration;

pub mod subscriber;

/// How often each measurement is repeated; the row shows the median and the min–max.
pub const RUNS: usize = 7;

/// A set of repeated measurements of one quantity.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    pub fn extend(&mut self, other: &Samples) {
        self.0.extend_from_slice(&other.0);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut values = self.0.clone();
        values.sort_by(f64::total_cmp);
        values
    }

    pub fn median(&self) -> f64 {
        let values = self.sorted();
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    /// The value at quantile `q` (0.0–1.0) of the samples.
    pub fn quantile(&self, q: f64) -> f64 {
        let values = self.sorted();
        if values.is_empty() {
            return f64::NAN;
        }
        let at = ((values.len() - 1) as f64 * q).round() as usize;
        values[at]
    }
}

impl From<Vec<f64>> for Samples {
    fn from(values: Vec<f64>) -> Self {
        Self(values)
    }
}

/// Events (or any unit) per second.
pub fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// How a quantity is shown in the table.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// Millions per second.
    MegaPerSec,
    /// Megabytes per second.
    MegaBytesPerSec,
    /// Microseconds.
    Micros,
    /// Nanoseconds, from a value in microseconds.
    Nanos,
    /// Kibibytes.
    KiB,
    /// Per cent of one core.
    PercentCore,
    /// A plain count.
    Count,
    /// Thousands per second.
    KiloPerSec,
}

impl Unit {
    fn show(self, value: f64) -> String {
        match self {
            Unit::MegaPerSec => format!("{:.3} M/s", value / 1e6),
            Unit::MegaBytesPerSec => format!("{:.0} MB/s", value / 1e6),
            Unit::Micros => format!("{value:.0} µs"),
            Unit::Nanos => format!("{:.0} ns", value * 1e3),
            Unit::KiB => format!("{:.1} KiB", value / 1024.0),
            Unit::PercentCore => format!("{value:.2} %"),
            Unit::Count => format!("{value:.2}"),
            Unit::KiloPerSec => format!("{:.1} k/s", value / 1e3),
        }
    }
}

/// Prints the table header (the script prints it once, before all benches).
pub fn header() {
    println!("| benchmark | case | tower-sse | baseline | baseline value | tower-sse / baseline: median (min–max) |");
    println!("|---|---|---|---|---|---|");
}

/// One table row: tower-sse's median against a baseline's, and the median of the per-run ratios
/// with their min–max (ratios are taken within a run, so both saw the same machine state).
pub fn row(
    bench: &str,
    case: &str,
    unit: Unit,
    ours: &Samples,
    baseline: &str,
    theirs: &Samples,
    ratios: &Samples,
) {
    println!(
        "| {bench} | {case} | {} | {baseline} | {} | **{:.2}×** ({:.2}–{:.2}) |",
        unit.show(ours.median()),
        unit.show(theirs.median()),
        ratios.median(),
        ratios.min(),
        ratios.max(),
    );
}

/// A row with a single value (no baseline).
pub fn single(bench: &str, case: &str, unit: Unit, value: f64, note: &str) {
    println!("| {bench} | {case} | {} | {note} | | |", unit.show(value));
}

/// Prints the header unless the script that prints one table for all benches runs this one.
pub fn header_if_alone() {
    if std::env::var_os("TOWER_SSE_BENCH_TABLE").is_none() {
        header();
    }
}

/// `64 B`, `1 KiB`, `64 KiB`.
pub fn size_name(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// A `/proc/PID/status` field in KiB.
pub fn status_kib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("field")
}

/// User plus system CPU time of a process, in clock ticks (`USER_HZ`, 100 on Linux).
pub fn cpu_ticks(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields[11].parse().expect("utime");
    let stime: f64 = fields[12].parse().expect("stime");
    utime + stime
}

/// Waits until `ready` counts `count` subscribers, at most two minutes (a bench never hangs).
#[allow(dead_code)] // not every bench has subscribers
pub async fn wait_ready(ready: &std::sync::atomic::AtomicU64, count: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while ready.load(std::sync::atomic::Ordering::Relaxed) < count {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {count} subscribers were answered",
            ready.load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Starts this bench's binary again as a server child process (with `args`), and reads the
/// address it prints first.
pub fn spawn_server(args: &[&str]) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address");
    (child, line.trim().parse().expect("address"))
}
