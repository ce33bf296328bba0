//! Placements decided in batches, as a database commits in groups: each placement waiting for
//! room queues its ask; whoever finds no batch being decided takes every ask queued so far and
//! decides them together ([`Admission::reserve_each`]: the nodes read once, one append per
//! node), and hands each its answer. The asks queued meanwhile form the next batch. One at a
//! time, a batch is one ask: the same path.
//!
//! The queue is bounded by the saga's concurrency: each ask in it is a reaction waiting.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::admission::{Admission, Ask, Placement};
use crate::SagaError;

/// An ask waiting for the next batch, and where its answer goes.
struct Queued {
    environment: String,
    ask: Ask,
    answer: oneshot::Sender<Result<Placement, Arc<SagaError>>>,
}

#[derive(Default)]
pub struct Placements {
    queued: Mutex<Vec<Queued>>,
    /// Held by whoever decides a batch now.
    deciding: tokio::sync::Mutex<()>,
}

impl Placements {
    /// Room for `ask` on a node of `environment`, decided in a batch with the asks waiting
    /// beside it.
    pub async fn place(&self, admission: &Admission<'_>, environment: &str, ask: Ask) -> Result<Placement, SagaError> {
        let (answer, mut answered) = oneshot::channel();
        self.queue().push(Queued { environment: environment.to_owned(), ask, answer });
        let answer = tokio::select! {
            // Decided in a batch someone else took.
            answer = &mut answered => answer,
            _deciding = self.deciding.lock() => match answered.try_recv() {
                Ok(answer) => Ok(answer),
                Err(_) => {
                    let batch = std::mem::take(&mut *self.queue());
                    decide(admission, batch).await;
                    answered.await
                }
            },
        };
        match answer {
            Ok(answer) => answer.map_err(SagaError::Batch),
            // The one deciding the batch was stopped midway: the runner reacts again.
            Err(_) => Err(SagaError::Abandoned),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Decides `batch`, an environment at a time, and answers each ask.
async fn decide(admission: &Admission<'_>, mut batch: Vec<Queued>) {
    while let Some(environment) = batch.first().map(|q| q.environment.clone()) {
        let (these, rest): (Vec<Queued>, Vec<Queued>) = batch.into_iter().partition(|q| q.environment == environment);
        batch = rest;
        let asks: Vec<Ask> = these.iter().map(|q| q.ask.clone()).collect();
        match admission.reserve_each(&environment, &asks).await {
            Ok(placements) => {
                for (q, placement) in these.into_iter().zip(placements) {
                    let _ = q.answer.send(Ok(placement));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for q in these {
                    let _ = q.answer.send(Err(e.clone()));
                }
            }
        }
    }
}
