//! How the whole machine's CPU time was spent during a run, from the kernel's counters
//! (`/proc/stat`, Linux only): busy, idle, waiting on the disk, and stolen by the hypervisor.
//!
//! On a shared virtual machine, a run's figure can fall because another guest took the host's
//! CPU (steal), not because the server got slower. Every run records this so that a dip can be
//! told apart from a regression.

use serde::Serialize;

/// Percentages of the machine's CPU time (all cores) over a run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CpuShare {
    /// Running anything: user, nice, system, interrupts.
    pub busy_pct: f64,
    pub idle_pct: f64,
    /// Idle with I/O outstanding.
    pub iowait_pct: f64,
    /// Wanted to run, but the hypervisor ran another guest.
    pub steal_pct: f64,
}

/// The counters at the start of a run.
pub struct CpuClock {
    start: Option<Ticks>,
}

#[derive(Clone, Copy)]
struct Ticks {
    busy: u64,
    idle: u64,
    iowait: u64,
    steal: u64,
}

impl CpuClock {
    pub fn start() -> CpuClock {
        CpuClock {
            start: read_ticks(),
        }
    }

    /// The share of each kind since the start; `None` where the counters cannot be read, or
    /// have not moved.
    pub fn share(&self) -> Option<CpuShare> {
        let (start, end) = (self.start?, read_ticks()?);
        let busy = end.busy.checked_sub(start.busy)?;
        let idle = end.idle.checked_sub(start.idle)?;
        let iowait = end.iowait.checked_sub(start.iowait)?;
        let steal = end.steal.checked_sub(start.steal)?;
        let total = (busy + idle + iowait + steal) as f64;
        if total == 0.0 {
            return None;
        }
        let pct = |ticks: u64| (ticks as f64 * 1000.0 / total).round() / 10.0;
        Some(CpuShare {
            busy_pct: pct(busy),
            idle_pct: pct(idle),
            iowait_pct: pct(iowait),
            steal_pct: pct(steal),
        })
    }
}

fn read_ticks() -> Option<Ticks> {
    parse_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The first line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal …`.
fn parse_ticks(stat: &str) -> Option<Ticks> {
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let &[user, nice, system, idle, iowait, irq, softirq, steal] = values.as_slice() else {
        return None;
    };
    Some(Ticks {
        busy: user + nice + system + irq + softirq,
        idle,
        iowait,
        steal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_line_is_split_into_busy_idle_iowait_and_steal() {
        let ticks = parse_ticks("cpu  10 1 5 100 7 2 3 40 0 0\ncpu0 5 0 2 50 3 1 1 20 0 0\n")
            .expect("parsed");
        assert_eq!(
            (ticks.busy, ticks.idle, ticks.iowait, ticks.steal),
            (21, 100, 7, 40)
        );
    }

    #[test]
    fn a_line_that_is_not_the_machine_total_or_is_short_is_not_read() {
        assert!(parse_ticks("cpu0 1 2 3 4 5 6 7 8\n").is_none());
        assert!(parse_ticks("cpu 1 2 3\n").is_none());
        assert!(parse_ticks("").is_none());
    }
}
