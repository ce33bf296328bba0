//! Deployments' logs on their way to the control plane: pipeline progress and plugin output
//! written by runs, and each service container's output, followed from the engine.
//!
//! Lines wait in one bounded queue until the live session sends them; while no control plane is
//! connected the oldest are dropped (logs are for people, the run's state travels apart).
//! Secret values are redacted before a line is queued.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use crate::pipeline_run::redact;
use bollard::query_parameters::LogsOptions;
use futures::StreamExt;
use nullops_wire::message::{LogLine, MAX_LOG_LINES, MAX_LOG_LINE_BYTES};
use tokio::sync::Notify;

use crate::docker::Engine;

/// Lines kept while nobody takes them.
const QUEUE_LINES: usize = 20_000;

#[derive(Default)]
pub struct LogBook {
    queue: Mutex<VecDeque<LogLine>>,
    /// Woken when lines arrive.
    pub arrived: Notify,
    /// Containers whose output is being followed.
    followed: Mutex<HashSet<String>>,
}

impl LogBook {
    /// Queues `text` (one line or several) of `source`, redacting `secrets`.
    pub fn write(&self, deployment: &str, source: &str, text: &str, secrets: &BTreeMap<String, String>) {
        let at = now_micros();
        let mut queue = self.queue.lock().expect("log queue lock");
        for line in redact(text, secrets).lines().filter(|l| !l.trim().is_empty()) {
            if queue.len() == QUEUE_LINES {
                queue.pop_front();
            }
            queue.push_back(LogLine { deployment: deployment.to_owned(), source: source.to_owned(), at, text: clip(line) });
        }
        drop(queue);
        self.arrived.notify_one();
    }

    /// Up to one message's worth of queued lines.
    pub fn take(&self) -> Vec<LogLine> {
        let mut queue = self.queue.lock().expect("log queue lock");
        let n = queue.len().min(MAX_LOG_LINES);
        queue.drain(..n).collect()
    }

    /// Follows container `id`'s output as `source` of `deployment` until the container goes,
    /// unless it is followed already. `since`: seconds since the epoch to start from (0: all).
    pub fn follow(self: &Arc<Self>, engine: &Engine, id: &str, deployment: &str, source: &str, since: i32, secrets: BTreeMap<String, String>) {
        if !self.followed.lock().expect("followed lock").insert(id.to_owned()) {
            return;
        }
        let (book, engine, id, deployment, source) = (self.clone(), engine.clone(), id.to_owned(), deployment.to_owned(), source.to_owned());
        tokio::spawn(async move {
            let options = LogsOptions { follow: true, stdout: true, stderr: true, since, ..Default::default() };
            let mut output = engine.client().logs(&id, Some(options));
            while let Some(Ok(chunk)) = output.next().await {
                book.write(&deployment, &source, &String::from_utf8_lossy(&chunk.into_bytes()), &secrets);
            }
            book.followed.lock().expect("followed lock").remove(&id);
        });
    }
}

fn clip(line: &str) -> String {
    let mut end = line.len().min(MAX_LOG_LINE_BYTES);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}
