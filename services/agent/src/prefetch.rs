//! Images held before they are needed. The control plane names the images its environment's
//! latest pipelines use ([`nullops_wire::ToAgent::Prefetch`]); this task pulls those the engine
//! lacks, a few at a time and within a disk budget, and publishes what the node holds, which
//! the session reports ([`nullops_wire::FromAgent::Images`]). A deployment whose images are all
//! held starts without a pull.
//!
//! Nothing here is persisted: after a restart the control plane sends the list again on connect,
//! and the engine still has what was pulled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use nullops_wire::message::{HeldImage, RegistryAuth};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::docker::Engine;

/// Pulls at once: enough to overlap registry round trips, few enough not to starve the runs
/// that pull what they need right now.
pub const CONCURRENCY: usize = 2;
/// The default of what prefetched images may take on the engine's disk, in MiB.
pub const DEFAULT_BUDGET_MIB: u64 = 20 * 1024;
/// How often what is held is looked at again (an image removed behind the agent's back is
/// pulled again).
const RECHECK_EVERY: Duration = Duration::from_secs(300);

/// What the control plane asked the node to hold; the credentials live in memory only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub images: Vec<String>,
    pub auth: Vec<RegistryAuth>,
}

/// Keeps the images of `wanted` on the engine until `shutdown`, publishing what is held.
pub async fn run(engine: Engine, mut wanted: watch::Receiver<Wanted>, held: watch::Sender<Vec<HeldImage>>, budget_mib: u64, shutdown: CancellationToken) {
    loop {
        let now = wanted.borrow_and_update().clone();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            // A new list replaces the work on the old one.
            changed = wanted.changed() => {
                if changed.is_err() { return }
                continue;
            }
            () = hold(&engine, &now, &held, budget_mib << 20) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = wanted.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RECHECK_EVERY) => {}
        }
    }
}

/// Pulls what `wanted` names and the engine lacks, publishing each change.
async fn hold(engine: &Engine, wanted: &Wanted, held: &watch::Sender<Vec<HeldImage>>, budget: u64) {
    let mut state = Vec::with_capacity(wanted.images.len());
    let used = AtomicU64::new(0);
    for image in &wanted.images {
        let found = engine.inspect_image(image).await;
        if let Some((_, size)) = &found {
            used.fetch_add(*size, Ordering::Relaxed);
        }
        state.push(HeldImage {
            image: image.clone(),
            digest: found.as_ref().and_then(|(d, _)| d.clone()),
            present: found.is_some(),
            detail: if found.is_some() { String::new() } else { "waiting to be pulled".into() },
        });
    }
    let state = Mutex::new(state);
    let publish = || {
        let now = state.lock().expect("held images lock").clone();
        held.send_if_modified(|old| {
            let changed = *old != now;
            *old = now;
            changed
        });
    };
    publish();
    let missing: Vec<usize> = state.lock().expect("held images lock").iter().enumerate().filter(|(_, h)| !h.present).map(|(i, _)| i).collect();
    let set = |i: usize, f: &dyn Fn(&mut HeldImage)| {
        f(&mut state.lock().expect("held images lock")[i]);
        publish();
    };
    futures::stream::iter(missing)
        .map(|i| {
            let (set, used) = (&set, &used);
            async move {
                let image = &wanted.images[i];
                if used.load(Ordering::Relaxed) >= budget {
                    let detail = format!("not pulled: prefetched images already take the node's budget of {} MiB", budget >> 20);
                    set(i, &|h| h.detail = detail.clone());
                    return;
                }
                set(i, &|h| h.detail = "pulling".into());
                let started = tokio::time::Instant::now();
                match engine.pull(image, &wanted.auth).await {
                    Ok(()) => {
                        let found = engine.inspect_image(image).await;
                        if let Some((_, size)) = &found {
                            used.fetch_add(*size, Ordering::Relaxed);
                        }
                        tracing::info!(%image, secs = started.elapsed().as_secs_f64(), "prefetched an image");
                        set(i, &|h| {
                            h.present = found.is_some();
                            h.digest = found.as_ref().and_then(|(d, _)| d.clone());
                            h.detail = String::new();
                        });
                    }
                    Err(e) => {
                        tracing::warn!(%image, error = %e, "cannot prefetch an image");
                        set(i, &|h| h.detail = e.to_string());
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}
