//! CPU time and resident memory of a process, from `/proc`.
//!
//! CPU is read two ways: the sum of every thread's on-CPU nanoseconds
//! (`/proc/PID/task/*/schedstat`, nanosecond resolution, but a thread that exits during a
//! window takes its time with it) and `utime + stime` of `/proc/PID/stat` (all threads, dead
//! ones included, in clock ticks of [`CLOCK_TICK`]).

use crate::LoadgenError;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The resolution of `/proc/PID/stat` CPU times: `USER_HZ`, 100 on every Linux architecture
/// Corral runs on.
pub const CLOCK_TICK: Duration = Duration::from_millis(10);

/// One reading of a process.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    pub at: Instant,
    /// On-CPU time of the live threads (schedstat), nanoseconds.
    pub sched_ns: u64,
    /// utime + stime of the process, in [`CLOCK_TICK`]s.
    pub ticks: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

impl ProcSample {
    /// Reads `pid` now.
    pub fn read(pid: u32) -> Result<ProcSample, LoadgenError> {
        let base = PathBuf::from(format!("/proc/{pid}"));
        let at = Instant::now();
        Ok(ProcSample {
            at,
            sched_ns: sched_ns(&base)?,
            ticks: ticks(&base.join("stat"))?,
            rss_kib: rss_kib(&base.join("status"))?,
        })
    }

    /// Seconds of CPU per second of wall time between `self` and a later sample, by schedstat
    /// and by ticks.
    pub fn cpu_share_until(&self, later: &ProcSample) -> (f64, f64) {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let sched = later.sched_ns.saturating_sub(self.sched_ns) as f64 / 1e9;
        let ticks = later.ticks.saturating_sub(self.ticks) as f64 * CLOCK_TICK.as_secs_f64();
        (sched / wall, ticks / wall)
    }
}

fn read(path: &Path) -> Result<String, LoadgenError> {
    std::fs::read_to_string(path).map_err(|source| LoadgenError::Proc {
        path: path.to_owned(),
        source,
    })
}

fn bad(path: &Path, what: &str) -> LoadgenError {
    LoadgenError::ProcFormat {
        path: path.to_owned(),
        what: what.to_owned(),
    }
}

fn sched_ns(base: &Path) -> Result<u64, LoadgenError> {
    let dir = base.join("task");
    let entries = std::fs::read_dir(&dir).map_err(|source| LoadgenError::Proc {
        path: dir.clone(),
        source,
    })?;
    let mut total = 0u64;
    for entry in entries.flatten() {
        let path = entry.path().join("schedstat");
        // A thread may exit between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let first = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| bad(&path, "no run time in the first field"))?;
        total += first;
    }
    Ok(total)
}

fn ticks(path: &Path) -> Result<u64, LoadgenError> {
    let text = read(path)?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let after = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| bad(path, "no ')' after the command name"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| bad(path, "no utime/stime"))
    };
    Ok(get(11)? + get(12)?)
}

fn rss_kib(path: &Path) -> Result<u64, LoadgenError> {
    let text = read(path)?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(path, "no VmRSS line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_read_and_burning_cpu_shows() {
        let pid = std::process::id();
        let a = ProcSample::read(pid).expect("read ourselves");
        assert!(a.rss_kib > 0);
        // Burn CPU until both counters moved (bounded by a deadline, not a fixed sleep).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        let b = loop {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            let b = ProcSample::read(pid).expect("read again");
            if b.ticks > a.ticks && b.sched_ns > a.sched_ns {
                break b;
            }
            assert!(Instant::now() < deadline, "CPU counters never moved");
        };
        std::hint::black_box(x);
        let (sched, ticks) = a.cpu_share_until(&b);
        assert!(sched > 0.0 && ticks > 0.0, "{sched} {ticks}");
    }
}
