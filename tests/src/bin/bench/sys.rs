//! What the bench reads from the machine: a process's peak memory (`VmHWM`) and CPU time from
//! `/proc`, where the machine's CPU time went during a phase (the gateway, this process, the
//! broker, everything else), the load average, and how many small appends with `fdatasync` the
//! ledger's disk takes per second.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `VmHWM` (peak resident set) of `pid`, in kB.
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmHWM:")
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Name, user and system CPU time (clock ticks) from a `/proc/.../stat` file.
fn read_stat(path: &str) -> Option<(String, u64, u64)> {
    let stat = fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime), counted from 1 with the pid as field 1.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime, stime))
}

/// User plus system CPU time of `pid` so far, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    read_stat(&format!("/proc/{pid}/stat")).map(|(_, u, s)| u + s)
}

/// Per-thread counters of one process.
#[derive(Default)]
struct ProcessTicks {
    user: u64,
    system: u64,
    /// By thread id: the thread's name and CPU ticks.
    threads: HashMap<String, (String, u64)>,
    /// Voluntary and involuntary context switches, all threads.
    switches: u64,
}

fn process_ticks(pid: u32) -> Option<ProcessTicks> {
    let (_, user, system) = read_stat(&format!("/proc/{pid}/stat"))?;
    let mut p = ProcessTicks {
        user,
        system,
        ..ProcessTicks::default()
    };
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        if let Some((name, u, s)) = read_stat(&format!("/proc/{pid}/task/{tid}/stat")) {
            p.threads.insert(tid.clone(), (name, u + s));
        }
        let status =
            fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        p.switches += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(p)
}

/// Busy (not idle, not iowait) CPU time of the whole machine, in clock ticks.
fn machine_busy_ticks() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
    let busy = v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4)?;
    Some(busy)
}

/// Clock ticks per second (`getconf CLK_TCK`, else the usual 100).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// PIDs of RabbitMQ's Erlang VMs (`beam.smp`).
fn broker_pids() -> Vec<String> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "beam.smp")
        })
        .collect()
}

/// CPU counters at one moment.
pub struct CpuSnapshot {
    at: Instant,
    gateway: Option<ProcessTicks>,
    bench: Option<u64>,
    broker: HashMap<String, u64>,
    machine: Option<u64>,
}

/// CPU used between two snapshots, in cores (1.0 = one CPU busy all the time).
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub gateway: Option<f64>,
    pub gateway_seconds: Option<f64>,
    /// The gateway's share of its CPU time spent in the kernel.
    pub gateway_kernel_share: Option<f64>,
    /// The gateway's CPU by thread name (tokio workers, SQLite workers, ...), in cores.
    pub gateway_threads: BTreeMap<String, f64>,
    pub gateway_context_switches: Option<u64>,
    pub bench: f64,
    pub broker: f64,
    /// The broker's CPU time, in seconds.
    pub broker_seconds: f64,
    /// Busy time not accounted to the three above: other processes, interrupts.
    pub other: f64,
}

impl CpuSnapshot {
    pub fn take(gateway_pid: Option<u32>) -> Self {
        CpuSnapshot {
            at: Instant::now(),
            gateway: gateway_pid.and_then(process_ticks),
            bench: cpu_ticks("self"),
            broker: broker_pids()
                .into_iter()
                .filter_map(|p| cpu_ticks(&p).map(|t| (p, t)))
                .collect(),
            machine: machine_busy_ticks(),
        }
    }

    /// What was used from `self` until `later`.
    pub fn until(&self, later: &CpuSnapshot, ticks_per_s: f64) -> CpuUse {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-6);
        let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?) as f64);
        let (gw0, gw1) = (self.gateway.as_ref(), later.gateway.as_ref());
        let gw_user = delta(gw0.map(|g| g.user), gw1.map(|g| g.user));
        let gw_system = delta(gw0.map(|g| g.system), gw1.map(|g| g.system));
        let gateway = gw_user.zip(gw_system).map(|(u, s)| u + s);
        let mut gateway_threads = BTreeMap::new();
        if let (Some(a), Some(b)) = (gw0, gw1) {
            for (tid, (name, ticks)) in &b.threads {
                let before = a.threads.get(tid).map_or(0, |(_, t)| *t);
                *gateway_threads.entry(name.clone()).or_insert(0.0) +=
                    ticks.saturating_sub(before) as f64;
            }
        }
        let bench = delta(self.bench, later.bench).unwrap_or(0.0);
        // Only VMs alive at both ends: a rabbitmqctl started in between is "other".
        let broker: f64 = later
            .broker
            .iter()
            .filter_map(|(p, t)| Some(t.saturating_sub(*self.broker.get(p)?) as f64))
            .sum();
        let machine = delta(self.machine, later.machine).unwrap_or(0.0);
        let other = (machine - gateway.unwrap_or(0.0) - bench - broker).max(0.0);
        let cores = |ticks: f64| ticks / ticks_per_s / secs;
        CpuUse {
            gateway: gateway.map(cores),
            gateway_seconds: gateway.map(|t| t / ticks_per_s),
            gateway_kernel_share: gw_system
                .zip(gateway)
                .filter(|(_, all)| *all > 0.0)
                .map(|(s, all)| s / all),
            gateway_threads: gateway_threads
                .into_iter()
                .map(|(name, ticks)| (name, cores(ticks)))
                .collect(),
            gateway_context_switches: gw0
                .zip(gw1)
                .map(|(a, b)| b.switches.saturating_sub(a.switches)),
            bench: cores(bench),
            broker: cores(broker),
            broker_seconds: broker / ticks_per_s,
            other: cores(other),
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Appends of 4 KiB, each followed by `fdatasync`, per second, in a scratch file in `dir` for
/// `limit`: the cost of a durable commit on this disk (SQLite in WAL mode with synchronous=FULL
/// syncs the WAL file at every commit).
pub fn fsync_rate(dir: &Path, limit: Duration) -> Result<f64, String> {
    let path = dir.join("fsync-probe");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let block = [0x5au8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < limit {
        file.write_all(&block)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(file);
    let _ = fs::remove_file(&path);
    Ok(rate)
}
