//! Per-process figures from /proc: CPU seconds (user + system) grouped by role, resident
//! memory, children.

use std::collections::BTreeMap;
use std::fmt;

/// Clock ticks per second for /proc/<pid>/stat times (100 on Linux).
const TICKS: f64 = 100.0;

fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Every process whose command name is `comm` (e.g. all postgres backends).
pub fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// The processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // The parent pid is the second field after the parenthesised command name.
                stat.rfind(')')
                    .and_then(|i| stat[i + 2..].split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

/// Resident memory of a process (VmRSS) in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Ticks per process, per role, at one moment.
#[derive(Clone, Default)]
pub struct Snapshot(BTreeMap<&'static str, BTreeMap<u32, u64>>);

impl Snapshot {
    pub fn take(roles: &[(&'static str, Vec<u32>)]) -> Snapshot {
        let mut map: BTreeMap<&'static str, BTreeMap<u32, u64>> = BTreeMap::new();
        for (role, pids) in roles {
            let entry = map.entry(*role).or_default();
            for pid in pids {
                if let Some(t) = ticks(*pid) {
                    entry.insert(*pid, t);
                }
            }
        }
        Snapshot(map)
    }
}

/// CPU seconds per role between two snapshots, process by process: a process that started in
/// between counts from zero; one that exited in between is missed for its last stretch (an
/// undercount, never the negative total a sum of sums would give).
pub struct Usage(pub Vec<(&'static str, f64)>);

impl Usage {
    pub fn between(before: &Snapshot, after: &Snapshot) -> Usage {
        Usage(
            after
                .0
                .iter()
                .map(|(role, pids)| {
                    let earlier = before.0.get(role);
                    let used: u64 = pids
                        .iter()
                        .map(|(pid, t)| {
                            t.saturating_sub(earlier.and_then(|e| e.get(pid)).copied().unwrap_or(0))
                        })
                        .sum();
                    (*role, used as f64 / TICKS)
                })
                .collect(),
        )
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(r, s)| format!("{r} {s:.1}")).collect();
        f.write_str(&parts.join(", "))
    }
}
