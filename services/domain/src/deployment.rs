//! Deployments (stream `deployment-<deployment id>`): requested by a user with FULL access on a
//! node whose capacity was reserved first (see `capacity`), run by that node's agent, ended by a
//! failure, a delete or expiry.
//!
//! The agent's reports arrive through the connector as commands of the platform itself; a report
//! that does not fit the current state (a late step after a cancel, a second "running") changes
//! nothing. Deleting a deployment that is still being created cancels it: the agent rolls back,
//! and the end is CANCELLED instead of DELETED.

use nullops_events::catalog::Access;
use nullops_events::deployment::*;
use nullops_events::DomainEvent;
use uuid::Uuid;

use crate::{access, Decider, DnsLabel, DomainError, Issuer};

pub struct DeploymentCommand {
    pub by: Issuer,
    pub action: DeploymentAction,
}

pub enum DeploymentAction {
    /// `access`: the caller's access to the project or environment. `node_id`: the node whose
    /// capacity is already reserved for it.
    Create { access: Option<Access>, request: DeploymentRequested, name: DnsLabel, node_id: Uuid },
    Delete { access: Option<Access>, reason: DeletionReason },
    /// `now`: microseconds since the epoch.
    Extend { access: Option<Access>, now: i64 },
    /// The agent's reports.
    RunStarted,
    Step(StepChanged),
    Health(HealthChanged),
    Running,
    Failed(DeploymentFailed),
    Removed,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// Not requested (no such deployment).
    #[default]
    Absent,
    Pending,
    Scheduled,
    Deploying,
    Running,
    Failed,
    /// Being removed; `cancelling` when it was still being created.
    Deleting { cancelling: bool },
    Cancelled,
    Deleted,
}

