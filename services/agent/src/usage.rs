//! The node's own CPU and memory, read from /proc (inside the agent's container /proc shows the
//! host's totals, which is what capacity is about).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use nullops_wire::message::{ContainerUsage, Usage};

use crate::cgroup;
use crate::docker::{Engine, RunningContainer};

/// Cumulative CPU time counters from the first line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

pub fn parse_proc_stat(text: &str) -> Option<(CpuTimes, u32)> {
    let mut lines = text.lines();
    let fields: Vec<u64> = lines.next()?.strip_prefix("cpu ")?.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    if fields.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy. Guest time
    // is already counted in user time.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    let cores = text.lines().filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).count() as u32;
    Some((CpuTimes { busy: total - idle, total }, cores.max(1)))
}

/// `(total, used)` bytes from /proc/meminfo: used is what is not available for new work.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok());
    let total = field("MemTotal:")? * 1024;
    let available = field("MemAvailable:")? * 1024;
    Some((total, total.saturating_sub(available)))
}

/// Weight of each new sample in the CPU average: samples come every 3 s and the average spans
/// about a minute (1 - e^(-3/60)), so the node's sustained load counts, not a burst.
const CPU_SMOOTHING: f64 = 0.0488;

/// Samples the node, each call against the previous one.
#[derive(Default)]
pub struct Sampler {
    last: Option<CpuTimes>,
    /// Millicores in use, averaged over about a minute.
    sustained: f64,
}

impl Sampler {
    pub async fn sample(&mut self, containers: Vec<ContainerUsage>) -> Usage {
        let stat = tokio::fs::read_to_string("/proc/stat").await.ok();
        let meminfo = tokio::fs::read_to_string("/proc/meminfo").await.ok();
        let (times, cores) = stat.as_deref().and_then(parse_proc_stat).unwrap_or_default();
        let cores = cores.max(1);
        let used = match self.last.replace(times) {
            Some(prev) if times.total > prev.total => {
                (times.busy.saturating_sub(prev.busy) as u128 * u128::from(cores) * 1000 / (times.total - prev.total) as u128) as u64
            }
            _ => 0,
        };
        self.sustained += CPU_SMOOTHING * (used as f64 - self.sustained);
        let (memory_total_bytes, memory_used_bytes) = meminfo.as_deref().and_then(parse_meminfo).unwrap_or_default();
        Usage { cpu_cores: cores, cpu_used_millicores: self.sustained.round() as u64, memory_total_bytes, memory_used_bytes, containers }
    }
}

/// Samples the running containers from their control groups, each reading against its
/// previous one; the engine is asked (one call each) only for those whose group cannot be read.
#[derive(Default)]
pub struct ContainerSampler {
    /// Each container's CPU time at its last reading, and when.
    last: HashMap<String, (u64, Instant)>,
}

impl ContainerSampler {
    pub async fn sample(&mut self, engine: &Engine, running: Vec<RunningContainer>) -> Vec<ContainerUsage> {
        let ids: Vec<String> = running.iter().map(|c| c.id.clone()).collect();
        let readings =
            tokio::task::spawn_blocking(move || ids.iter().map(|id| cgroup::read(Path::new(cgroup::ROOT), id)).collect::<Vec<_>>()).await.unwrap_or_default();
        let now = Instant::now();
        let mut last = HashMap::with_capacity(running.len());
        let mut sampled = Vec::with_capacity(running.len());
        let mut unreadable = Vec::new();
        for (c, reading) in running.into_iter().zip(readings.into_iter().chain(std::iter::repeat(None))) {
            let Some(reading) = reading else {
                unreadable.push(c);
                continue;
            };
            let cpu_millicores = match self.last.get(&c.id) {
                Some((cpu_ns, at)) => cgroup::millicores(*cpu_ns, reading.cpu_ns, now.duration_since(*at).as_nanos() as u64),
                None => 0,
            };
            last.insert(c.id.clone(), (reading.cpu_ns, now));
            sampled.push(ContainerUsage { deployment: c.deployment, name: c.name, cpu_millicores, memory_bytes: reading.memory_bytes });
        }
        // Containers gone since are forgotten with the old map.
        self.last = last;
        if !unreadable.is_empty() {
            sampled.extend(engine.container_stats(unreadable).await);
        }
        sampled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_stat_and_meminfo() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1\n";
        assert_eq!(parse_proc_stat(stat), Some((CpuTimes { busy: 150, total: 1000 }, 2)));
        assert_eq!(parse_proc_stat("garbage"), None);
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some((1_024_000, 614_400)));
        assert_eq!(parse_meminfo("MemTotal: x kB"), None);
    }
}
