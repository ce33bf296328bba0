//! What the ingress answered per deployment between two readings: the console's traffic chart
//! is sampled from it. The counts themselves are the metrics' ([`nullops_metrics::IngressCounts`],
//! counted once per request without a lock the connections share); this keeps, per deployment,
//! the totals its last stored sample reached, so each sample holds what came since.

use std::collections::HashMap;

/// (environment, deployment) → (requests, of which answered 5xx).
type Figures = HashMap<(String, String), (u64, u64)>;

/// The chart's reader: one per sampler.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Per deployment, the totals as of its last sample written.
    written: Figures,
}

/// What one deployment answered since its last sample, and its totals now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub environment: String,
    pub deployment: String,
    pub requests: u64,
    pub errors: u64,
    totals: (u64, u64),
}

impl Traffic {
    /// Each deployment's requests and server errors since its last sample was written
    /// (deployments with none are left out). Nothing is forgotten until [`Traffic::written`]
    /// says it is stored: a write that fails is tried again with the next reading.
    pub fn read(&self) -> Vec<Since> {
        since(&self.written, &nullops_metrics::metrics().ingress.requests_and_errors())
    }

    /// `since` is stored.
    pub fn written(&mut self, since: &Since) {
        self.written.insert((since.environment.clone(), since.deployment.clone()), since.totals);
    }
}

fn since(written: &Figures, now: &Figures) -> Vec<Since> {
    now.iter()
        .filter_map(|((environment, deployment), &(requests, errors))| {
            let (seen, seen_errors) = written.get(&(environment.clone(), deployment.clone())).copied().unwrap_or_default();
            (requests > seen).then(|| Since {
                environment: environment.clone(),
                deployment: deployment.clone(),
                requests: requests - seen,
                errors: errors.saturating_sub(seen_errors),
                totals: (requests, errors),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use nullops_metrics::StatusClass;

    #[test]
    fn each_reading_holds_what_came_since_the_last_sample_written() {
        let mut traffic = super::Traffic::default();
        let count = |class| nullops_metrics::metrics().ingress.count("qa", "pr-7", class, None);
        let pr7 = |traffic: &super::Traffic| traffic.read().into_iter().find(|s| s.deployment == "pr-7");
        count(StatusClass::Success);
        count(StatusClass::ServerError);
        let first = pr7(&traffic).expect("counted");
        assert_eq!((first.requests, first.errors), (2, 1));
        // Not written (the database was busy, say): the next reading still holds it.
        count(StatusClass::Success);
        let again = pr7(&traffic).expect("still there");
        assert_eq!((again.requests, again.errors), (3, 1));
        traffic.written(&again);
        assert_eq!(pr7(&traffic), None, "nothing new");
        count(StatusClass::Success);
        assert_eq!(pr7(&traffic).map(|s| (s.requests, s.errors)), Some((1, 0)));
    }
}
