//! What the benchmark reads from /proc: whole-machine CPU time by state, a process's CPU time,
//! the load average, and the CPU time of processes that are not the benchmark's.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};

/// Kernel ticks per second in /proc (USER_HZ): 100 on every Linux architecture we run on.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// `/proc/stat`'s `cpu` line: ticks spent in each state, all CPUs together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    pub fn read() -> Result<CpuTimes> {
        let text = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        CpuTimes::parse(&text)
    }

    fn parse(text: &str) -> Result<CpuTimes> {
        let line = text
            .lines()
            .find(|line| line.starts_with("cpu "))
            .ok_or_else(|| anyhow!("/proc/stat has no `cpu` line"))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("/proc/stat cpu line {line:?}"))?;
        if fields.len() < 8 {
            bail!("/proc/stat cpu line has {} fields, expected at least 8", fields.len());
        }
        Ok(CpuTimes {
            user: fields[0],
            nice: fields[1],
            system: fields[2],
            idle: fields[3],
            iowait: fields[4],
            irq: fields[5],
            softirq: fields[6],
            steal: fields[7],
        })
    }

    /// Ticks from `earlier` to `self`, state by state.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            nice: self.nice.saturating_sub(earlier.nice),
            system: self.system.saturating_sub(earlier.system),
            idle: self.idle.saturating_sub(earlier.idle),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            irq: self.irq.saturating_sub(earlier.irq),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }

    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq
    }

    pub fn total(&self) -> u64 {
        self.busy() + self.idle + self.iowait + self.steal
    }

    /// The idle share of the time (idle and iowait); 1.0 when nothing elapsed.
    pub fn idle_fraction(&self) -> f64 {
        match self.total() {
            0 => 1.0,
            total => (self.idle + self.iowait) as f64 / total as f64,
        }
    }
}

/// One process's user + system ticks (all its threads), or `None` if it is gone.
pub fn process_ticks(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_stat(&text).map(|stat| stat.utime + stat.stime)
}

struct ProcessStat {
    flags: u64,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
    start_time: u64,
}

/// `/proc/<pid>/stat`; the command name may hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_process_stat(text: &str) -> Option<ProcessStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ... flags(9) ... utime(14) stime(15) cutime(16)
    // cstime(17) ... starttime(22), numbered as in proc(5).
    let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
    Some(ProcessStat {
        flags: field(9)?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
        start_time: field(22)?,
    })
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> Result<[f64; 3]> {
    let text = fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    let values: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("/proc/loadavg {text:?}"))?;
    values.try_into().map_err(|_| anyhow!("/proc/loadavg {text:?} has fewer than 3 averages"))
}

/// The network namespace a named namespace (`ip netns`) is, as the `net:[inode]` link of its
/// processes shows it.
pub fn netns_inode(name: &str) -> Result<u64> {
    let path = Path::new("/var/run/netns").join(name);
    Ok(fs::metadata(&path).with_context(|| format!("cannot stat {}", path.display()))?.ino())
}

const PF_KTHREAD: u64 = 0x0020_0000;

/// The CPU ticks of the benchmark's own processes: this process with the children it reaped
/// (iperf3 clients, pings, generators), and every process inside one of `own_namespaces`
/// (daemons, servers). Whatever else the machine did in user and system time was someone
/// else's: see [`OwnProcesses::foreign_ticks`].
#[derive(Debug, Default)]
pub struct OwnProcesses {
    machine: CpuTimes,
    /// This process: user + system of itself and of its reaped children.
    own: u64,
    /// pid → (start time, ticks) of the processes in our namespaces, so a reused pid is not
    /// mistaken for the same process.
    inside: HashMap<u32, (u64, u64)>,
}

impl OwnProcesses {
    pub fn take(own_namespaces: &HashSet<u64>) -> Result<OwnProcesses> {
        let machine = CpuTimes::read()?;
        let own_pid = std::process::id();
        let mut own = 0;
        let mut inside = HashMap::new();
        let entries = fs::read_dir("/proc").context("listing /proc")?;
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(stat) = fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|text| parse_process_stat(&text))
            else {
                continue;
            };
            if pid == own_pid {
                own = stat.utime + stat.stime + stat.cutime + stat.cstime;
            } else if stat.flags & PF_KTHREAD == 0
                && netns_of(pid).is_some_and(|inode| own_namespaces.contains(&inode))
            {
                inside.insert(pid, (stat.start_time, stat.utime + stat.stime));
            }
        }
        Ok(OwnProcesses { machine, own, inside })
    }

    /// User and system ticks of the machine from `earlier` to `self` that none of our
    /// processes used (softirq and irq are left out: they are mostly our traffic).
    pub fn foreign_ticks(&self, earlier: &OwnProcesses) -> u64 {
        let machine = self.machine.since(&earlier.machine);
        let inside: u64 = self
            .inside
            .iter()
            .map(|(pid, (start, ticks))| match earlier.inside.get(pid) {
                Some((earlier_start, earlier_ticks)) if earlier_start == start => {
                    ticks.saturating_sub(*earlier_ticks)
                }
                _ => *ticks,
            })
            .sum();
        let ours = self.own.saturating_sub(earlier.own) + inside;
        (machine.user + machine.nice + machine.system).saturating_sub(ours)
    }
}

fn netns_of(pid: u32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let text = link.to_str()?;
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cpu_line() {
        let text = "cpu  100 2 30 400 5 6 7 8 0 0\ncpu0 50 1 15 200 2 3 3 4 0 0\nintr 1\n";
        let times = CpuTimes::parse(text).unwrap();
        assert_eq!(times.user, 100);
        assert_eq!(times.softirq, 7);
        assert_eq!(times.steal, 8);
        assert_eq!(times.busy(), 100 + 2 + 30 + 6 + 7);
        assert_eq!(times.total(), times.busy() + 400 + 5 + 8);
        assert!(CpuTimes::parse("cpu0 1 2 3\n").is_err());
        assert!(CpuTimes::parse("cpu  1 2 x 4 5 6 7 8\n").is_err());
    }

    #[test]
    fn deltas_and_idle_share() {
        let earlier = CpuTimes { idle: 100, user: 10, ..CpuTimes::default() };
        let later = CpuTimes { idle: 175, user: 35, ..CpuTimes::default() };
        let delta = later.since(&earlier);
        assert_eq!((delta.idle, delta.user), (75, 25));
        assert!((delta.idle_fraction() - 0.75).abs() < 1e-9);
        assert_eq!(CpuTimes::default().idle_fraction(), 1.0);
    }

    #[test]
    fn process_stat_survives_odd_names() {
        let text = "42 (a (weird) name) S 7 42 42 0 -1 4194560 10 0 0 0 \
                    120 30 5 6 20 0 4 0 12345 1000 100 0 0";
        let stat = parse_process_stat(text).unwrap();
        assert_eq!(stat.flags, 4_194_560);
        assert_eq!((stat.utime, stat.stime, stat.cutime, stat.cstime), (120, 30, 5, 6));
        assert_eq!(stat.start_time, 12345);
        assert!(parse_process_stat("42 (x) S 7").is_none());
    }

    #[test]
    fn this_process_is_readable() {
        assert!(process_ticks(std::process::id()).is_some());
        assert!(loadavg().is_ok());
        assert!(CpuTimes::read().is_ok());
    }
}