impl Phase {
    /// Still being created: a delete now is a cancel.
    fn creating(self) -> bool {
        matches!(self, Phase::Pending | Phase::Scheduled | Phase::Deploying)
    }
    fn ended(self) -> bool {
        matches!(self, Phase::Cancelled | Phase::Deleted)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentState {
    pub request: Option<DeploymentRequested>,
    pub node_id: Option<Uuid>,
    pub phase: Phase,
    pub expires_at: i64,
}

pub struct Deployment;

impl Decider for Deployment {
    type Command = DeploymentCommand;
    type Event = DeploymentEvent;
    type State = DeploymentState;
    const KIND: &'static str = "deployment";

    fn decide(command: &DeploymentCommand, state: &DeploymentState) -> Result<Vec<DeploymentEvent>, DomainError> {
        use DeploymentAction::*;
        let what = || state.request.as_ref().map_or_else(|| "the deployment".to_owned(), |r| format!("deployment {}", r.name));
        let report = matches!(command.action, RunStarted | Step(_) | Health(_) | Running | Failed(_) | Removed);
        if report && command.by != Issuer::System {
            return Err(DomainError::Forbidden("only the platform reports on a deployment's run".into()));
        }
        if !matches!(command.action, Create { .. }) && state.phase == Phase::Absent {
            return Err(DomainError::NotFound("no such deployment".into()));
        }
        let none = Ok(vec![]);
        match &command.action {
            Create { access, request, name, node_id } => {
                access::require(*access, Access::Full, &format!("project {}", request.project))?;
                if state.phase != Phase::Absent {
                    return Err(DomainError::AlreadyExists(format!("deployment {} exists", request.deployment_id)));
                }
                let request = DeploymentRequested { name: name.as_str().to_owned(), ..request.clone() };
                Ok(vec![DeploymentEvent::Requested(request), DeploymentEvent::Scheduled(DeploymentScheduled { node_id: *node_id })])
            }
            Delete { access, reason } => {
                if *reason == DeletionReason::User || command.by != Issuer::System {
                    access::require(*access, Access::Full, &what())?;
                }
                match state.phase {
                    Phase::Deleting { .. } | Phase::Cancelled | Phase::Deleted => none,
                    _ => Ok(vec![DeploymentEvent::DeletionRequested(DeletionRequested { reason: *reason })]),
                }
            }
            Extend { access, now } => {
                access::require(*access, Access::Full, &what())?;
                if state.phase.ended() || matches!(state.phase, Phase::Deleting { .. }) {
                    return Err(DomainError::Conflict(format!("{} is being deleted or gone", what())));
                }
                let lifetime = state.request.as_ref().map_or(0, |r| r.lifetime_secs);
                let expires_at = now.saturating_add(i64::try_from(lifetime.saturating_mul(1_000_000)).unwrap_or(i64::MAX));
                Ok(vec![DeploymentEvent::Extended(DeploymentExtended { expires_at })])
            }
            RunStarted if state.phase == Phase::Scheduled => Ok(vec![DeploymentEvent::RunStarted(nullops_events::deployment::RunStarted {})]),
            Step(step) if matches!(state.phase, Phase::Deploying | Phase::Deleting { cancelling: true }) => Ok(vec![DeploymentEvent::StepChanged(step.clone())]),
            Health(h) if matches!(state.phase, Phase::Deploying | Phase::Running) => Ok(vec![DeploymentEvent::HealthChanged(h.clone())]),
            Running if state.phase == Phase::Deploying => Ok(vec![DeploymentEvent::Running(DeploymentRunning {})]),
            Failed(f) if matches!(state.phase, Phase::Scheduled | Phase::Deploying) => Ok(vec![DeploymentEvent::Failed(f.clone())]),
            Removed if matches!(state.phase, Phase::Deleting { .. }) => Ok(vec![DeploymentEvent::Removed(DeploymentRemoved {})]),
            // A report that does not fit (late, repeated, after a cancel) changes nothing.
            RunStarted | Step(_) | Health(_) | Running | Failed(_) | Removed => none,
        }
    }

    fn evolve(mut state: DeploymentState, event: &DeploymentEvent) -> DeploymentState {
        match event {
            DeploymentEvent::Requested(r) => {
                state.expires_at = r.expires_at;
                state.request = Some(r.clone());
                state.phase = Phase::Pending;
            }
            DeploymentEvent::Scheduled(s) => {
                state.node_id = Some(s.node_id);
                state.phase = Phase::Scheduled;
            }
            DeploymentEvent::RunStarted(_) => state.phase = Phase::Deploying,
            DeploymentEvent::StepChanged(_) | DeploymentEvent::HealthChanged(_) => {}
            DeploymentEvent::Running(_) => state.phase = Phase::Running,
            DeploymentEvent::Failed(_) => state.phase = Phase::Failed,
            DeploymentEvent::DeletionRequested(_) => state.phase = Phase::Deleting { cancelling: state.phase.creating() },
            DeploymentEvent::Removed(_) => {
                state.phase = match state.phase {
                    Phase::Deleting { cancelling: true } => Phase::Cancelled,
                    _ => Phase::Deleted,
                }
            }
            DeploymentEvent::Extended(e) => state.expires_at = e.expires_at,
        }
        state
    }

    fn select(event: DomainEvent) -> Option<DeploymentEvent> {
        match event {
            DomainEvent::Deployment(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold;

    const HOUR: i64 = 3_600_000_000;

    fn request() -> DeploymentRequested {
        DeploymentRequested {
            deployment_id: Uuid::from_u128(7),
            project_id: Uuid::from_u128(1),
            project: "shop".into(),
            environment: "staging".into(),
            name: String::new(),
            versions: vec![ChosenVersion { service: "api".into(), image: "shop/api".into(), tag: "v2".into() }],
            pipeline_version: 3,
            cpu_millis: 500,
            memory_mib: 256,
            lifetime_secs: 3600,
            expires_at: HOUR,
        }
    }
    fn create(access: Option<Access>) -> DeploymentAction {
        DeploymentAction::Create { access, request: request(), name: DnsLabel::parse("name", "pr-42").unwrap(), node_id: Uuid::from_u128(9) }
    }
    fn when(given: &[DeploymentEvent], by: Issuer, action: DeploymentAction) -> Result<Vec<DeploymentEvent>, DomainError> {
        Deployment::decide(&DeploymentCommand { by, action }, &fold::<Deployment>(given))
    }
    fn created() -> Vec<DeploymentEvent> {
        when(&[], Issuer::System, create(Some(Access::Full))).unwrap()
    }
    fn then(mut given: Vec<DeploymentEvent>, action: DeploymentAction) -> Vec<DeploymentEvent> {
        let new = when(&given, Issuer::System, action).unwrap();
        given.extend(new);
        given
    }
    fn phase(given: &[DeploymentEvent]) -> Phase {
        fold::<Deployment>(given).phase
    }
    fn failure() -> DeploymentFailed {
        DeploymentFailed { step: Some("migrate".into()), reason: "exit code 1".into(), exit_code: Some(1), oom_killed: false }
    }

    #[test]
    fn full_access_creates_it_scheduled_on_the_reserved_node() {
        let events = created();
        assert!(matches!(&events[..], [DeploymentEvent::Requested(r), DeploymentEvent::Scheduled(s)] if r.name == "pr-42" && s.node_id == Uuid::from_u128(9)));
        assert_eq!(phase(&events), Phase::Scheduled);
        for access in [None, Some(Access::ReadOnly)] {
            assert!(matches!(when(&[], Issuer::System, create(access)), Err(DomainError::Forbidden(_))));
        }
        assert!(matches!(when(&events, Issuer::System, create(Some(Access::Full))), Err(DomainError::AlreadyExists(_))));
    }

    #[test]
    fn the_agent_reports_take_it_to_running_and_late_reports_change_nothing() {
        let running = then(then(created(), DeploymentAction::RunStarted), DeploymentAction::Running);
        assert_eq!(phase(&running), Phase::Running);
        assert_eq!(when(&running, Issuer::System, DeploymentAction::Running), Ok(vec![]));
        assert_eq!(when(&running, Issuer::System, DeploymentAction::Failed(failure())), Ok(vec![]));
        let user = Issuer::User(crate::Principal { username: crate::Username::parse("bob").unwrap(), role: nullops_events::identity::Role::Admin });
        assert!(matches!(when(&running, user, DeploymentAction::Removed), Err(DomainError::Forbidden(_))));
    }

    #[test]
    fn a_failed_run_ends_failed_and_can_then_be_deleted() {
        let failed = then(then(created(), DeploymentAction::RunStarted), DeploymentAction::Failed(failure()));
        assert_eq!(phase(&failed), Phase::Failed);
        let deleted = then(then(failed, DeploymentAction::Delete { access: Some(Access::Full), reason: DeletionReason::User }), DeploymentAction::Removed);
        assert_eq!(phase(&deleted), Phase::Deleted);
    }

    #[test]
    fn deleting_while_creating_is_a_cancel() {
        let deploying = then(created(), DeploymentAction::RunStarted);
        let cancelling = then(deploying, DeploymentAction::Delete { access: Some(Access::Full), reason: DeletionReason::User });
        assert_eq!(phase(&cancelling), Phase::Deleting { cancelling: true });
        // The agent's rollback steps are still recorded; a late "running" is not.
        let step = StepChanged { step: "db".into(), state: StepState::RolledBack, detail: String::new() };
        assert_eq!(when(&cancelling, Issuer::System, DeploymentAction::Step(step)).unwrap().len(), 1);
        assert_eq!(when(&cancelling, Issuer::System, DeploymentAction::Running), Ok(vec![]));
        assert_eq!(phase(&then(cancelling.clone(), DeploymentAction::Removed)), Phase::Cancelled);
        // Deleting twice is one deletion.
        assert_eq!(when(&cancelling, Issuer::System, DeploymentAction::Delete { access: Some(Access::Full), reason: DeletionReason::User }), Ok(vec![]));
    }

    #[test]
    fn only_full_access_deletes_but_the_reaper_deletes_expired_ones() {
        let running = then(then(created(), DeploymentAction::RunStarted), DeploymentAction::Running);
        let user = || Issuer::User(crate::Principal { username: crate::Username::parse("bob").unwrap(), role: nullops_events::identity::Role::User });
        let by_user = when(&running, user(), DeploymentAction::Delete { access: Some(Access::ReadOnly), reason: DeletionReason::User });
        assert!(matches!(by_user, Err(DomainError::Forbidden(_))));
        let expired = when(&running, Issuer::System, DeploymentAction::Delete { access: None, reason: DeletionReason::Expired }).unwrap();
        assert_eq!(expired, vec![DeploymentEvent::DeletionRequested(DeletionRequested { reason: DeletionReason::Expired })]);
    }

    #[test]
    fn extending_resets_the_whole_lifetime_from_now() {
        let running = then(then(created(), DeploymentAction::RunStarted), DeploymentAction::Running);
        let extended = when(&running, Issuer::System, DeploymentAction::Extend { access: Some(Access::Full), now: 10 * HOUR }).unwrap();
        assert_eq!(extended, vec![DeploymentEvent::Extended(DeploymentExtended { expires_at: 11 * HOUR })]);
        let deleting = then(running, DeploymentAction::Delete { access: Some(Access::Full), reason: DeletionReason::User });
        assert!(matches!(when(&deleting, Issuer::System, DeploymentAction::Extend { access: Some(Access::Full), now: 0 }), Err(DomainError::Conflict(_))));
        assert!(matches!(when(&[], Issuer::System, DeploymentAction::Extend { access: Some(Access::Full), now: 0 }), Err(DomainError::NotFound(_))));
    }
}
