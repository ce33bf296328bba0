//! A Docker network of the test's own with agents (the `nullops/agent` image) on it.

use std::process::Command;

use super::{docker, must};

/// A Docker network of the test's own and the agents on it; removed on drop, pass or fail.
pub struct Lab {
    pub id: String,
    pub network: String,
    subnet: u8,
    containers: Vec<String>,
}

impl Lab {
    pub fn new() -> Lab {
        let id = uuid::Uuid::now_v7().simple().to_string()[16..].to_owned();
        let network = format!("nullops-t{id}");
        // A private /24 of our own; another run may hold one, so try a few.
        for attempt in 0..20u8 {
            let subnet = (u32::from_str_radix(&id[..4], 16).unwrap() as u8).wrapping_add(attempt.wrapping_mul(37)).max(1);
            if docker(&["network", "create", "--subnet", &format!("10.213.{subnet}.0/24"), &network]).is_ok() {
                return Lab { id, network, subnet, containers: vec![] };
            }
        }
        panic!("no free subnet for the test network");
    }

    pub fn ip(&self, host: u8) -> String {
        format!("10.213.{}.{host}", self.subnet)
    }

    pub fn name(&self, agent: &str) -> String {
        format!("nullops-t{}-{agent}", self.id)
    }

    /// Starts agent `agent` at `.host` with `token` (its data in a volume of the same name).
    pub fn run_agent(&mut self, agent: &str, host: u8, token: &str, extra: &[&str]) {
        let name = self.name(agent);
        let env = format!("NULLOPS_AGENT_TOKEN={token}");
        let scope = format!("NULLOPS_AGENT_SCOPE=t{}-{agent}", self.id);
        let volume = format!("{name}:/data");
        let ip = self.ip(host);
        // Every refused connection is logged at debug level (warnings of one kind come once a
        // minute): the tests count them to see the connector's redials.
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &self.network,
            "--ip",
            &ip,
            "-e",
            &env,
            "-e",
            &scope,
            "-e",
            "NULLOPS_LOG=info,nullops_agent::handshake=debug",
        ];
        args.extend(["-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", &volume, "nullops/agent:latest"]);
        args.extend(extra);
        must(&args);
        if !self.containers.contains(&name) {
            self.containers.push(name);
        }
    }

    pub fn remove_agent(&self, agent: &str) {
        must(&["rm", "-f", &self.name(agent)]);
    }

    pub fn logs(&self, agent: &str) -> String {
        let out = Command::new("docker").args(["logs", &self.name(agent)]).output().expect("docker logs");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    pub fn scope(&self, agent: &str) -> String {
        format!("t{}-{agent}", self.id)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = docker(&["rm", "-f", name]);
            let _ = docker(&["volume", "rm", "-f", name]);
            if let Ok(ids) = docker(&["ps", "-aq", "--filter", &format!("label=nullops.scope=t{}-{}", self.id, name.rsplit('-').next().unwrap_or_default())]) {
                for id in ids.lines() {
                    let _ = docker(&["rm", "-f", id]);
                }
            }
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}
