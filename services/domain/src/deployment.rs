//! Deployments (stream `deployment-<deployment id>`): requested by a user with FULL access on a
//! node whose capacity was reserved first (see `capacity`), run by that node's agent, ended by a
//! failure, a delete or expiry.
//!
//! The agent's reports arrive through the connector as commands of the platform itself; a report
//! that does not fit the current state (a late step after a cancel, a second "running") changes
//! nothing. Deleting a deployment that is still being created cancels it: the agent rolls back,
//! and the end is CANCELLED instead of DELETED.

use std::collections::BTreeMap;

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
    /// Runs a failed deployment again with `plan` on `node_id`, whose capacity is reserved.
    Retry { access: Option<Access>, pipeline_version: u32, plan: DeploymentPlan, node_id: Uuid },
    Delete { access: Option<Access>, reason: DeletionReason },
    /// `now`: microseconds since the epoch.
    Extend { access: Option<Access>, now: i64 },
    /// What the agent reports about run number `attempt`, in order; reports about an earlier
    /// attempt change nothing.
    Report { attempt: u32, reports: Vec<RunReport> },
    /// The agent no longer has anything of the deployment.
    Removed,
}

/// The agent's view of a run, as the connector passes it on. A report that only repeats what
/// the log already says emits nothing, so the connector may send the agent's whole view again.
pub enum RunReport {
    Started,
    Step(StepChanged),
    Health(HealthChanged),
    Running { endpoints: Vec<Endpoint> },
    Failed(DeploymentFailed),
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
    pub fn creating(self) -> bool {
        matches!(self, Phase::Pending | Phase::Scheduled | Phase::Deploying)
    }
    /// Gone for good.
    pub fn ended(self) -> bool {
        matches!(self, Phase::Cancelled | Phase::Deleted)
    }
    /// Whether its node should run it (or be running it).
    pub fn on_node(self) -> bool {
        matches!(self, Phase::Scheduled | Phase::Deploying | Phase::Running)
    }
    /// Whether it holds capacity on its node: until its node removed everything.
    pub fn holds_capacity(self) -> bool {
        !matches!(self, Phase::Absent | Phase::Cancelled | Phase::Deleted)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentState {
    pub request: Option<DeploymentRequested>,
    pub node_id: Option<Uuid>,
    pub phase: Phase,
    pub expires_at: i64,
    /// Runs so far: 1 after the request, one more per retry.
    pub attempt: u32,
    /// The current run's pipeline nodes and services, as last reported.
    pub steps: BTreeMap<String, StepState>,
    pub health: BTreeMap<String, bool>,
    /// Where its services are published, once running.
    pub endpoints: Vec<Endpoint>,
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
        if matches!(command.action, Report { .. } | Removed) && command.by != Issuer::System {
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
            Retry { access, pipeline_version, plan, node_id } => {
                access::require(*access, Access::Full, &what())?;
                if state.phase != Phase::Failed {
                    return Err(DomainError::Conflict(format!("{} has not failed: only a failed deployment is retried", what())));
                }
                Ok(vec![
                    DeploymentEvent::Retried(DeploymentRetried { pipeline_version: *pipeline_version, plan: plan.clone() }),
                    DeploymentEvent::Scheduled(DeploymentScheduled { node_id: *node_id }),
                ])
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
            Report { attempt, .. } if *attempt != state.attempt => none,
            Report { reports, .. } => {
                // Each report is decided against the state the previous ones lead to.
                let mut state = state.clone();
                let mut events = Vec::new();
                for report in reports {
                    for event in decide_report(report, &state) {
                        state = Self::evolve(state, &event);
                        events.push(event);
                    }
                }
                Ok(events)
            }
            Removed if matches!(state.phase, Phase::Deleting { .. }) => Ok(vec![DeploymentEvent::Removed(DeploymentRemoved {})]),
            // Late or repeated.
            Removed => none,
        }
    }

    fn evolve(mut state: DeploymentState, event: &DeploymentEvent) -> DeploymentState {
        match event {
            DeploymentEvent::Requested(r) => {
                state.expires_at = r.expires_at;
                state.request = Some(r.clone());
                state.phase = Phase::Pending;
                state.attempt = 1;
            }
            DeploymentEvent::Retried(r) => {
                state.endpoints.clear();
                if let Some(request) = state.request.as_mut() {
                    request.pipeline_version = r.pipeline_version;
                    request.plan = r.plan.clone();
                }
                state.phase = Phase::Pending;
                state.attempt += 1;
                state.steps.clear();
                state.health.clear();
            }
            DeploymentEvent::Scheduled(s) => {
                state.node_id = Some(s.node_id);
                state.phase = Phase::Scheduled;
            }
            DeploymentEvent::RunStarted(_) => state.phase = Phase::Deploying,
            DeploymentEvent::StepChanged(s) => {
                state.steps.insert(s.step.clone(), s.state);
            }
            DeploymentEvent::HealthChanged(h) => {
                state.health.insert(h.service.clone(), h.healthy);
            }
            DeploymentEvent::Running(r) => {
                state.phase = Phase::Running;
                state.endpoints = r.endpoints.clone();
            }
            DeploymentEvent::EndpointsChanged(e) => state.endpoints = e.endpoints.clone(),
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

/// What a report adds to the log: only what is new and fits the phase (a step or a health the
/// log already has, a late "running" after a cancel, a second failure change nothing).
fn decide_report(report: &RunReport, state: &DeploymentState) -> Vec<DeploymentEvent> {
    let phase = state.phase;
    match report {
        RunReport::Started if phase == Phase::Scheduled => vec![DeploymentEvent::RunStarted(RunStarted {})],
        RunReport::Step(step)
            if matches!(phase, Phase::Deploying | Phase::Running | Phase::Deleting { cancelling: true }) && state.steps.get(&step.step) != Some(&step.state) =>
        {
            vec![DeploymentEvent::StepChanged(step.clone())]
        }
        RunReport::Health(h) if matches!(phase, Phase::Deploying | Phase::Running) && state.health.get(&h.service) != Some(&h.healthy) => {
            vec![DeploymentEvent::HealthChanged(h.clone())]
        }
        RunReport::Running { endpoints } if phase == Phase::Deploying => vec![DeploymentEvent::Running(DeploymentRunning { endpoints: endpoints.clone() })],
        // Only a complete set: a service being recreated has no port for a moment.
        RunReport::Running { endpoints } if phase == Phase::Running && *endpoints != state.endpoints && endpoints.len() >= state.endpoints.len() => {
            vec![DeploymentEvent::EndpointsChanged(EndpointsChanged { endpoints: endpoints.clone() })]
        }
        RunReport::Failed(f) if matches!(phase, Phase::Scheduled | Phase::Deploying) => vec![DeploymentEvent::Failed(f.clone())],
        _ => vec![],
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
            plan: DeploymentPlan { steps: vec![], edges: vec![] },
            cpu_millis: 500,
            memory_mib: 256,
            lifetime_secs: 3600,
            expires_at: HOUR,
        }
    }
    fn create(access: Option<Access>) -> DeploymentAction {
        DeploymentAction::Create { access, request: request(), name: DnsLabel::parse("name", "pr-42").unwrap(), node_id: Uuid::from_u128(9) }
    }
    fn report(report: RunReport) -> DeploymentAction {
        DeploymentAction::Report { attempt: 1, reports: vec![report] }
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
        let running = then(then(created(), report(RunReport::Started)), report(RunReport::Running { endpoints: vec![] }));
        assert_eq!(phase(&running), Phase::Running);
        assert_eq!(when(&running, Issuer::System, report(RunReport::Running { endpoints: vec![] })), Ok(vec![]));
        assert_eq!(when(&running, Issuer::System, report(RunReport::Failed(failure()))), Ok(vec![]));
        let user = Issuer::User(crate::Principal { username: crate::Username::parse("bob").unwrap(), role: nullops_events::identity::Role::Admin });
        assert!(matches!(when(&running, user, DeploymentAction::Removed), Err(DomainError::Forbidden(_))));
    }

    #[test]
    fn a_failed_run_ends_failed_and_can_then_be_deleted() {
        let failed = then(then(created(), report(RunReport::Started)), report(RunReport::Failed(failure())));
        assert_eq!(phase(&failed), Phase::Failed);
        let deleted = then(then(failed, DeploymentAction::Delete { access: Some(Access::Full), reason: DeletionReason::User }), DeploymentAction::Removed);
        assert_eq!(phase(&deleted), Phase::Deleted);
    }

    #[test]
    fn deleting_while_creating_is_a_cancel() {
        let deploying = then(created(), report(RunReport::Started));
        let cancelling = then(deploying, DeploymentAction::Delete { access: Some(Access::Full), reason: DeletionReason::User });
        assert_eq!(phase(&cancelling), Phase::Deleting { cancelling: true });
        // The agent's rollback steps are still recorded; a late "running" is not.
        let step = || StepChanged { step: "db".into(), state: StepState::RolledBack, detail: String::new() };
        let rolled_back = then(cancelling.clone(), report(RunReport::Step(step())));
        assert_eq!(rolled_back.len(), cancelling.len() + 1);
        // The same report again (the agent resends its whole view) adds nothing.
        assert_eq!(when(&rolled_back, Issuer::System, report(RunReport::Step(step()))), Ok(vec![]));
        assert_eq!(when(&cancelling, Issuer::System, report(RunReport::Running { endpoints: vec![] })), Ok(vec![]));
        assert_eq!(phase(&then(cancelling.clone(), DeploymentAction::Removed)), Phase::Cancelled);
        // Deleting twice is one deletion.
        assert_eq!(when(&cancelling, Issuer::System, DeploymentAction::Delete { access: Some(Access::Full), reason: DeletionReason::User }), Ok(vec![]));
    }

    #[test]
    fn only_full_access_deletes_but_the_reaper_deletes_expired_ones() {
        let running = then(then(created(), report(RunReport::Started)), report(RunReport::Running { endpoints: vec![] }));
        let user = || Issuer::User(crate::Principal { username: crate::Username::parse("bob").unwrap(), role: nullops_events::identity::Role::User });
        let by_user = when(&running, user(), DeploymentAction::Delete { access: Some(Access::ReadOnly), reason: DeletionReason::User });
        assert!(matches!(by_user, Err(DomainError::Forbidden(_))));
        let expired = when(&running, Issuer::System, DeploymentAction::Delete { access: None, reason: DeletionReason::Expired }).unwrap();
        assert_eq!(expired, vec![DeploymentEvent::DeletionRequested(DeletionRequested { reason: DeletionReason::Expired })]);
    }

    #[test]
    fn extending_resets_the_whole_lifetime_from_now() {
        let running = then(then(created(), report(RunReport::Started)), report(RunReport::Running { endpoints: vec![] }));
        let extended = when(&running, Issuer::System, DeploymentAction::Extend { access: Some(Access::Full), now: 10 * HOUR }).unwrap();
        assert_eq!(extended, vec![DeploymentEvent::Extended(DeploymentExtended { expires_at: 11 * HOUR })]);
        let deleting = then(running, DeploymentAction::Delete { access: Some(Access::Full), reason: DeletionReason::User });
        assert!(matches!(when(&deleting, Issuer::System, DeploymentAction::Extend { access: Some(Access::Full), now: 0 }), Err(DomainError::Conflict(_))));
        assert!(matches!(when(&[], Issuer::System, DeploymentAction::Extend { access: Some(Access::Full), now: 0 }), Err(DomainError::NotFound(_))));
    }

    #[test]
    fn a_failed_deployment_is_retried_as_a_new_attempt_and_old_reports_are_ignored() {
        let failed = then(then(created(), report(RunReport::Started)), report(RunReport::Failed(failure())));
        let plan = DeploymentPlan { steps: vec![], edges: vec![] };
        let retry = |access| DeploymentAction::Retry { access, pipeline_version: 4, plan: plan.clone(), node_id: Uuid::from_u128(10) };
        assert!(matches!(when(&failed, Issuer::System, retry(Some(Access::ReadOnly))), Err(DomainError::Forbidden(_))));
        let retried = then(failed, retry(Some(Access::Full)));
        let state = fold::<Deployment>(&retried);
        assert_eq!((state.phase, state.attempt, state.node_id), (Phase::Scheduled, 2, Some(Uuid::from_u128(10))));
        assert_eq!(state.request.unwrap().pipeline_version, 4);
        // A late report of attempt 1 changes nothing; attempt 2 starts.
        assert_eq!(when(&retried, Issuer::System, report(RunReport::Started)), Ok(vec![]));
        let reports = vec![RunReport::Started, RunReport::Running { endpoints: vec![] }];
        let started = when(&retried, Issuer::System, DeploymentAction::Report { attempt: 2, reports }).unwrap();
        assert_eq!(started.len(), 2, "both decided in order: {started:?}");
        // Only a failed deployment is retried.
        let running = then(then(created(), report(RunReport::Started)), report(RunReport::Running { endpoints: vec![] }));
        assert!(matches!(when(&running, Issuer::System, retry(Some(Access::Full))), Err(DomainError::Conflict(_))));
    }

    #[test]
    fn health_is_recorded_when_it_changes() {
        let deploying = then(created(), report(RunReport::Started));
        let healthy = |healthy| report(RunReport::Health(HealthChanged { service: "api".into(), healthy, detail: String::new() }));
        let up = then(deploying, healthy(true));
        assert_eq!(when(&up, Issuer::System, healthy(true)), Ok(vec![]));
        assert_eq!(when(&up, Issuer::System, healthy(false)).unwrap().len(), 1);
    }

    #[test]
    fn a_running_deployment_published_elsewhere_records_its_new_endpoints_once() {
        let at = |port| vec![Endpoint { service: "api".into(), host_port: port }];
        let running = then(then(created(), report(RunReport::Started)), report(RunReport::Running { endpoints: at(32768) }));
        assert_eq!(when(&running, Issuer::System, report(RunReport::Running { endpoints: at(32768) })), Ok(vec![]));
        let moved = when(&running, Issuer::System, report(RunReport::Running { endpoints: at(32999) })).unwrap();
        assert_eq!(moved, vec![DeploymentEvent::EndpointsChanged(EndpointsChanged { endpoints: at(32999) })]);
        // A service between containers (no port for a moment) is not a change.
        assert_eq!(when(&running, Issuer::System, report(RunReport::Running { endpoints: vec![] })), Ok(vec![]));
    }
}
