//! What the CLI prints: the API's JSON as it is (`-o json`), or words and tables for people;
//! and the prompts of `login` (the password read without echo on a terminal).

use std::io::{BufRead, IsTerminal};

use serde_json::Value;

use super::client::CliError;
use super::Format;

/// Prints `value` as JSON, or as `human` says.
pub fn print(format: Format, value: &Value, human: impl Fn(&Value) -> String) {
    match format {
        Format::Json => out!("{}", serde_json::to_string_pretty(value).expect("JSON values serialise")),
        Format::Human => out!("{}", human(value)),
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// One deployment for people: what it is, its state, why it failed, its services' URLs.
pub fn deployment(d: &Value) -> String {
    let mut out = format!(
        "{}  {}  (project {}, environment {}, id {})",
        text(&d["name"]),
        text(&d["state"]),
        text(&d["project"]),
        text(&d["environment"]),
        text(&d["id"])
    );
    if let Some(reason) = d["failure"]["reason"].as_str() {
        let step = d["failure"]["step"].as_str().map(|s| format!(" at step {s}")).unwrap_or_default();
        out.push_str(&format!("\n  failed{step}: {reason}"));
    }
    for s in d["services"].as_array().into_iter().flatten() {
        let health = match s["healthy"].as_bool() {
            Some(true) => "healthy",
            Some(false) => "unhealthy",
            None => "health not known yet",
        };
        out.push_str(&format!("\n  {} {}  {}  ({health})", text(&s["name"]), text(&s["tag"]), text(&s["url"])));
    }
    out
}

/// Rows under a header, each column as wide as its widest cell.
fn columns<const N: usize>(head: [&str; N], rows: Vec<[String; N]>, empty: &str) -> String {
    if rows.is_empty() {
        return empty.into();
    }
    let head = head.map(str::to_owned);
    let widths: Vec<usize> = (0..N).map(|i| rows.iter().chain([&head]).map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    std::iter::once(&head)
        .chain(&rows)
        .map(|r| r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Webhooks as a table: where, what, and how their recent deliveries went.
pub fn webhook_table(list: &Value) -> String {
    let rows = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let deliveries = w["deliveries"].as_array().map(Vec::as_slice).unwrap_or_default();
            let count = |state: &str| deliveries.iter().filter(|d| d["state"] == state).count();
            let scope = [w["project"].as_str().map(|p| format!("project {p}")), w["environment"].as_str().map(|e| format!("environment {e}"))];
            let scope = scope.into_iter().flatten().collect::<Vec<_>>().join(", ");
            let events = w["events"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_lowercase).collect::<Vec<_>>().join(",");
            [
                text(&w["id"]).to_owned(),
                text(&w["url"]).to_owned(),
                events,
                if scope.is_empty() { "all".into() } else { scope },
                format!("{} delivered, {} pending, {} abandoned", count("DELIVERED"), count("PENDING"), count("ABANDONED")),
            ]
        })
        .collect();
    columns(["ID", "URL", "EVENTS", "OF", "RECENT DELIVERIES"], rows, "No webhooks.")
}

/// A webhook's deliveries as a table, with their last attempt.
pub fn delivery_table(list: &Value) -> String {
    let rows = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let attempts = d["attempts"].as_array().map(Vec::as_slice).unwrap_or_default();
            let last = attempts.last().map_or_else(String::new, |a| match a["status"].as_u64() {
                Some(status) if a["error"].as_str().unwrap_or_default().is_empty() => format!("{status}"),
                _ => text(&a["error"]).to_owned(),
            });
            [
                text(&d["madeAt"]).to_owned(),
                text(&d["event"]).to_owned(),
                text(&d["subject"]).to_owned(),
                text(&d["state"]).to_owned(),
                attempts.len().to_string(),
                last,
            ]
        })
        .collect();
    columns(["MADE", "EVENT", "SUBJECT", "STATE", "ATTEMPTS", "LAST"], rows, "No deliveries.")
}

/// Deployments as a table.
pub fn deployment_table(list: &Value) -> String {
    let rows: Vec<[String; 5]> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let services =
                d["services"].as_array().into_iter().flatten().map(|s| format!("{}:{}", text(&s["name"]), text(&s["tag"]))).collect::<Vec<_>>().join(" ");
            [text(&d["name"]).to_owned(), text(&d["project"]).to_owned(), text(&d["environment"]).to_owned(), text(&d["state"]).to_owned(), services]
        })
        .collect();
    columns(["NAME", "PROJECT", "ENVIRONMENT", "STATE", "SERVICES"], rows, "No deployments.")
}

/// The one-line progress of a deployment being followed.
pub fn progress(d: &Value) -> String {
    let steps = d["steps"].as_array().map(Vec::as_slice).unwrap_or_default();
    let done = steps.iter().filter(|s| s["state"] == "SUCCEEDED").count();
    let running: Vec<&str> = steps.iter().filter(|s| s["state"] == "RUNNING").filter_map(|s| s["id"].as_str()).collect();
    let now = if running.is_empty() { String::new() } else { format!(", running {}", running.join(", ")) };
    format!("{}: {} ({done}/{} steps done{now})", text(&d["name"]), text(&d["state"]), steps.len())
}

/// One log line.
pub fn log_line(format: Format, line: &Value) {
    match format {
        Format::Json => out!("{line}"),
        Format::Human => out!("{} {} {}", text(&line["at"]), text(&line["source"]), text(&line["text"])),
    }
}

/// Asks for one line on the terminal (without echo when `echo` is false), or reads it from
/// stdin when that is not a terminal.
pub fn ask(prompt: &str, echo: bool) -> Result<String, CliError> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        err_part!("{prompt}");
    }
    let quiet = (terminal && !echo).then(EchoOff::new).flatten();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    drop(quiet);
    if terminal && !echo {
        err!();
    }
    read.map_err(|e| CliError::new("USAGE", format!("cannot read {}: {e}", prompt.trim_end_matches([':', ' ']).to_lowercase())))?;
    let value = line.trim_end_matches(['\r', '\n']).to_owned();
    if value.is_empty() {
        return Err(CliError::new("USAGE", format!("no {} given", prompt.trim_end_matches([':', ' ']).to_lowercase())));
    }
    Ok(value)
}

/// The terminal's echo turned off for as long as this lives.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: tcgetattr/tcsetattr on stdin with a zeroed termios they fill in; nothing is
        // kept of the pointer past the calls.
        unsafe {
            let mut before: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut before) != 0 {
                return None;
            }
            let mut quiet = before;
            quiet.c_lflag &= !libc::ECHO;
            (libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) == 0).then_some(EchoOff(before))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: puts back the settings read in `new`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
    }
}
