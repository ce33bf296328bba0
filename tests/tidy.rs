//! Tidy: the rules of ARCHITECTURE.md that a reader cannot check by eye, checked on every run.
//!
//! - Every path ARCHITECTURE.md cites exists: paths from the repository's root anywhere, and a
//!   code-map section's file names under that section's directory.
//! - A deployment state's name (the API's) is spelled only in its home (`events/src/phase.rs`):
//!   other code derives it (`DeploymentStatus::name`, `stage`). Names that other state
//!   enums of the API share (a step is RUNNING too) are left out, as a literal cannot say whose
//!   it is; test code is left out as well.
//! - Every background process (`Saga::name`, `Periodic::NAME`) is listed in ARCHITECTURE.md's
//!   entry-points table.
//! - The API never holds the handle that writes a process's working rows (`WorkingRows`).
//!
//! Each check collects every violation and names them all with the file and line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nullops_events::phase::{DeploymentStatus, Desired, Observed, Stage};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `dir` with one of `extensions`, skipping build output and vendored code.
fn files(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(name.as_str(), "target" | "vendor" | "node_modules" | ".git" | "__pycache__") {
                    stack.push(path);
                }
            } else if extensions.iter().any(|x| name.ends_with(&format!(".{x}"))) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The text between backticks on each line, with its line number.
fn quoted(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let parts: Vec<&str> = line.split('`').collect();
        for (i, part) in parts.iter().enumerate() {
            if i % 2 == 1 {
                out.push((n + 1, (*part).to_owned()));
            }
        }
    }
    out
}

const TOP_LEVEL: [&str; 8] = ["events/", "services/", "projections/", "gateway/", "frontend/", "infra/", "tests/", ".cargo/"];
const CITED_FILES: [&str; 9] = [".rs", ".js", ".sh", ".py", ".css", ".html", ".graphql", ".toml", ".md"];

/// What ARCHITECTURE.md cites that is not there.
fn missing_paths(doc: &str, root: &Path) -> Vec<String> {
    // The directories a code-map heading names (`### `infra/`, `tests/``).
    let mut section_dirs: Vec<PathBuf> = Vec::new();
    let mut missing = Vec::new();
    for (n, line) in doc.lines().enumerate() {
        if line.starts_with("### ") {
            section_dirs = quoted(line).into_iter().map(|(_, d)| d).filter(|d| d.ends_with('/')).map(|d| root.join(d)).collect();
            continue;
        } else if line.starts_with("## ") {
            section_dirs.clear();
        }
        for (_, token) in quoted(line) {
            let token = token.trim_end_matches([',', '.', ':']);
            let looks_like_file = CITED_FILES.iter().any(|x| token.ends_with(x)) && !token.contains(' ') && !token.contains('*');
            if TOP_LEVEL.iter().any(|t| token.starts_with(t)) && !token.contains(' ') && !token.contains('<') {
                if !root.join(token).exists() {
                    missing.push(format!("ARCHITECTURE.md:{}: `{token}` does not exist", n + 1));
                }
            } else if looks_like_file && token.contains('.') && !token.contains("::") {
                if section_dirs.is_empty() {
                    continue;
                }
                let suffix = format!("/{token}");
                let found = section_dirs
                    .iter()
                    .flat_map(|dir| files(dir, &["rs", "js", "sh", "py", "css", "html", "graphql", "toml", "md"]))
                    .any(|f| f.to_string_lossy().ends_with(&suffix));
                if !found {
                    let dirs: Vec<String> = section_dirs.iter().map(|d| d.strip_prefix(root).unwrap_or(d).display().to_string()).collect();
                    missing.push(format!("ARCHITECTURE.md:{}: `{token}` is not under {}", n + 1, dirs.join(" or ")));
                }
            }
        }
    }
    missing
}

/// Every value of the API's enums other than `DeploymentState` and `ObservedState` (whose home is
/// the same), read from the served schema.
fn other_state_names(schema: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut inside: Option<bool> = None;
    let mut in_doc = false;
    for line in schema.lines() {
        let t = line.trim();
        if t.starts_with("\"\"\"") {
            // A one-line doc opens and closes on the same line.
            if !(t.len() > 3 && t.ends_with("\"\"\"")) {
                in_doc = !in_doc;
            }
            continue;
        }
        if in_doc {
            continue;
        }
        if let Some(rest) = t.strip_prefix("enum ") {
            inside = Some(!rest.starts_with("DeploymentState ") && !rest.starts_with("ObservedState "));
        } else if t == "}" {
            inside = None;
        } else if inside == Some(true) && !t.is_empty() {
            names.insert(t.to_owned());
        }
    }
    names
}

/// Phase names spelled as string literals outside their home, in code that is not a test.
fn phase_names_outside_home(root: &Path) -> Vec<String> {
    let shared = other_state_names(&read(&root.join("gateway/schema.graphql")));
    let own: Vec<&str> = DeploymentStatus::ALL.iter().map(|s| s.name()).filter(|n| !shared.contains(*n)).collect();
    assert!(own.len() >= 5, "phase names to look for: {own:?}");
    let home = root.join("events/src/phase.rs");
    let mut found = Vec::new();
    for dir in ["events", "services", "projections", "gateway", "frontend"] {
        for file in files(&root.join(dir), &["rs", "js"]) {
            if file == home || file.components().any(|c| c.as_os_str() == "tests") {
                continue;
            }
            let text = read(&file);
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("#[cfg(test)]") {
                    break;
                }
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for name in &own {
                    if line.contains(&format!("\"{name}\"")) || line.contains(&format!("'{name}'")) {
                        found.push(format!("{}:{}: {name}", file.strip_prefix(root).unwrap_or(&file).display(), n + 1));
                    }
                }
            }
        }
    }
    found
}

