//! Deployments (stream `deployment-<deployment id>`): requested by a user with FULL access,
//! placed by the deployment saga (a name and a node's capacity, or a rejection), run by that
//! node's agent, ended by a failure, a delete or expiry.
//!
//! The agent's reports arrive through the connector as commands of the platform itself; a report
//! that does not fit the current state (a late step after a cancel, a second "running") changes
//! nothing. Deleting a deployment that is still being created cancels it: the agent rolls back,
//! and the end is CANCELLED instead of DELETED. One that runs nowhere (waiting for a node, or
//! failed and rolled back) is removed at once.
//!
//! The state keeps what is wanted of a deployment apart from what is seen of it ([`Life`]);
//! `nullops_events::phase` is their one home, with [`Life::after`], the only transition
//! function. The [`Phase`] that `decide`'s rules speak of and the API's [`DeploymentStatus`]
//! are derived from the pair.

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
    /// `access`: the caller's access to the project or environment. The deployment saga then
    /// claims `name` and a node for it.
    Create {
        access: Option<Access>,
        request: DeploymentRequested,
        name: DnsLabel,
    },
    /// Runs a failed deployment again with `plan`; the saga places it on a node again.
    Retry {
        access: Option<Access>,
        pipeline_version: u32,
        plan: DeploymentPlan,
    },
    Delete {
        access: Option<Access>,
        reason: DeletionReason,
    },
    /// `now`: microseconds since the epoch.
    Extend {
        access: Option<Access>,
        now: i64,
    },
    /// The saga holds its name and reserved capacity on `node_id` (the platform only).
    Schedule {
        node_id: Uuid,
    },
    /// The saga could not place it (the platform only): a request is rejected, a retry fails.
    Unplaceable {
        code: RejectionCode,
        reason: String,
    },
    /// What the agent reports about run number `attempt`, in order; reports about an earlier
    /// attempt change nothing.
    Report {
        attempt: u32,
        reports: Vec<RunReport>,
    },
    /// Its node cannot be given it (the platform only): the run fails with `reason`.
    Refuse {
        reason: String,
    },
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

pub use nullops_events::phase::{status, DeploymentStatus, Desired, Life, Observed, Phase, Stage, UserAction};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentState {
    pub request: Option<DeploymentRequested>,
    pub node_id: Option<Uuid>,
    /// What is wanted of it and what is seen of it; `None` until requested.
    pub life: Option<Life>,
    pub expires_at: i64,
    /// Runs so far: 1 after the request, one more per retry.
    pub attempt: u32,
    /// The current run's pipeline nodes and services, as last reported.
    pub steps: BTreeMap<String, StepState>,
    /// What each step last said (a starting service's latest probe answer, while it runs).
    pub step_details: BTreeMap<String, String>,
    pub health: BTreeMap<String, bool>,
    /// Where its services are published, once running.
    pub endpoints: Vec<Endpoint>,
}

