//! Fault injection for the crash tests: `NULLOPS_FAULT=<point>` makes the process abort (no
//! destructors, no flush: as abrupt as SIGKILL) the first time it reaches that named point.
//! Unset, a point costs one comparison.

use std::sync::OnceLock;

/// The environment variable that names the point to crash at.
pub const VARIABLE: &str = "NULLOPS_FAULT";

/// Aborts the process if `NULLOPS_FAULT` names `point`.
pub fn point(point: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var(VARIABLE).ok().filter(|v| !v.is_empty()));
    if armed.as_deref() == Some(point) {
        eprintln!("nullops: fault injected at {point} ({VARIABLE}): aborting");
        std::process::abort();
    }
}
