//! What the ingress answered per deployment since it was last asked ([`take`]): the console's
//! traffic chart is sampled from it. Bounded by the deployments that had requests in one
//! sampling window; a request whose host names no deployment is not kept.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// (environment, deployment) → (requests, of which answered 5xx).
type Tally = HashMap<(String, String), (u64, u64)>;

static TALLY: LazyLock<Mutex<Tally>> = LazyLock::new(Default::default);

/// Counts one request to `deployment` of `environment`.
pub fn count(environment: &str, deployment: &str, server_error: bool) {
    let mut tally = TALLY.lock().unwrap_or_else(|p| p.into_inner());
    let entry = tally.entry((environment.to_owned(), deployment.to_owned())).or_default();
    entry.0 += 1;
    entry.1 += u64::from(server_error);
}

/// The counts since the last call, emptied.
pub fn take() -> Vec<((String, String), (u64, u64))> {
    std::mem::take(&mut *TALLY.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_are_taken_once() {
        super::count("qa", "pr-7", false);
        super::count("qa", "pr-7", true);
        let taken = super::take();
        assert!(taken.contains(&(("qa".into(), "pr-7".into()), (2, 1))), "{taken:?}");
        assert!(!super::take().iter().any(|((_, d), _)| d == "pr-7"));
    }
}
