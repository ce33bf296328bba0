//! A deployment's life, in two halves kept apart as Nomad keeps an allocation's desired status
//! apart from its client status: what is wanted of it ([`Desired`]: run it, remove it) and what
//! is seen of it ([`Observed`]: pending, placed, deploying, running, failed, gone). [`Life`]
//! holds the pair and [`Life::after`] is the only transition function, which the `Deployment`
//! aggregate and the read model both follow.
//!
//! Everything users see is derived from the pair here, in one place: the [`Phase`] (the read
//! model's name), the API's [`DeploymentStatus`] and [`Stage`], and what a user may do in each.
//! Vocabulary, so it lives on the floor every crate may stand on.

use crate::deployment::*;

crate::named_enum! {
    /// Where a deployment is in its life as users see it: derived from its [`Life`] by
    /// [`Life::phase`], never decided on its own (its name: the read model's).
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

crate::named_enum! {
    /// What is wanted of a deployment: the user's (or the reaper's) side of its life.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Desired {
        /// Place it and run it (from its request, again on a retry).
        Run = "run",
        /// Remove it and everything it runs (a delete, a cancel or its expiry).
        Remove = "remove",
    }
}

crate::named_enum! {
    /// What is seen of a deployment: the saga's placement and what its node's agent reports.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Observed {
        /// Not placed yet: no node has anything of it.
        Pending = "pending",
        /// Placed on a node (its capacity reserved) whose agent has not started it.
        Scheduled = "scheduled",
        /// Its pipeline runs on its node.
        Deploying = "deploying",
        /// Every step succeeded and every service answered its health check.
        Running = "running",
        /// Its run failed and rolled back: nothing of it runs.
        Failed = "failed",
        /// Its node removed everything it had (or it never ran anywhere).
        Gone = "gone",
        /// It could never be placed (its name was taken or no node had room): nothing ran.
        Rejected = "rejected",
    }
}

impl Observed {
    /// Its run is still being made: a removal now interrupts it (a cancel).
    pub fn creating(self) -> bool {
        matches!(self, Observed::Pending | Observed::Scheduled | Observed::Deploying)
    }
    /// Its node has (or is making) something of it.
    pub fn placed(self) -> bool {
        matches!(self, Observed::Scheduled | Observed::Deploying | Observed::Running)
    }
}

/// A deployment's life: the wanted half, the seen half and one fact of its history, from which
/// everything shown is derived ([`Life::phase`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Life {
    pub desired: Desired,
    pub observed: Observed,
    /// Its removal was asked while its run was being made: it ends CANCELLED, not DELETED.
    /// (What users call a cancel is a removal that interrupted a run.)
    pub cancelled: bool,
}

impl Life {
    /// Every combination, reachable or not (for a read model's `CASE`).
    pub fn all() -> impl Iterator<Item = Life> {
        Desired::ALL
            .into_iter()
            .flat_map(|desired| Observed::ALL.into_iter().flat_map(move |observed| [false, true].map(|cancelled| Life { desired, observed, cancelled })))
    }

    /// The life after `event` (`None`: before the request). The only transition function:
    /// the aggregate and the read model both follow it.
    pub fn after(life: Option<Life>, event: &DeploymentEvent) -> Option<Life> {
        let requested = Life { desired: Desired::Run, observed: Observed::Pending, cancelled: false };
        let seen = |observed| life.map(|l| Life { observed, ..l });
        match event {
            DeploymentEvent::Requested(_) | DeploymentEvent::Retried(_) => Some(requested),
            DeploymentEvent::Scheduled(_) => seen(Observed::Scheduled),
            DeploymentEvent::RunStarted(_) => seen(Observed::Deploying),
            DeploymentEvent::Running(_) => seen(Observed::Running),
            DeploymentEvent::Failed(_) => seen(Observed::Failed),
            DeploymentEvent::Rejected(_) => seen(Observed::Rejected),
            DeploymentEvent::Removed(_) => seen(Observed::Gone),
            DeploymentEvent::DeletionRequested(_) => life.map(|l| match l.desired {
                Desired::Run => Life { desired: Desired::Remove, cancelled: l.observed.creating(), ..l },
                Desired::Remove => l,
            }),
            DeploymentEvent::StepChanged(_) | DeploymentEvent::HealthChanged(_) | DeploymentEvent::EndpointsChanged(_) | DeploymentEvent::Extended(_) => life,
        }
    }

    /// The phase users see: the one place the pair is read as one.
    pub fn phase(self) -> Phase {
        match (self.desired, self.observed) {
            (_, Observed::Rejected) => Phase::Rejected,
            (Desired::Run, Observed::Pending) => Phase::Pending,
            (Desired::Run, Observed::Scheduled) => Phase::Scheduled,
            (Desired::Run, Observed::Deploying) => Phase::Deploying,
            (Desired::Run, Observed::Running) => Phase::Running,
            (Desired::Run, Observed::Failed) => Phase::Failed,
            // Only a removal makes a deployment gone; were its node ever to lose one it should
            // run, it would show as removed too.
            (_, Observed::Gone) if self.cancelled => Phase::Cancelled,
            (_, Observed::Gone) => Phase::Deleted,
            (Desired::Remove, _) if self.cancelled => Phase::Cancelling,
            (Desired::Remove, _) => Phase::Deleting,
        }
    }