impl DeploymentState {
    /// The phase its life shows (`None` until requested).
    pub fn phase(&self) -> Option<Phase> {
        self.life.map(Life::phase)
    }
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
        let platform_only = matches!(command.action, Schedule { .. } | Unplaceable { .. } | Report { .. } | Refuse { .. } | Removed);
        if platform_only && command.by != Issuer::System {
            return Err(DomainError::Forbidden("only the platform places a deployment and reports on its run".into()));
        }
        let phase = match (&command.action, state.phase()) {
            (Create { .. }, _) => state.phase(),
            (_, None) => return Err(DomainError::NotFound("no such deployment".into())),
            (_, Some(phase)) => Some(phase),
        };
        let none = Ok(vec![]);
        match &command.action {
            Create { access, request, name } => {
                access::require(*access, Access::Full, &format!("project {}", request.project))?;
                if phase.is_some() {
                    return Err(DomainError::AlreadyExists(format!("deployment {} exists", request.deployment_id)));
                }
                let request = DeploymentRequested { name: name.as_str().to_owned(), ..request.clone() };
                Ok(vec![DeploymentEvent::Requested(request)])
            }
            Retry { access, pipeline_version, plan } => {
                access::require(*access, Access::Full, &what())?;
                if !phase.is_some_and(|p| p.allows(UserAction::Retry)) {
                    return Err(DomainError::Conflict(format!("{} has not failed: only a failed deployment is retried", what())));
                }
                Ok(vec![DeploymentEvent::Retried(DeploymentRetried { pipeline_version: *pipeline_version, plan: plan.clone() })])
            }
            Delete { access, reason } => {
                if *reason == DeletionReason::User || command.by != Issuer::System {
                    access::require(*access, Access::Full, &what())?;
                }
                let requested = DeploymentEvent::DeletionRequested(DeletionRequested { reason: *reason });
                match phase {
                    Some(p) if p.removing() || p.ended() => none,
                    // Nothing of it runs anywhere: waiting for a node, or failed and rolled back.
                    Some(Phase::Pending | Phase::Failed) => Ok(vec![requested, DeploymentEvent::Removed(DeploymentRemoved {})]),
                    _ => Ok(vec![requested]),
                }
            }
            Extend { access, now } => {
                access::require(*access, Access::Full, &what())?;
                if phase.is_some_and(|p| !p.allows(UserAction::Extend)) {
                    return Err(DomainError::Conflict(format!("{} is being deleted or gone", what())));
                }
                let lifetime = state.request.as_ref().map_or(0, |r| r.lifetime_secs);
                let expires_at = now.saturating_add(i64::try_from(lifetime.saturating_mul(1_000_000)).unwrap_or(i64::MAX));
                Ok(vec![DeploymentEvent::Extended(DeploymentExtended { expires_at })])
            }
            Schedule { node_id } => match phase {
                Some(Phase::Pending) => Ok(vec![DeploymentEvent::Scheduled(DeploymentScheduled { node_id: *node_id })]),
                Some(Phase::Scheduled) if state.node_id == Some(*node_id) => none,
                _ => Err(DomainError::Conflict(format!("{} is no longer waiting for a node", what()))),
            },
            Unplaceable { code, reason } => match phase {
                Some(Phase::Pending) if state.attempt <= 1 => Ok(vec![DeploymentEvent::Rejected(DeploymentRejected { code: *code, reason: reason.clone() })]),
                Some(Phase::Pending) => {
                    Ok(vec![DeploymentEvent::Failed(DeploymentFailed { step: None, reason: reason.clone(), exit_code: None, oom_killed: false })])
                }
                _ => none,
            },
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
            Refuse { reason } if phase.is_some_and(Phase::on_node) => {
                Ok(vec![DeploymentEvent::Failed(DeploymentFailed { step: None, reason: reason.clone(), exit_code: None, oom_killed: false })])
            }
            Refuse { .. } => none,
            Removed if phase.is_some_and(Phase::removing) => {
                // The run's last word can be lost with it (an agent forgets a cancelled run once
                // its rollback is done): a step the log still has running went with the rest, and
                // so did every step a cancelled run had finished (a cancel rolls back all it made).
                // Their states settle with the run instead of running for ever.
                let cancelled = phase == Some(Phase::Cancelling);
                let mut events: Vec<DeploymentEvent> = state
                    .steps
                    .iter()
                    .filter(|(_, s)| **s == StepState::Running || (cancelled && **s == StepState::Succeeded))
                    .map(|(step, _)| {
                        DeploymentEvent::StepChanged(StepChanged { step: step.clone(), state: StepState::RolledBack, detail: ROLLED_BACK_WITH_THE_RUN.into() })
                    })
                    .collect();
                events.push(DeploymentEvent::Removed(DeploymentRemoved {}));
                Ok(events)
            }
            // Late or repeated.
            Removed => none,
        }
    }

    fn evolve(mut state: DeploymentState, event: &DeploymentEvent) -> DeploymentState {
        state.life = Life::after(state.life, event);
        match event {
            DeploymentEvent::Requested(r) => {
                state.expires_at = r.expires_at;
                state.request = Some(r.clone());
                state.attempt = 1;
            }
            DeploymentEvent::Retried(r) => {
                state.endpoints.clear();
                if let Some(request) = state.request.as_mut() {
                    request.pipeline_version = r.pipeline_version;
                    request.plan = r.plan.clone();
                }
                state.attempt += 1;
                state.steps.clear();
                state.step_details.clear();
                state.health.clear();
            }
            DeploymentEvent::Scheduled(s) => state.node_id = Some(s.node_id),
            DeploymentEvent::StepChanged(s) => {
                state.steps.insert(s.step.clone(), s.state);
                state.step_details.insert(s.step.clone(), s.detail.clone());
            }
            DeploymentEvent::HealthChanged(h) => {
                state.health.insert(h.service.clone(), h.healthy);
            }
            DeploymentEvent::Running(r) => state.endpoints = r.endpoints.clone(),
            DeploymentEvent::EndpointsChanged(e) => state.endpoints = e.endpoints.clone(),
            DeploymentEvent::Removed(_) => state.endpoints.clear(),
            DeploymentEvent::Extended(e) => state.expires_at = e.expires_at,
            DeploymentEvent::RunStarted(_) | DeploymentEvent::Failed(_) | DeploymentEvent::DeletionRequested(_) | DeploymentEvent::Rejected(_) => {}
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

/// The detail of a step that was still running when its run was removed.
pub const ROLLED_BACK_WITH_THE_RUN: &str = "rolled back: its run was cancelled or removed while it ran";

/// What a report adds to the log: only what is new and fits the phase (a step or a health the
/// log already has, a late "running" after a cancel, a second failure change nothing).
fn decide_report(report: &RunReport, state: &DeploymentState) -> Vec<DeploymentEvent> {
    let Some(phase) = state.phase() else { return vec![] };
    match report {
        RunReport::Started if phase == Phase::Scheduled => vec![DeploymentEvent::RunStarted(RunStarted {})],
        // A new state, or what a running step says changed (a starting service's probe answers
        // otherwise now): the agent reports such a detail only when it changes.
        RunReport::Step(step)
            if matches!(phase, Phase::Deploying | Phase::Running | Phase::Cancelling)
                && (state.steps.get(&step.step) != Some(&step.state)
                    || (step.state == StepState::Running && state.step_details.get(&step.step).map_or("", String::as_str) != step.detail)) =>
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
        DeploymentAction::Create { access, request: request(), name: DnsLabel::parse("name", "pr-42").unwrap() }
    }
    fn report(report: RunReport) -> DeploymentAction {
        DeploymentAction::Report { attempt: 1, reports: vec![report] }
    }
    fn delete() -> DeploymentAction {
        DeploymentAction::Delete { access: Some(Access::Full), reason: DeletionReason::User }
    }
    fn when(given: &[DeploymentEvent], by: Issuer, action: DeploymentAction) -> Result<Vec<DeploymentEvent>, DomainError> {
        Deployment::decide(&DeploymentCommand { by, action }, &fold::<Deployment>(given))
    }
    fn user(role: nullops_events::identity::Role) -> Issuer {
        Issuer::User(crate::Principal { username: crate::Username::parse("bob").unwrap(), role })
    }
    fn requested() -> Vec<DeploymentEvent> {
        when(&[], Issuer::System, create(Some(Access::Full))).unwrap()
    }
    /// Requested and placed on node 9.
    fn created() -> Vec<DeploymentEvent> {
        then(requested(), DeploymentAction::Schedule { node_id: Uuid::from_u128(9) })
    }
    fn then(mut given: Vec<DeploymentEvent>, action: DeploymentAction) -> Vec<DeploymentEvent> {
        let new = when(&given, Issuer::System, action).unwrap();
        given.extend(new);
        given
    }
    fn phase(given: &[DeploymentEvent]) -> Option<Phase> {
        fold::<Deployment>(given).phase()
    }
    fn failure() -> DeploymentFailed {
        DeploymentFailed { step: Some("migrate".into()), reason: "exit code 1".into(), exit_code: Some(1), oom_killed: false }
    }
    fn running() -> Vec<DeploymentEvent> {
        then(then(created(), report(RunReport::Started)), report(RunReport::Running { endpoints: vec![] }))
    }
    fn failed() -> Vec<DeploymentEvent> {
        then(then(created(), report(RunReport::Started)), report(RunReport::Failed(failure())))
    }

    #[test]
    fn full_access_requests_it_and_the_platform_places_it() {
        let events = requested();
        assert!(matches!(&events[..], [DeploymentEvent::Requested(r)] if r.name == "pr-42"));
        assert_eq!(phase(&events), Some(Phase::Pending));
        for access in [None, Some(Access::ReadOnly)] {
            assert!(matches!(when(&[], Issuer::System, create(access)), Err(DomainError::Forbidden(_))));
        }
        assert!(matches!(when(&events, Issuer::System, create(Some(Access::Full))), Err(DomainError::AlreadyExists(_))));
        // Only the platform places it; placing it again on the same node adds nothing.
        let admin = user(nullops_events::identity::Role::Admin);
        assert!(matches!(when(&events, admin, DeploymentAction::Schedule { node_id: Uuid::from_u128(9) }), Err(DomainError::Forbidden(_))));
        let placed = created();
        assert_eq!(phase(&placed), Some(Phase::Scheduled));
        assert_eq!(fold::<Deployment>(&placed).node_id, Some(Uuid::from_u128(9)));
        assert_eq!(when(&placed, Issuer::System, DeploymentAction::Schedule { node_id: Uuid::from_u128(9) }), Ok(vec![]));
        assert!(matches!(when(&placed, Issuer::System, DeploymentAction::Schedule { node_id: Uuid::from_u128(8) }), Err(DomainError::Conflict(_))));
    }

    #[test]
    fn a_request_that_cannot_be_placed_is_rejected_and_ends_there() {
        let rejected = then(requested(), DeploymentAction::Unplaceable { code: RejectionCode::NameTaken, reason: "taken".into() });
        assert_eq!(phase(&rejected), Some(Phase::Rejected));
        assert!(Phase::Rejected.ended() && !Phase::Rejected.holds_capacity());
        // Late: nothing more happens to it.
        assert_eq!(when(&rejected, Issuer::System, DeploymentAction::Unplaceable { code: RejectionCode::NoRoom, reason: "full".into() }), Ok(vec![]));
        assert_eq!(when(&rejected, Issuer::System, delete()), Ok(vec![]));
        assert!(matches!(when(&rejected, Issuer::System, DeploymentAction::Schedule { node_id: Uuid::from_u128(9) }), Err(DomainError::Conflict(_))));
    }

    #[test]
    fn the_agent_reports_take_it_to_running_and_late_reports_change_nothing() {
        let running = running();
        assert_eq!(phase(&running), Some(Phase::Running));
        assert_eq!(when(&running, Issuer::System, report(RunReport::Running { endpoints: vec![] })), Ok(vec![]));
        assert_eq!(when(&running, Issuer::System, report(RunReport::Failed(failure()))), Ok(vec![]));
        let admin = user(nullops_events::identity::Role::Admin);
        assert!(matches!(when(&running, admin, DeploymentAction::Removed), Err(DomainError::Forbidden(_))));
    }

    #[test]
    fn a_failed_run_runs_nowhere_so_deleting_it_ends_it_at_once() {
        let failed = failed();
        assert_eq!(phase(&failed), Some(Phase::Failed));
        let deleted = then(failed, delete());
        assert!(matches!(&deleted[deleted.len() - 2..], [DeploymentEvent::DeletionRequested(_), DeploymentEvent::Removed(_)]));
        assert_eq!(phase(&deleted), Some(Phase::Deleted));
        // So does a request not placed yet, as a cancel.
        assert_eq!(phase(&then(requested(), delete())), Some(Phase::Cancelled));
    }

    #[test]
    fn deleting_while_creating_is_a_cancel() {
        let deploying = then(created(), report(RunReport::Started));
        let cancelling = then(deploying, delete());
        assert_eq!(phase(&cancelling), Some(Phase::Cancelling));
        // The agent's rollback steps are still recorded; a late "running" is not.
        let step = || StepChanged { step: "db".into(), state: StepState::RolledBack, detail: String::new() };
        let rolled_back = then(cancelling.clone(), report(RunReport::Step(step())));
        assert_eq!(rolled_back.len(), cancelling.len() + 1);
        // The same report again (the agent resends its whole view) adds nothing.
        assert_eq!(when(&rolled_back, Issuer::System, report(RunReport::Step(step()))), Ok(vec![]));
        assert_eq!(when(&cancelling, Issuer::System, report(RunReport::Running { endpoints: vec![] })), Ok(vec![]));
        assert_eq!(phase(&then(cancelling.clone(), DeploymentAction::Removed)), Some(Phase::Cancelled));
        // Deleting twice is one deletion.
        assert_eq!(when(&cancelling, Issuer::System, delete()), Ok(vec![]));
    }

    #[test]
    fn a_step_still_running_when_its_cancelled_run_is_removed_settles_as_rolled_back() {
        // Given a run cancelled while step db runs, whose last report (the rollback) was lost
        let running_step = StepChanged { step: "db".into(), state: StepState::Running, detail: String::new() };
        let done_step = StepChanged { step: "web".into(), state: StepState::Succeeded, detail: String::new() };
        let deploying = then(then(then(created(), report(RunReport::Started)), report(RunReport::Step(running_step))), report(RunReport::Step(done_step)));
        let cancelling = then(deploying, delete());
        // When the node says everything is removed
        let events = when(&cancelling, Issuer::System, DeploymentAction::Removed).unwrap();
        // Then the running step and the finished one are rolled back with the run
        let rolled_back =
            |step: &str| DeploymentEvent::StepChanged(StepChanged { step: step.into(), state: StepState::RolledBack, detail: ROLLED_BACK_WITH_THE_RUN.into() });
        assert_eq!(events, vec![rolled_back("db"), rolled_back("web"), DeploymentEvent::Removed(DeploymentRemoved {})]);
        // While a deployment that ran and is deleted keeps its steps as they ran
        let deleting = then(running(), delete());
        assert_eq!(when(&deleting, Issuer::System, DeploymentAction::Removed), Ok(vec![DeploymentEvent::Removed(DeploymentRemoved {})]));
    }

    #[test]
    fn a_starting_services_new_probe_answer_is_recorded_once() {
        // Given a service step that started
        let step = |detail: &str| StepChanged { step: "web".into(), state: StepState::Running, detail: detail.into() };
        let started = then(then(created(), report(RunReport::Started)), report(RunReport::Step(step(""))));
        // When its probe answers 404, twice
        let answered = then(started, report(RunReport::Step(step("not healthy yet: GET /healthz answered 404"))));
        // Then that is recorded once, and a new answer again
        assert_eq!(when(&answered, Issuer::System, report(RunReport::Step(step("not healthy yet: GET /healthz answered 404")))), Ok(vec![]));
        let newer = step("not healthy yet: GET /healthz answered 503");
        assert_eq!(when(&answered, Issuer::System, report(RunReport::Step(newer.clone()))), Ok(vec![DeploymentEvent::StepChanged(newer)]));
    }

    #[test]
    fn a_running_deployment_is_deleted_by_its_node() {
        let deleting = then(running(), delete());
        assert_eq!(phase(&deleting), Some(Phase::Deleting));
        assert!(Phase::Deleting.holds_capacity());
        assert_eq!(phase(&then(deleting, DeploymentAction::Removed)), Some(Phase::Deleted));
        // A removal reported of a deployment not being deleted is late.
        assert_eq!(when(&running(), Issuer::System, DeploymentAction::Removed), Ok(vec![]));
    }

    #[test]
    fn only_full_access_deletes_but_the_reaper_deletes_expired_ones() {
        let running = running();
        let by_user = when(
            &running,
            user(nullops_events::identity::Role::User),
            DeploymentAction::Delete { access: Some(Access::ReadOnly), reason: DeletionReason::User },
        );
        assert!(matches!(by_user, Err(DomainError::Forbidden(_))));
        let expired = when(&running, Issuer::System, DeploymentAction::Delete { access: None, reason: DeletionReason::Expired }).unwrap();
        assert_eq!(expired, vec![DeploymentEvent::DeletionRequested(DeletionRequested { reason: DeletionReason::Expired })]);
    }

    #[test]
    fn extending_resets_the_whole_lifetime_from_now() {
        let running = running();
        let extended = when(&running, Issuer::System, DeploymentAction::Extend { access: Some(Access::Full), now: 10 * HOUR }).unwrap();
        assert_eq!(extended, vec![DeploymentEvent::Extended(DeploymentExtended { expires_at: 11 * HOUR })]);
        let deleting = then(running, delete());
        assert!(matches!(when(&deleting, Issuer::System, DeploymentAction::Extend { access: Some(Access::Full), now: 0 }), Err(DomainError::Conflict(_))));
        assert!(matches!(when(&[], Issuer::System, DeploymentAction::Extend { access: Some(Access::Full), now: 0 }), Err(DomainError::NotFound(_))));
    }

    #[test]
    fn a_failed_deployment_is_retried_as_a_new_attempt_and_old_reports_are_ignored() {
        let failed = failed();
        let plan = DeploymentPlan { steps: vec![], edges: vec![] };
        let retry = |access| DeploymentAction::Retry { access, pipeline_version: 4, plan: plan.clone() };
        assert!(matches!(when(&failed, Issuer::System, retry(Some(Access::ReadOnly))), Err(DomainError::Forbidden(_))));
        let retried = then(then(failed, retry(Some(Access::Full))), DeploymentAction::Schedule { node_id: Uuid::from_u128(10) });
        let state = fold::<Deployment>(&retried);
        assert_eq!((state.phase(), state.attempt, state.node_id), (Some(Phase::Scheduled), 2, Some(Uuid::from_u128(10))));
        assert_eq!(state.request.unwrap().pipeline_version, 4);
        // A late report of attempt 1 changes nothing; attempt 2 starts.
        assert_eq!(when(&retried, Issuer::System, report(RunReport::Started)), Ok(vec![]));
        let reports = vec![RunReport::Started, RunReport::Running { endpoints: vec![] }];
        let started = when(&retried, Issuer::System, DeploymentAction::Report { attempt: 2, reports }).unwrap();
        assert_eq!(started.len(), 2, "both decided in order: {started:?}");
        // Only a failed deployment is retried.
        assert!(matches!(when(&running(), Issuer::System, retry(Some(Access::Full))), Err(DomainError::Conflict(_))));
    }

    #[test]
    fn a_retry_that_cannot_be_placed_fails_again_and_keeps_its_name() {
        let plan = DeploymentPlan { steps: vec![], edges: vec![] };
        let retried = then(failed(), DeploymentAction::Retry { access: Some(Access::Full), pipeline_version: 4, plan });
        let unplaced = when(&retried, Issuer::System, DeploymentAction::Unplaceable { code: RejectionCode::NoRoom, reason: "full".into() }).unwrap();
        assert!(matches!(&unplaced[..], [DeploymentEvent::Failed(f)] if f.reason == "full" && f.step.is_none()));
    }

    #[test]
    fn a_deployment_its_node_cannot_be_given_fails_with_the_reason() {
        let refused = then(created(), DeploymentAction::Refuse { reason: "secrets over 1 MiB".into() });
        assert_eq!(phase(&refused), Some(Phase::Failed));
        assert_eq!(when(&refused, Issuer::System, DeploymentAction::Refuse { reason: "again".into() }), Ok(vec![]));
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

    #[test]
    fn phases_have_one_name_each_and_the_status_shows_an_offline_node() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.name()), Some(p));
        }
        assert_eq!(Phase::ALL.map(Phase::name).iter().collect::<std::collections::HashSet<_>>().len(), Phase::ALL.len());
        assert_eq!(status(Phase::Running, false), DeploymentStatus::Offline);
        assert_eq!(status(Phase::Failed, false), DeploymentStatus::Failed);
        assert_eq!(status(Phase::Running, true), DeploymentStatus::Running);
    }

    #[test]
    fn the_actions_offered_in_each_phase_are_exactly_those_decide_accepts() {
        let deploying = then(created(), report(RunReport::Started));
        let histories = vec![
            requested(),
            created(),
            deploying.clone(),
            running(),
            failed(),
            then(deploying, delete()),
            then(running(), delete()),
            then(then(created(), delete()), DeploymentAction::Removed),
            then(then(running(), delete()), DeploymentAction::Removed),
            then(requested(), DeploymentAction::Unplaceable { code: RejectionCode::NoRoom, reason: "full".into() }),
        ];
        let mut seen = std::collections::HashSet::new();
        for given in histories {
            let p = phase(&given).unwrap();
            seen.insert(p);
            let full = Some(Access::Full);
            let changes = |action| when(&given, user(nullops_events::identity::Role::User), action).is_ok_and(|events| !events.is_empty());
            let retry = DeploymentAction::Retry { access: full, pipeline_version: 4, plan: DeploymentPlan { steps: vec![], edges: vec![] } };
            assert_eq!(changes(retry), p.allows(UserAction::Retry), "retry in {p:?}");
            assert_eq!(changes(DeploymentAction::Extend { access: full, now: HOUR }), p.allows(UserAction::Extend), "extend in {p:?}");
            let deleted = when(&given, user(nullops_events::identity::Role::User), delete()).unwrap();
            assert_eq!(!deleted.is_empty(), p.allows(UserAction::Cancel) || p.allows(UserAction::Delete), "delete in {p:?}");
            assert!(!(p.allows(UserAction::Cancel) && p.allows(UserAction::Delete)), "{p:?} offers both cancel and delete");
            let mut after = given.clone();
            after.extend(deleted);
            let cancelled = matches!(phase(&after), Some(Phase::Cancelling | Phase::Cancelled)) && after.len() > given.len();
            assert_eq!(cancelled, p.allows(UserAction::Cancel), "a delete in {p:?} is a cancel");
        }
        assert_eq!(seen.len(), Phase::ALL.len(), "every phase is covered");
    }
}
