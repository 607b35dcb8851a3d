//! Latency histograms and what `/proc` says about a server process.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A log-linear histogram of microseconds: exact below 64 µs, then 32
/// buckets per power of two (at most ~3% wide). Percentiles report a
/// bucket's upper bound, so they err on the slow side. Fixed size; merging
/// two is adding counts.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    n: u64,
    max: u64,
    sum: u128,
}

const SUB: u64 = 32;
const BUCKETS: usize = 64 + 58 * SUB as usize;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            n: 0,
            max: 0,
            sum: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < 64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as u64; // >= 6
    let m = v >> (e - 5); // in [32, 64)
    (64 + (e - 6) * SUB + (m - SUB)) as usize
}

fn upper(i: usize) -> u64 {
    if i < 64 {
        return i as u64;
    }
    let i = i as u64 - 64;
    let e = i / SUB + 6;
    let m = i % SUB + SUB;
    ((m + 1) << (e - 5)) - 1
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        self.counts[index(micros).min(BUCKETS - 1)] += 1;
        self.n += 1;
        self.max = self.max.max(micros);
        self.sum += u128::from(micros);
    }

    /// Records `count` samples of one value (updates that never arrived are
    /// recorded as the time waited for them).
    pub fn record_n(&mut self, micros: u64, count: u64) {
        if count == 0 {
            return;
        }
        self.counts[index(micros).min(BUCKETS - 1)] += count;
        self.n += count;
        self.max = self.max.max(micros);
        self.sum += u128::from(micros) * u128::from(count);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), in microseconds.
    fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max);
            }
        }
        self.max
    }

    /// p50, p99, p99.9 and max in milliseconds, as JSON.
    pub fn summary_ms(&self) -> Value {
        let ms = |us: u64| us as f64 / 1000.0;
        json!({
            "count": self.n,
            "p50_ms": ms(self.quantile(0.50)),
            "p99_ms": ms(self.quantile(0.99)),
            "p999_ms": ms(self.quantile(0.999)),
            "max_ms": ms(self.max),
            "mean_ms": if self.n == 0 { 0.0 } else { ms((self.sum / u128::from(self.n)) as u64) },
        })
    }
}

/// CPU time and memory of a process, from `/proc/PID/stat` and `/status`.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    pub at: Instant,
    /// utime + stime of all threads, in seconds.
    pub cpu_s: f64,
    pub rss_kib: u64,
}

extern "C" {
    fn sysconf(name: i32) -> i64;
}
const SC_CLK_TCK: i32 = 2;

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant of the C library.
    let t = unsafe { sysconf(SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcSample {
        at: Instant::now(),
        cpu_s: (utime + stime) / clock_ticks(),
        rss_kib,
    })
}

/// The processes whose parent is `pid` (PostgreSQL's backends are children
/// of its postmaster), by scanning `/proc`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The parent is the second field after the parenthesised name.
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`...).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The process's peak resident memory so far (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

/// Starts the process's `VmHWM` over from its current RSS (Linux:
/// `clear_refs` 5); needs the right to trace it (our own child is fine).
pub fn reset_peak_rss(pid: u32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

pub fn self_sample() -> Option<ProcSample> {
    sample(std::process::id())
}

/// CPU used between two samples, as a share of one core (1.0 = 100%).
pub fn cpu_share(a: &ProcSample, b: &ProcSample) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (b.cpu_s - a.cpu_s) / wall
}

/// Microseconds some task of this machine waited for a CPU since boot
/// (`/proc/pressure/cpu`, "some"): other work competing with the benchmark.
fn cpu_pressure_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let some = text.lines().find(|l| l.starts_with("some"))?;
    some.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))
        .and_then(|v| v.parse().ok())
}

/// CPU seconds of all cores since boot that processes used or the
/// hypervisor took (`/proc/stat`: user, nice, system, steal). Interrupt time
/// is left out: on loopback it is mostly the benchmark's own packets.
fn machine_busy_s() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is within user)
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(7).unwrap_or(&0.0);
    Some(busy / clock_ticks())
}

/// Measures the server (if its pid is known), the load generator itself and
/// the machine's CPU pressure over a span of time.
pub struct CpuMeter {
    server: Option<(u32, ProcSample)>,
    me: Option<ProcSample>,
    pressure: Option<(Instant, u64)>,
    machine: Option<(Instant, f64)>,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> Self {
        Self {
            server: pid.and_then(|p| sample(p).map(|s| (p, s))),
            me: self_sample(),
            pressure: cpu_pressure_us().map(|p| (Instant::now(), p)),
            machine: machine_busy_s().map(|b| (Instant::now(), b)),
        }
    }

    /// `{"server_cpu": share, "gen_cpu": share, "other_cpu": cores,
    /// "cpu_pressure": share, "server_rss_mib": ..}`
    pub fn finish(&self) -> Value {
        let mut out = serde_json::Map::new();
        let mut ours = 0.0;
        if let Some((pid, a)) = &self.server {
            if let Some(b) = sample(*pid) {
                let share = cpu_share(a, &b);
                ours += share;
                out.insert("server_cpu".into(), json!(round3(share)));
                out.insert("server_rss_mib".into(), json!(round3(b.rss_kib as f64 / 1024.0)));
            }
        }
        if let (Some(a), Some(b)) = (&self.me, self_sample()) {
            let share = cpu_share(a, &b);
            ours += share;
            out.insert("gen_cpu".into(), json!(round3(share)));
        }
        // Everything else the machine ran meanwhile (other people's builds),
        // in cores. Unlike the pressure, not raised by the server's own
        // threads queueing for its one core.
        if let (Some((at, a)), Some(b)) = (self.machine, machine_busy_s()) {
            let wall = at.elapsed().as_secs_f64().max(1e-6);
            out.insert("other_cpu".into(), json!(round3(((b - a) / wall - ours).max(0.0))));
        }
        if let (Some((at, a)), Some(b)) = (self.pressure, cpu_pressure_us()) {
            let wall = at.elapsed().as_micros().max(1) as f64;
            out.insert("cpu_pressure".into(), json!(round3(b.saturating_sub(a) as f64 / wall)));
        }
        Value::Object(out)
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Microseconds since `epoch`.
pub fn micros_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

pub fn secs(d: Duration) -> f64 {
    round3(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(7) {
            let i = index(v);
            assert!(i >= last);
            last = i;
            let up = upper(i);
            assert!(up >= v, "{v} -> {up}");
            assert!(up as f64 <= v as f64 * 1.04 + 1.0, "{v} -> {up}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        let p50 = h.quantile(0.5);
        assert!((500..=516).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((990..=1020).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), 1000);
        let mut g = Histogram::default();
        g.record_n(5000, 10);
        h.merge(&g);
        assert_eq!(h.count(), 1010);
        assert_eq!(h.max(), 5000);
    }

    #[test]
    fn finds_its_own_children() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let found = children(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
    }

    #[test]
    fn reads_its_own_process() {
        let s = self_sample().unwrap();
        assert!(s.rss_kib > 0);
        let me = std::process::id();
        assert!(peak_rss_kib(me).unwrap() >= status_kib(me, "VmRSS").unwrap() / 2);
        assert_eq!(status_kib(me, "VmNoSuchField"), None);
    }
}
