//! A deployment's phases: the one home of their names (the read model stores them, the API's
//! states are derived from them), the rules about them (which are ended, which hold room, what
//! a user may do in each) and [`Phase::after`], the only transition function, which the
//! `Deployment` aggregate, the read model and the ingress all follow. Vocabulary, so it lives on
//! the floor every crate may stand on.

use crate::deployment::*;

crate::named_enum! {
    /// Where a deployment is in its life (its name: the read model's).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Phase {
        /// Requested (or retried): waiting for the saga to give it a name and a node.
        Pending = "pending",
        /// Placed on a node whose agent has not started it yet.
        Scheduled = "scheduled",
        /// Its pipeline runs.
        Deploying = "deploying",
        /// Every step succeeded and every service is healthy.
        Running = "running",
        /// A step failed (or the run could not start); everything the run created was removed.
        Failed = "failed",
        /// Deleted while being created: its node rolls back what the run made.
        Cancelling = "cancelling",
        /// Deleted: its node removes everything it had.
        Deleting = "deleting",
        Cancelled = "cancelled",
        Deleted = "deleted",
        /// Never placed: its name was taken or no node had room. Nothing ran.
        Rejected = "rejected",
    }
}

impl Phase {
    /// The names of the phases for which `rule` holds (for a read model's `IN (...)`).
    pub fn names_where(rule: fn(Phase) -> bool) -> Vec<&'static str> {
        Self::ALL.into_iter().filter(|p| rule(*p)).map(Phase::name).collect()
    }

    /// Still being created: a delete now is a cancel.
    pub fn creating(self) -> bool {
        matches!(self, Phase::Pending | Phase::Scheduled | Phase::Deploying)
    }
    /// Gone for good: its name and capacity are free.
    pub fn ended(self) -> bool {
        matches!(self, Phase::Cancelled | Phase::Deleted | Phase::Rejected)
    }
    /// Its node should run it (or be running it).
    pub fn on_node(self) -> bool {
        matches!(self, Phase::Scheduled | Phase::Deploying | Phase::Running)
    }
    /// Its node is removing it.
    pub fn removing(self) -> bool {
        matches!(self, Phase::Cancelling | Phase::Deleting)
    }
    /// Not being deleted and not gone: its URLs answer (or say why they cannot).
    pub fn live(self) -> bool {
        !self.removing() && !self.ended()
    }
    /// Which of the groups clients show it in.
    pub fn stage(self) -> Stage {
        if self.ended() {
            Stage::Ended
        } else if self.removing() {
            Stage::Removing
        } else {
            Stage::Live
        }
    }
    /// Whether it holds capacity on its node: from placement until it failed or its node
    /// removed everything.
    pub fn holds_capacity(self) -> bool {
        self.on_node() || self.removing()
    }

    /// Whether a user with FULL access may `action` it in this phase: the rules `decide`
    /// applies, told ahead so that a client offers only what will be accepted.
    pub fn allows(self, action: UserAction) -> bool {
        match action {
            UserAction::Cancel => self.creating(),
            UserAction::Delete => matches!(self, Phase::Running | Phase::Failed),
            UserAction::Retry => self == Phase::Failed,
            UserAction::Extend => self.live(),
            UserAction::Clone => true,
        }
    }

    /// The phase after `event` (`None`: before the request). The only transition function:
    /// the aggregate and the read model both follow it.
    pub fn after(phase: Option<Phase>, event: &DeploymentEvent) -> Option<Phase> {
        Some(match event {
            DeploymentEvent::Requested(_) | DeploymentEvent::Retried(_) => Phase::Pending,
            DeploymentEvent::Scheduled(_) => Phase::Scheduled,
            DeploymentEvent::RunStarted(_) => Phase::Deploying,
            DeploymentEvent::Running(_) => Phase::Running,
            DeploymentEvent::Failed(_) => Phase::Failed,
            DeploymentEvent::Rejected(_) => Phase::Rejected,
            DeploymentEvent::DeletionRequested(_) => match phase {
                Some(p) if p.creating() => Phase::Cancelling,
                _ => Phase::Deleting,
            },
            DeploymentEvent::Removed(_) => match phase {
                Some(Phase::Cancelling) => Phase::Cancelled,
                _ => Phase::Deleted,
            },
            DeploymentEvent::StepChanged(_) | DeploymentEvent::HealthChanged(_) | DeploymentEvent::EndpointsChanged(_) | DeploymentEvent::Extended(_) => {
                return phase
            }
        })
    }
}

/// What a user may do to a deployment (each needs FULL access), in the words a user would use:
/// a delete while it is being created is a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserAction {
    /// Stop it being created; its node rolls back what ran.
    Cancel,
    /// Remove it and everything it runs.
    Delete,
    /// Run a failed deployment again under its name.
    Retry,
    /// Reset its lifetime in full, from now.
    Extend,
    /// Deploy the same services again under a new name.
    Clone,
}

impl UserAction {
    pub const ALL: [UserAction; 5] = [UserAction::Cancel, UserAction::Delete, UserAction::Retry, UserAction::Extend, UserAction::Clone];
}

crate::named_enum! {
    /// The groups of phases clients show apart: a console greys out ended deployments, the CLI
    /// waits for a deletion until its deployment has ended. Derived from [`Phase`], so no client
    /// keeps its own list of which states are which. (Its name: the API's `DeploymentStage`.)
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Stage {
        /// Asked for and not being deleted: being placed or run, running, or failed.
        Live = "LIVE",
        /// Being deleted or cancelled: its node is removing what it made.
        Removing = "REMOVING",
        /// Gone for good: its name and room are free again.
        Ended = "ENDED",
    }
}

crate::named_enum! {
    /// What a deployment shows: its phase, except that one its node should be running shows
    /// OFFLINE while that node is. (Its name: the API's `DeploymentState`, what clients compare
    /// with.)
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DeploymentStatus {
        Pending = "PENDING",
        Scheduled = "SCHEDULED",
        Deploying = "DEPLOYING",
        Running = "RUNNING",
        Failed = "FAILED",
        /// Its node is offline: it carries on there and is taken up again when the node is back.
        Offline = "OFFLINE",
        Cancelling = "CANCELLING",
        Deleting = "DELETING",
        Cancelled = "CANCELLED",
        Deleted = "DELETED",
        Rejected = "REJECTED",
    }
}

/// The status rule, for the API.
pub fn status(phase: Phase, node_online: bool) -> DeploymentStatus {
    if phase.on_node() && !node_online {
        return DeploymentStatus::Offline;
    }
    match phase {
        Phase::Pending => DeploymentStatus::Pending,
        Phase::Scheduled => DeploymentStatus::Scheduled,
        Phase::Deploying => DeploymentStatus::Deploying,
        Phase::Running => DeploymentStatus::Running,
        Phase::Failed => DeploymentStatus::Failed,
        Phase::Cancelling => DeploymentStatus::Cancelling,
        Phase::Deleting => DeploymentStatus::Deleting,
        Phase::Cancelled => DeploymentStatus::Cancelled,
        Phase::Deleted => DeploymentStatus::Deleted,
        Phase::Rejected => DeploymentStatus::Rejected,
    }
}