/// The values of enum `name` in the schema, in order.
fn enum_values(schema: &str, name: &str) -> Vec<String> {
    let body = schema.split(&format!("enum {name} {{")).nth(1).and_then(|rest| rest.split('}').next()).unwrap_or_default();
    let mut values = Vec::new();
    let mut in_doc = false;
    for t in body.lines().map(str::trim) {
        if t.starts_with("\"\"\"") {
            if !(t.len() > 3 && t.ends_with("\"\"\"")) {
                in_doc = !in_doc;
            }
        } else if !in_doc && !t.is_empty() {
            values.push(t.to_owned());
        }
    }
    values
}

/// The names of the background processes, read from their code.
fn process_names(root: &Path) -> Vec<(String, String)> {
    let mut names = Vec::new();
    let mut sources = files(&root.join("services/saga/src"), &["rs"]);
    sources.push(root.join("services/nullops/platform.rs"));
    for file in sources {
        let text = read(&file);
        let compact: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for (marker, end) in [("const NAME: &'static str = \"", "\""), ("fn name(&self) -> &'static str { \"", "\"")] {
            for piece in compact.split(marker).skip(1) {
                if let Some(name) = piece.split(end).next() {
                    names.push((name.to_owned(), file.strip_prefix(root).unwrap_or(&file).display().to_string()));
                }
            }
        }
    }
    names
}

/// The processes the entry-points table lists (each row's first cell, in backticks).
fn listed_processes(doc: &str) -> BTreeSet<String> {
    let table = doc.split("## Entry points").nth(1).and_then(|rest| rest.split("\n## ").next()).unwrap_or_default();
    table.lines().filter(|l| l.starts_with("| ")).filter_map(|l| l.split('|').nth(1)).flat_map(|cell| quoted(cell).into_iter().map(|(_, name)| name)).collect()
}

#[test]
fn every_path_architecture_md_cites_exists() {
    let root = root();
    let missing = missing_paths(&read(&root.join("ARCHITECTURE.md")), &root);
    assert!(missing.is_empty(), "ARCHITECTURE.md cites what is gone (update the text or the path):\n{}", missing.join("\n"));
}

#[test]
fn a_phase_name_is_spelled_only_in_its_home() {
    let found = phase_names_outside_home(&root());
    assert!(found.is_empty(), "deployment states spelled outside events/src/phase.rs (use DeploymentStatus::name or the API's stage):\n{}", found.join("\n"));
}

#[test]
fn the_apis_state_stage_desired_and_observed_names_are_their_homes_names() {
    let schema = read(&root().join("gateway/schema.graphql"));
    let states: Vec<&str> = DeploymentStatus::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(enum_values(&schema, "DeploymentState"), states);
    let stages: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(enum_values(&schema, "DeploymentStage"), stages);
    let desired: Vec<String> = Desired::ALL.iter().map(|d| d.name().to_ascii_uppercase()).collect();
    assert_eq!(enum_values(&schema, "DesiredState"), desired);
    let observed: Vec<String> = Observed::ALL.iter().map(|o| o.name().to_ascii_uppercase()).collect();
    assert_eq!(enum_values(&schema, "ObservedState"), observed);
}

#[test]
fn every_background_process_is_in_the_entry_points_table() {
    let root = root();
    let listed = listed_processes(&read(&root.join("ARCHITECTURE.md")));
    let names = process_names(&root);
    assert!(names.iter().any(|(n, _)| n == "deployments") && names.iter().any(|(n, _)| n == "reaper"), "processes found: {names:?}");
    let unlisted: Vec<String> = names.iter().filter(|(n, _)| !listed.contains(n)).map(|(n, file)| format!("{n} ({file})")).collect();
    assert!(unlisted.is_empty(), "processes missing from ARCHITECTURE.md's entry points: {}", unlisted.join(", "));
}

#[test]
fn the_api_never_holds_a_handle_that_writes_working_rows() {
    let root = root();
    let found: Vec<String> = files(&root.join("gateway/src"), &["rs"])
        .into_iter()
        .filter(|f| {
            let text = read(f);
            text.contains("WorkingRows") || text.contains("working_rows")
        })
        .map(|f| f.strip_prefix(&root).unwrap_or(&f).display().to_string())
        .collect();
    assert!(found.is_empty(), "the gateway writes working rows (only their processes may): {}", found.join(", "));
}

#[test]
fn the_checks_see_what_they_look_for() {
    // Each check, given a planted violation, reports it.
    let root = root();
    let doc = "## Code map\n### `services/saga/` (x)\n`no_such_file.rs` and `services/gone.rs`\n";
    assert_eq!(missing_paths(doc, &root).len(), 2, "{:?}", missing_paths(doc, &root));
    assert!(missing_paths("### `services/saga/`\n`runner.rs` `services/saga/src/core.rs`\n", &root).is_empty());
    let table = "## Entry points\n| process | file |\n| --- | --- |\n| `reaper` (x) | `a.rs` |\n\n## Next\n";
    assert_eq!(listed_processes(table), BTreeSet::from(["reaper".to_owned()]));
    let schema = "enum StepState {\n\tPENDING\n\tRUNNING\n}\n\"\"\"\nenum in a doc\n\"\"\"\nenum DeploymentState {\n\tDELETED\n}\n";
    assert_eq!(other_state_names(schema), BTreeSet::from(["PENDING".to_owned(), "RUNNING".to_owned()]));
}
