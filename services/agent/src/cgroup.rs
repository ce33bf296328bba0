//! A container's CPU time and memory, read from its control group: the files the engine's own
//! stats come from. Reading them costs the engine nothing, where `docker stats` is one API call
//! per container that waits for two samples; so a node with many idle deployments reports their
//! use without keeping its engine busy. Where the files are not visible (an agent in a container
//! without the host's cgroup tree) the caller falls back to the engine's stats.

use std::path::{Path, PathBuf};

/// Where the host's control groups are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

/// One reading of a container's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// CPU time used since the container started, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, less reclaimable page cache (as `docker stats` shows it).
    pub memory_bytes: u64,
}

/// Reads container `id`'s counters under `root`, whichever cgroup version and engine cgroup
/// driver made them; `None` when no layout has them. Blocking (small sysfs reads).
pub fn read(root: &Path, id: &str) -> Option<Reading> {
    // Only a container id names a directory here, never a path of the caller's.
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    read_v2(root, id).or_else(|| read_v1(root, id))
}

/// The unified hierarchy (cgroup v2): one directory holds both controllers.
fn read_v2(root: &Path, id: &str) -> Option<Reading> {
    let dir = [root.join(format!("system.slice/docker-{id}.scope")), root.join(format!("docker/{id}"))].into_iter().find(|d| d.join("cpu.stat").is_file())?;
    let cpu_us = stat_field(&std::fs::read_to_string(dir.join("cpu.stat")).ok()?, "usage_usec")?;
    let current = first_number(&std::fs::read_to_string(dir.join("memory.current")).ok()?)?;
    let inactive = std::fs::read_to_string(dir.join("memory.stat")).ok().and_then(|s| stat_field(&s, "inactive_file")).unwrap_or(0);
    Some(Reading { cpu_ns: cpu_us.saturating_mul(1000), memory_bytes: current.saturating_sub(inactive) })
}

/// Separate hierarchies per controller (cgroup v1).
fn read_v1(root: &Path, id: &str) -> Option<Reading> {
    let under = |controllers: &[&str]| -> Vec<PathBuf> {
        controllers.iter().flat_map(|c| [root.join(format!("{c}/docker/{id}")), root.join(format!("{c}/system.slice/docker-{id}.scope"))]).collect()
    };
    let cpu_dir = under(&["cpuacct", "cpu,cpuacct"]).into_iter().find(|d| d.join("cpuacct.usage").is_file())?;
    let memory_dir = under(&["memory"]).into_iter().find(|d| d.join("memory.usage_in_bytes").is_file())?;
    let cpu_ns = first_number(&std::fs::read_to_string(cpu_dir.join("cpuacct.usage")).ok()?)?;
    let usage = first_number(&std::fs::read_to_string(memory_dir.join("memory.usage_in_bytes")).ok()?)?;
    let inactive = std::fs::read_to_string(memory_dir.join("memory.stat")).ok().and_then(|s| stat_field(&s, "total_inactive_file")).unwrap_or(0);
    Some(Reading { cpu_ns, memory_bytes: usage.saturating_sub(inactive) })
}

/// The value of `key` in a `key value` per line file (`cpu.stat`, `memory.stat`).
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn first_number(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Millicores used between two readings `elapsed_ns` apart.
pub fn millicores(before: u64, now: u64, elapsed_ns: u64) -> u64 {
    if elapsed_ns == 0 {
        return 0;
    }
    (u128::from(now.saturating_sub(before)) * 1000 / u128::from(elapsed_ns)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef";

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn temp_root(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("nullops-cgroup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        root
    }

    #[test]
    fn reads_cgroup_v1_as_the_cgroupfs_driver_lays_it_out() {
        let root = temp_root("v1");
        write(&root, &format!("cpuacct/docker/{ID}/cpuacct.usage"), "2500000000\n");
        write(&root, &format!("memory/docker/{ID}/memory.usage_in_bytes"), "10485760\n");
        write(&root, &format!("memory/docker/{ID}/memory.stat"), "cache 1\ninactive_file 7\ntotal_inactive_file 2097152\n");
        assert_eq!(read(&root, ID), Some(Reading { cpu_ns: 2_500_000_000, memory_bytes: 8_388_608 }));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn reads_cgroup_v2_as_the_systemd_driver_lays_it_out() {
        let root = temp_root("v2");
        write(&root, &format!("system.slice/docker-{ID}.scope/cpu.stat"), "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n");
        write(&root, &format!("system.slice/docker-{ID}.scope/memory.current"), "4096\n");
        write(&root, &format!("system.slice/docker-{ID}.scope/memory.stat"), "anon 1\ninactive_file 1024\n");
        assert_eq!(read(&root, ID), Some(Reading { cpu_ns: 1_500_000, memory_bytes: 3072 }));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_group_or_a_hostile_id_reads_nothing() {
        let root = temp_root("none");
        write(&root, "cpuacct/docker/x/cpuacct.usage", "1\n");
        assert_eq!(read(&root, ID), None);
        assert_eq!(read(&root, "../../etc"), None);
        assert_eq!(read(&root, ""), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn millicores_are_cpu_time_over_wall_time() {
        assert_eq!(millicores(0, 1_500_000_000, 3_000_000_000), 500);
        assert_eq!(millicores(5, 4, 1_000), 0);
        assert_eq!(millicores(0, 10, 0), 0);
    }
}
