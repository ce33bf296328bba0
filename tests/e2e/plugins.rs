//! The example plugins as the agent will run them: their images from the local registry, the
//! input on stdin, the result on stdout, the exit code, and (for http-check) the demo service on
//! a Docker network of the test's own.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::must;

use crate::support;

const REGISTRY: &str = "127.0.0.1:5050";

fn image(name: &str, tag: &str) -> String {
    format!("{REGISTRY}/nullops/{name}:{tag}")
}

/// Runs `image` with `input` on stdin (extra `docker run` args first); returns the parsed
/// stdout, the exit code and stderr.
fn run_plugin(extra: &[&str], image: &str, input: &Value) -> (Value, i32, String) {
    let mut child = Command::new("docker")
        .args(["run", "-i", "--rm"])
        .args(extra)
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker runs");
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("stdout is not one JSON result ({e}): {stdout}"));
    (result, out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[test]
fn render_config_fills_values_and_secrets_and_fails_on_unknown_names() {
    let input = json!({
        "action": "render",
        "parameters": { "template": "DATABASE_URL=postgres://app:{{secrets.PW}}@{{host}}:{{port}}/qa", "values": { "host": "db", "port": 5432 } },
        "secrets": { "PW": "s3cret" }
    });
    let (result, code, _) = run_plugin(&[], &image("render-config", version()), &input);
    assert_eq!(code, 0);
    assert_eq!(result["outputs"]["config"], "DATABASE_URL=postgres://app:s3cret@db:5432/qa");
    let (result, code, stderr) = run_plugin(&[], &image("render-config", version()), &json!({ "parameters": { "template": "{{missing}}" } }));
    assert_eq!((code, result["success"].as_bool()), (1, Some(false)));
    assert!(result["output"].as_str().unwrap().contains("missing"));
    assert!(!stderr.contains("s3cret"));
    let (result, code, _) = run_plugin(&[], &image("render-config", version()), &json!("not an input"));
    assert_eq!((code, result["success"].as_bool()), (2, Some(false)));
}

/// A network and the demo service on it, removed on drop.
struct DemoNetwork {
    network: String,
    demo: String,
}

impl Drop for DemoNetwork {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.demo]).output();
        let _ = Command::new("docker").args(["network", "rm", &self.network]).output();
    }
}

#[test]
fn http_check_waits_for_the_demo_service_inside_its_network() {
    let id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    let lab = DemoNetwork { network: format!("nullops-p{id}"), demo: format!("demo-{id}") };
    must(&["network", "create", &lab.network]);
    // The check starts before the service exists: it must wait, not fail.
    let check = image("http-check", version());
    let url = format!("http://{}:8080/healthz", lab.demo);
    let waiting = {
        let (network, check, url) = (lab.network.clone(), check.clone(), url.clone());
        std::thread::spawn(move || {
            run_plugin(&["--network", &network], &check, &json!({ "parameters": { "url": url, "timeout_secs": 60, "interval_ms": 200 } }))
        })
    };
    // The service starts once the check has failed an attempt.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let running = must(&["ps", "-q", "--filter", &format!("network={}", lab.network)]);
        let tried = running.lines().filter(|id| !id.is_empty()).any(|id| {
            let logs = Command::new("docker").args(["logs", id]).output().unwrap();
            String::from_utf8_lossy(&logs.stderr).contains("attempt 1")
        });
        if tried {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the check made no attempt");
        std::thread::sleep(Duration::from_millis(50));
    }
    must(&["run", "-d", "--name", &lab.demo, "--network", &lab.network, &image("demo", "v1")]);
    let (result, code, stderr) = waiting.join().unwrap();
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["outputs"]["status"], 200);
    assert!(stderr.contains("attempt 1"), "it waited for the service: {stderr}");

    // Nothing answers on another port: it gives up after its timeout and says why.
    let closed = format!("http://{}:9999/", lab.demo);
    let (result, code, stderr) =
        run_plugin(&["--network", &lab.network], &check, &json!({ "parameters": { "url": closed, "timeout_secs": 2, "interval_ms": 200 } }));
    assert_eq!((code, result["success"].as_bool()), (1, Some(false)));
    assert!(result["output"].as_str().unwrap().contains("did not answer 200 within 2 s"), "{result}");
    assert!(stderr.contains("attempt 1"), "the attempts are logged on stderr: {stderr}");

    // Only http:// URLs.
    let (result, code, _) = run_plugin(&[], &check, &json!({ "parameters": { "url": "file:///etc/passwd" } }));
    assert_eq!((code, result["output"].as_str()), (1, Some("parameter url must be an http:// URL")));
}

#[test]
fn the_demo_service_names_its_version() {
    for tag in ["v1", "v2"] {
        let out = Command::new("docker").args(["run", "--rm", "--entrypoint", "/bin/busybox", &image("demo", tag), "cat", "/www/index.html"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("nullops demo {tag}"));
    }
}
