//! The platform sampler: every [`samples::SAMPLE_SECS`] it records the platform's own figures
//! for the Health page's charts (commands decided by this server, each projection's lag) and,
//! every sixth turn, forgets samples older than [`samples::KEEP_SECS`]. A [`Periodic`] process
//! on each server: the command counts are this server's, and several servers' samples add up.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nullops_events::Timestamp;
use nullops_projections::samples::{self, Series};

use crate::core::Core;
use crate::periodic::{Periodic, Scope};
use crate::SagaError;

/// How often the platform's figures are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(samples::SAMPLE_SECS.unsigned_abs());
/// Old samples are forgotten every this many turns.
const PRUNE_EVERY_TURNS: u64 = 6;

pub struct PlatformSampler {
    core: Arc<Core>,
    /// The counts of commands decided and refused at the last turn, and how many turns ran.
    last: Mutex<(u64, u64, u64)>,
}

impl PlatformSampler {
    pub fn new(core: Arc<Core>) -> Self {
        let metrics = nullops_metrics::metrics();
        let counts = (metrics.commands_done.load(Ordering::Relaxed), metrics.commands_not_done.load(Ordering::Relaxed), 0);
        PlatformSampler { core, last: Mutex::new(counts) }
    }

    /// Commands decided and refused since the last turn; whether this turn also prunes.
    fn turn(&self) -> (u64, u64, bool) {
        let metrics = nullops_metrics::metrics();
        let (done, not_done) = (metrics.commands_done.load(Ordering::Relaxed), metrics.commands_not_done.load(Ordering::Relaxed));
        let mut last = self.last.lock().expect("sampler lock");
        let delta = (done.saturating_sub(last.0), not_done.saturating_sub(last.1));
        *last = (done, not_done, last.2 + 1);
        (delta.0, delta.1, last.2.is_multiple_of(PRUNE_EVERY_TURNS))
    }
}

#[async_trait]
impl Periodic for PlatformSampler {
    type Error = SagaError;
    const NAME: &'static str = "platform-sampler";
    const SCOPE: Scope = Scope::EachServer;

    async fn run_once(&self) -> Result<(), SagaError> {
        let now = Timestamp::now().0;
        let (done, not_done, prune) = self.turn();
        let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        samples::add(&self.core.read_models.working_rows(), &Series::Commands, now, big(done), big(not_done)).await?;
        for lag in self.core.projection_lags().await? {
            let ms = (lag.seconds * 1000.0) as i64;
            samples::record(&self.core.read_models.working_rows(), &Series::Lag(lag.name.clone()), now, lag.events, ms).await?;
        }
        if prune {
            samples::prune(&self.core.read_models.working_rows(), now).await?;
        }
        Ok(())
    }
}
