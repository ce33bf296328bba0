//! Plugin steps on the real Docker engine: the result read from stdout, failures by exit code,
//! bad output, timeout, an OOM kill, the output cap, stdin closed after the input; and never a
//! container left behind.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use nullops_agent::plugin_run::{PluginRun, MAX_STDOUT_BYTES};
use nullops_agent::Engine;

const BUSYBOX: &str = "nullops-test/busybox:1";

fn engine() -> (Engine, String) {
    let scope = format!("p{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    (Engine::connect(&scope, Default::default()).unwrap(), scope)
}

fn shell(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn run<'a>(image: &'a str, command: Vec<String>, input: &'a [u8], timeout_secs: u64) -> PluginRun<'a> {
    PluginRun {
        image,
        command,
        input,
        timeout: Duration::from_secs(timeout_secs),
        cpu_millis: 500,
        memory_mib: 64,
        network: None,
        labels: HashMap::new(),
        registry_auth: vec![],
    }
}

fn leftovers(scope: &str) -> String {
    let out = Command::new("docker").args(["ps", "-aq", "--filter", &format!("label=nullops.scope={scope}")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_plugin_gets_its_input_and_answers() {
    let (engine, scope) = engine();
    let image = format!("127.0.0.1:5050/nullops/render-config:{}", env!("CARGO_PKG_VERSION"));
    let input = br#"{"parameters":{"template":"host={{host}}","values":{"host":"db"}}}"#;
    let outcome = engine.run_plugin(&run(&image, vec![], input, 60)).await.unwrap();
    assert!(outcome.succeeded(), "{outcome:?}");
    assert_eq!(outcome.result.unwrap().outputs["config"], "host=db");
    assert_eq!(leftovers(&scope), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_closed_after_the_input_and_stderr_is_the_log() {
    let (engine, scope) = engine();
    // `cat` ends only at end of file: this finishing proves stdin was closed.
    let input = br#"{"success": true, "output": "echoed", "outputs": {"n": 1}}"#;
    let outcome = engine.run_plugin(&run(BUSYBOX, shell("echo working >&2; cat"), input, 30)).await.unwrap();
    assert!(outcome.succeeded(), "{outcome:?}");
    assert_eq!(outcome.log.trim(), "working");
    assert_eq!(leftovers(&scope), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_bad_output_timeouts_and_oom_kills_are_told_apart() {
    let (engine, scope) = engine();
    let failed = engine.run_plugin(&run(BUSYBOX, shell(r#"echo '{"success": false, "output": "no database"}'; exit 1"#), b"{}", 30)).await.unwrap();
    assert!(!failed.succeeded());
    assert_eq!(failed.exit_code, Some(1));
    assert_eq!(failed.result.unwrap().output, "no database");

    let garbage = engine.run_plugin(&run(BUSYBOX, shell("echo this is not json"), b"{}", 30)).await.unwrap();
    assert_eq!(garbage.exit_code, Some(0));
    assert!(!garbage.succeeded());
    // Our sentence and what it printed; never the parser's words.
    assert_eq!(garbage.result.unwrap_err(), nullops_agent::plugin_run::NoResult::NotAResult { shown: "this is not json\n".into() });

    let slow = engine.run_plugin(&run(BUSYBOX, shell("sleep 60"), b"{}", 2)).await.unwrap();
    assert!(slow.timed_out && !slow.succeeded());

    let chatty = engine.run_plugin(&run(BUSYBOX, shell(&format!("head -c {} /dev/zero", MAX_STDOUT_BYTES * 3)), b"{}", 30)).await.unwrap();
    assert_eq!(chatty.result.unwrap_err(), nullops_agent::plugin_run::NoResult::TooLong);

    let mut hungry = run(BUSYBOX, shell("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"), b"{}", 60);
    hungry.memory_mib = 16;
    let hungry = engine.run_plugin(&hungry).await.unwrap();
    assert!(hungry.oom_killed, "{hungry:?}");
    assert!(!hungry.succeeded());

    assert_eq!(leftovers(&scope), "", "no plugin container is left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_run_without_network_or_privileges_by_default() {
    let (engine, _) = engine();
    // No network: only loopback exists. No capabilities: changing a file's owner is refused.
    let script = r#"ls /sys/class/net | tr '\n' ' ' >&2; touch /f && chown 1:1 /f 2>/dev/null && echo '{"success":true}' || echo '{"success":false,"output":"no chown"}'"#;
    let outcome = engine.run_plugin(&run(BUSYBOX, shell(script), b"{}", 30)).await.unwrap();
    assert_eq!(outcome.log.trim(), "lo");
    assert_eq!(outcome.result.unwrap().output, "no chown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_plugin_containers_are_swept_but_running_ones_spared() {
    let (engine, scope) = engine();
    // What a crash between starting a plugin and removing it leaves.
    let leftover = Command::new("docker")
        .args(["create", "--label", &format!("nullops.scope={scope}"), "--label", "nullops.plugin-run=crashed", BUSYBOX, "true"])
        .output()
        .unwrap();
    assert!(leftover.status.success());
    // A plugin that runs until the test lets it finish (by creating /done in its container).
    let script = r#"while [ ! -e /done ]; do sleep 0.05; done; echo '{"success": true}'"#;
    let running = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run_plugin(&run(BUSYBOX, shell(script), b"{}", 60)).await.unwrap() })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let plugin = loop {
        let ids =
            Command::new("docker").args(["ps", "-q", "--filter", &format!("label=nullops.scope={scope}"), "--filter", "status=running"]).output().unwrap();
        if let Some(id) = String::from_utf8_lossy(&ids.stdout).lines().next() {
            break id.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "the plugin's container did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Sweep while it certainly runs: the leftover goes, the running plugin stays.
    engine.reconcile(&[], &Default::default()).await;
    let released = Command::new("docker").args(["exec", &plugin, "/bin/busybox", "touch", "/done"]).output().unwrap();
    assert!(released.status.success(), "the plugin was still there to be released");
    assert!(running.await.unwrap().succeeded(), "the sweep spared the running plugin");
    assert_eq!(leftovers(&scope), "", "the leftover was swept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_agent_ends_the_plugin_containers_of_runs_it_cancelled() {
    let (engine, scope) = engine();
    let running = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run_plugin(&run(BUSYBOX, shell("sleep 60"), b"{}", 120)).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while leftovers(&scope).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the plugin's container did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The stop cancels the run first: its future is dropped, with its mark of being in
    // progress and before its own removal of the container.
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    assert_ne!(leftovers(&scope), "", "a cancelled run leaves its container to the stop");
    assert_eq!(engine.end_plugin_runs().await, 1);
    assert_eq!(leftovers(&scope), "", "the stop ended the cancelled run's container");
}
