//! Pull-request previews: stream `preview-<project id>.<number>`, one per pull (merge) request
//! of a linked repository. Each verified hook the forge sends about the request is recorded
//! here once (by its delivery id); the `previews` process makes the deployment `pr-<number>`
//! follow the latest one and posts the outcome back to the forge.
//!
//! As in `identity`, field and variant order is part of the stored format.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::Forge;

/// The deployment a preview runs as: `pr-<number>`.
pub fn preview_name(number: u64) -> String {
    format!("pr-{number}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewEvent {
    Requested(PreviewRequested),
}

/// What a pull request now asks of its preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PreviewWish {
    /// Run the request's head commit: opened, reopened or pushed to.
    Deploy {
        /// The deployment that will run it (fresh for every commit asked for).
        deployment_id: Uuid,
    },
    /// Gone: closed or merged.
    Remove { merged: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewRequested {
    pub project_id: Uuid,
    pub project: String,
    pub number: u64,
    pub forge: Forge,
    /// The forge's delivery id (`X-GitHub-Delivery`, GitLab's `Idempotency-Key`): a replay of
    /// one already recorded changes nothing.
    pub delivery: String,
    /// The forge's name for what happened (`opened`, `synchronize`, `close`…), as sent.
    pub action: String,
    pub wish: PreviewWish,
    pub head_sha: String,
    /// The service's tag the preview runs, from the link's rule.
    pub tag: String,
    pub title: String,
    /// The request's page on the forge.
    pub url: String,
    /// Who on the forge caused it.
    pub sender: String,
    /// When the forge last changed the pull request, as its signed payload says (`updated_at`),
    /// in microseconds since the epoch; 0 when it did not say (and in schema version 1). A hook
    /// older than one recorded is a replay: a closed request is not reopened by it.
    pub updated_at: i64,
}
