//! What the ingress answered, counted once and where connections share no lock: each thread
//! that counts takes a shard of its own (round robin; threads beyond [`SHARDS`] share one), and
//! a scrape or the traffic chart adds the shards up. A count costs an uncontended lock and, in
//! the steady state, no allocation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::{IngressLabels, StatusClass};

/// More than the worker threads of any runtime we run, so that each counts in its own.
const SHARDS: usize = 64;
/// Classes, in [`StatusClass`]'s order.
const CLASSES: [StatusClass; 5] =
    [StatusClass::Informational, StatusClass::Success, StatusClass::Redirection, StatusClass::ClientError, StatusClass::ServerError];
/// Upper bounds (seconds) of the request-duration buckets: 0.25 ms doubling to about 8 s.
const BUCKETS: usize = 16;

fn bucket_bound(i: usize) -> f64 {
    0.00025 * f64::from(1u32 << i)
}

/// One deployment's answers by status class, since the start.
type ByClass = [u64; CLASSES.len()];

#[derive(Default)]
struct Shard {
    /// environment → deployment → answers. Nested so a count looks up by `&str`.
    answers: HashMap<String, HashMap<String, ByClass>>,
    /// Request durations: per bucket, the sum and the count.
    buckets: [u64; BUCKETS],
    seconds: f64,
    requests: u64,
}

/// Which shard this thread counts in.
fn my_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    MINE.with(|m| *m)
}

/// The ingress's answers, by environment, deployment and status class, and how long they took.
pub struct IngressCounts {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for IngressCounts {
    fn default() -> Self {
        IngressCounts { shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl std::fmt::Debug for IngressCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IngressCounts")
    }
}

impl IngressCounts {
    /// Counts one answer to a request for `deployment` of `environment` (both `""` when the
    /// host named none), of status `class`; `took`, when the duration is to be recorded.
    pub fn count(&self, environment: &str, deployment: &str, class: StatusClass, took: Option<Duration>) {
        let mut shard = self.shards[my_shard()].lock().unwrap_or_else(|p| p.into_inner());
        let by_environment = match shard.answers.get_mut(environment) {
            Some(m) => m,
            None => shard.answers.entry(environment.to_owned()).or_default(),
        };
        let by_class = match by_environment.get_mut(deployment) {
            Some(c) => c,
            None => by_environment.entry(deployment.to_owned()).or_default(),
        };
        by_class[class as usize] += 1;
        if let Some(took) = took {
            let secs = took.as_secs_f64();
            if let Some(i) = (0..BUCKETS).find(|&i| secs <= bucket_bound(i)) {
                shard.buckets[i] += 1;
            }
            shard.seconds += secs;
            shard.requests += 1;
        }
    }

    /// Every (environment, deployment) with its answers by class since the start, all shards
    /// added up.
    pub fn answers(&self) -> HashMap<(String, String), ByClass> {
        let mut all: HashMap<(String, String), ByClass> = HashMap::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (environment, deployments) in &shard.answers {
                for (deployment, counts) in deployments {
                    let sum = all.entry((environment.clone(), deployment.clone())).or_default();
                    sum.iter_mut().zip(counts).for_each(|(s, c)| *s += c);
                }
            }
        }
        all
    }

    /// Requests and, of those, server errors, per deployment since the start (the traffic
    /// chart's figures; its sampler takes the difference between two readings).
    pub fn requests_and_errors(&self) -> HashMap<(String, String), (u64, u64)> {
        self.answers()
            .into_iter()
            .filter(|((_, deployment), _)| !deployment.is_empty())
            .map(|(key, by_class)| (key, (by_class.iter().sum(), by_class[StatusClass::ServerError as usize])))
            .collect()
    }

    fn durations(&self) -> ([u64; BUCKETS], f64, u64) {
        let (mut buckets, mut seconds, mut requests) = ([0u64; BUCKETS], 0.0, 0u64);
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            buckets.iter_mut().zip(&shard.buckets).for_each(|(b, c)| *b += c);
            seconds += shard.seconds;
            requests += shard.requests;
        }
        (buckets, seconds, requests)
    }
}

/// `ingress_requests` and `ingress_request_duration`, read from the shards at each scrape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IngressCollector(pub(crate) &'static IngressCounts);

struct Counts(u64);

impl EncodeMetric for Counts {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.0, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

impl Collector for IngressCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut answers: Vec<_> = self.0.answers().into_iter().collect();
        answers.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut family = encoder.encode_descriptor(
            "ingress_requests",
            "Requests the ingress answered, by environment, deployment and status class",
            None,
            MetricType::Counter,
        )?;
        for ((environment, deployment), by_class) in answers {
            for (class, n) in CLASSES.iter().zip(by_class).filter(|(_, n)| *n > 0) {
                let labels = IngressLabels { environment: environment.clone(), deployment: deployment.clone(), class: *class };
                Counts(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let (buckets, seconds, requests) = self.0.durations();
        // Per bucket (the encoder adds them up), and beyond the last bound what is left.
        let finite: u64 = buckets.iter().sum();
        let buckets: Vec<(f64, u64)> =
            (0..BUCKETS).map(|i| (bucket_bound(i), buckets[i])).chain(std::iter::once((f64::INFINITY, requests.saturating_sub(finite)))).collect();
        let mut duration = encoder.encode_descriptor(
            "ingress_request_duration",
            "Time from a request's head to the answer's head",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        duration.encode_histogram::<NoLabelSet>(seconds, requests, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up_by_deployment_and_class() {
        let counts: &'static IngressCounts = Box::leak(Box::default());
        std::thread::scope(|s| {
            for t in 0..8 {
                s.spawn(move || {
                    for i in 0..1000 {
                        let class = if i % 10 == 0 { StatusClass::ServerError } else { StatusClass::Success };
                        counts.count("qa", &format!("pr-{}", t % 2), class, Some(Duration::from_millis(1)));
                    }
                });
            }
        });
        counts.count("", "", StatusClass::ClientError, None);
        let figures = counts.requests_and_errors();
        assert_eq!(figures.len(), 2, "the request that named no deployment is not the chart's");
        assert_eq!(figures[&("qa".into(), "pr-0".into())], (4000, 400));
        assert_eq!(figures[&("qa".into(), "pr-1".into())], (4000, 400));
        let (buckets, seconds, requests) = counts.durations();
        assert_eq!(requests, 8000);
        assert_eq!(buckets.iter().sum::<u64>(), 8000);
        assert!((seconds - 8.0).abs() < 1e-6, "{seconds}");
    }
}