    /// Wanted running and not placed yet: the deployment saga places it.
    pub fn awaiting_placement(self) -> bool {
        self.desired == Desired::Run && self.observed == Observed::Pending
    }

    /// Its node should run it: wanted running and placed there.
    pub fn on_node(self) -> bool {
        self.desired == Desired::Run && self.observed.placed()
    }

    /// Its node should remove what it has of it: wanted removed and not yet seen gone.
    pub fn removing(self) -> bool {
        self.desired == Desired::Remove && !matches!(self.observed, Observed::Gone | Observed::Rejected)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn requested() -> DeploymentEvent {
        DeploymentEvent::Requested(DeploymentRequested {
            deployment_id: uuid::Uuid::nil(),
            project_id: uuid::Uuid::nil(),
            project: "shop".into(),
            environment: "staging".into(),
            name: "pr-1".into(),
            versions: vec![],
            pipeline_version: 1,
            plan: DeploymentPlan { steps: vec![], edges: vec![] },
            cpu_millis: 1,
            memory_mib: 1,
            lifetime_secs: 1,
            expires_at: 1,
        })
    }
    fn scheduled() -> DeploymentEvent {
        DeploymentEvent::Scheduled(DeploymentScheduled { node_id: uuid::Uuid::nil() })
    }
    fn failed() -> DeploymentEvent {
        DeploymentEvent::Failed(DeploymentFailed { step: None, reason: "exit code 1".into(), exit_code: Some(1), oom_killed: false })
    }
    fn delete() -> DeploymentEvent {
        DeploymentEvent::DeletionRequested(DeletionRequested { reason: DeletionReason::User })
    }
    fn removed() -> DeploymentEvent {
        DeploymentEvent::Removed(DeploymentRemoved {})
    }
    fn running() -> DeploymentEvent {
        DeploymentEvent::Running(DeploymentRunning { endpoints: vec![] })
    }

    /// The phases a deployment shows along `events`.
    fn phases(events: &[DeploymentEvent]) -> Vec<Phase> {
        let mut life = None;
        events
            .iter()
            .map(|e| {
                life = Life::after(life, e);
                life.map_or(Phase::Pending, Life::phase)
            })
            .collect()
    }

    #[test]
    fn a_run_is_wanted_then_seen_placed_deploying_and_running() {
        let events = [requested(), scheduled(), DeploymentEvent::RunStarted(RunStarted {}), running()];
        assert_eq!(phases(&events), [Phase::Pending, Phase::Scheduled, Phase::Deploying, Phase::Running]);
    }

    #[test]
    fn a_removal_while_the_run_is_made_is_a_cancel_and_ends_cancelled() {
        let events = [requested(), scheduled(), delete(), removed()];
        assert_eq!(phases(&events), [Phase::Pending, Phase::Scheduled, Phase::Cancelling, Phase::Cancelled]);
        let mut life = None;
        for e in &events[..3] {
            life = Life::after(life, e);
        }
        let life = life.unwrap();
        // Wanted removed, still seen on its node: the node is told to remove it.
        assert_eq!((life.desired, life.observed), (Desired::Remove, Observed::Scheduled));
        assert!(life.removing() && !life.on_node());
    }

    #[test]
    fn a_removal_of_a_running_or_failed_run_is_a_delete_and_a_second_one_changes_nothing() {
        let events = [requested(), scheduled(), running(), delete(), delete(), removed()];
        assert_eq!(phases(&events), [Phase::Pending, Phase::Scheduled, Phase::Running, Phase::Deleting, Phase::Deleting, Phase::Deleted]);
        let events = [requested(), scheduled(), failed(), delete(), removed()];
        assert_eq!(phases(&events), [Phase::Pending, Phase::Scheduled, Phase::Failed, Phase::Deleting, Phase::Deleted]);
    }

    #[test]
    fn a_retry_wants_a_run_again_from_the_start() {
        let retried = DeploymentEvent::Retried(DeploymentRetried { pipeline_version: 2, plan: DeploymentPlan { steps: vec![], edges: vec![] } });
        let events =
            [requested(), scheduled(), failed(), retried, DeploymentEvent::Rejected(DeploymentRejected { code: RejectionCode::NoRoom, reason: "full".into() })];
        assert_eq!(phases(&events), [Phase::Pending, Phase::Scheduled, Phase::Failed, Phase::Pending, Phase::Rejected]);
    }

    #[test]
    fn the_phase_rules_agree_with_the_pair_they_are_derived_from() {
        for life in Life::all() {
            let phase = life.phase();
            if life.desired == Desired::Run && life.observed == Observed::Gone {
                continue; // Never reached: only a removal makes a deployment gone.
            }
            assert_eq!(phase.on_node(), life.on_node(), "{life:?}");
            assert_eq!(phase.removing(), life.removing(), "{life:?}");
            if life.desired == Desired::Run {
                assert_eq!(phase.creating(), life.observed.creating(), "{life:?}");
            }
        }
    }
}
