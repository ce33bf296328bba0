//! The preview aggregate (stream `preview-<project id>.<number>`): what a linked repository's
//! pull request asks of its preview, one verified hook at a time. A delivery the forge sends
//! again (same delivery id) and a hook that asks for what is already asked (the same commit and
//! tag, or removal twice) record nothing, so the `previews` process never acts twice.

use std::collections::VecDeque;

use nullops_events::preview::{PreviewEvent, PreviewRequested, PreviewWish};
use nullops_events::DomainEvent;
use uuid::Uuid;

use crate::{Decider, DomainError};

/// How many delivery ids a preview remembers (a pull request rarely gets this many hooks; an
/// older one replayed is still caught when it asks for what is already asked).
pub const REMEMBERED_DELIVERIES: usize = 500;

/// The aggregate key of request `number` of project `project_id`.
pub fn preview_key(project_id: Uuid, number: u64) -> String {
    format!("{project_id}.{number}")
}

pub use nullops_events::preview::preview_name;

/// A verified hook about one pull request.
pub struct PreviewCommand {
    pub request: PreviewRequested,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreviewState {
    /// The latest deliveries recorded, oldest first.
    pub deliveries: VecDeque<String>,
    pub latest: Option<PreviewRequested>,
    /// The newest forge time recorded (`updated_at`): the pull request as the forge last said
    /// it was. A hook about an older state is a replay.
    pub updated_at: i64,
    /// The deployments this preview asked for, newest last (the last [`REMEMBERED_DEPLOYMENTS`]):
    /// the only ones the previews process may replace or delete. A hand-made deployment that
    /// happens to hold the name `pr-<number>` is not the preview's.
    pub made: VecDeque<Uuid>,
}

/// How many of its deployments a preview remembers: one per commit asked for, and only the
/// latest can still hold the name.
pub const REMEMBERED_DEPLOYMENTS: usize = 100;

impl PreviewState {
    /// Whether deployment `id` is one this preview asked for.
    pub fn made(&self, id: Uuid) -> bool {
        self.made.contains(&id)
    }
}

pub struct Preview;

/// Whether `new` asks for what `old` already asked.
fn same_ask(old: &PreviewRequested, new: &PreviewRequested) -> bool {
    match (&old.wish, &new.wish) {
        (PreviewWish::Deploy { .. }, PreviewWish::Deploy { .. }) => old.head_sha == new.head_sha && old.tag == new.tag,
        (PreviewWish::Remove { .. }, PreviewWish::Remove { .. }) => true,
        _ => false,
    }
}

impl Decider for Preview {
    type Command = PreviewCommand;
    type Event = PreviewEvent;
    type State = PreviewState;
    const KIND: &'static str = "preview";

    fn decide(command: &PreviewCommand, state: &PreviewState) -> Result<Vec<PreviewEvent>, DomainError> {
        let request = &command.request;
        if request.number == 0 {
            return Err(DomainError::invalid("number", "a pull request's number is 1 or more"));
        }
        if request.delivery.is_empty() || request.delivery.len() > 200 {
            return Err(DomainError::invalid("delivery", "the forge's delivery id is missing or longer than 200 characters"));
        }
        if state.deliveries.contains(&request.delivery) || state.latest.as_ref().is_some_and(|old| same_ask(old, request)) {
            return Ok(vec![]);
        }
        // The delivery id is not signed, the forge's time is: a signed hook captured earlier and
        // sent again under a new delivery id speaks of an older state of the pull request (an
        // "opened" after its "closed"), and changes nothing.
        if request.updated_at > 0 && request.updated_at < state.updated_at {
            return Ok(vec![]);
        }
        Ok(vec![PreviewEvent::Requested(request.clone())])
    }

    fn evolve(mut state: PreviewState, event: &PreviewEvent) -> PreviewState {
        let PreviewEvent::Requested(r) = event;
        if state.deliveries.len() >= REMEMBERED_DELIVERIES {
            state.deliveries.pop_front();
        }
        state.deliveries.push_back(r.delivery.clone());
        state.updated_at = state.updated_at.max(r.updated_at);
        if let PreviewWish::Deploy { deployment_id } = r.wish {
            if state.made.len() >= REMEMBERED_DEPLOYMENTS {
                state.made.pop_front();
            }
            state.made.push_back(deployment_id);
        }
        state.latest = Some(r.clone());
        state
    }

    fn select(event: DomainEvent) -> Option<PreviewEvent> {
        match event {
            DomainEvent::Preview(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold;
    use nullops_events::catalog::Forge;

    fn hook(delivery: &str, wish: PreviewWish, sha: &str) -> PreviewRequested {
        PreviewRequested {
            project_id: Uuid::from_u128(1),
            project: "shop".into(),
            number: 7,
            forge: Forge::GitHub,
            delivery: delivery.into(),
            action: "opened".into(),
            wish,
            head_sha: sha.into(),
            tag: "pr-7".into(),
            title: "Faster checkout".into(),
            url: "https://github.com/acme/shop/pull/7".into(),
            sender: "octocat".into(),
            updated_at: 0,
        }
    }
    fn at(request: PreviewRequested, updated_at: i64) -> PreviewRequested {
        PreviewRequested { updated_at, ..request }
    }
    fn deploy(id: u128) -> PreviewWish {
        PreviewWish::Deploy { deployment_id: Uuid::from_u128(id) }
    }
    fn when(given: &[PreviewEvent], request: PreviewRequested) -> Result<Vec<PreviewEvent>, DomainError> {
        Preview::decide(&PreviewCommand { request }, &fold::<Preview>(given))
    }

    #[test]
    fn a_hook_is_recorded_once_and_only_when_it_asks_for_something_new() {
        let opened = hook("d1", deploy(10), "aaa");
        assert_eq!(when(&[], opened.clone()).unwrap(), [PreviewEvent::Requested(opened.clone())]);
        let given = [PreviewEvent::Requested(opened.clone())];
        // The same delivery again, even were it to differ.
        assert_eq!(when(&given, hook("d1", deploy(11), "bbb")).unwrap(), []);
        // Another delivery asking for the same commit and tag.
        assert_eq!(when(&given, hook("d2", deploy(11), "aaa")).unwrap(), []);
        // A new commit.
        let pushed = hook("d3", deploy(12), "bbb");
        assert_eq!(when(&given, pushed.clone()).unwrap(), [PreviewEvent::Requested(pushed.clone())]);
        let given = [given.to_vec(), vec![PreviewEvent::Requested(pushed)]].concat();
        let closed = hook("d4", PreviewWish::Remove { merged: false }, "bbb");
        assert_eq!(when(&given, closed.clone()).unwrap(), [PreviewEvent::Requested(closed.clone())]);
        let given = [given, vec![PreviewEvent::Requested(closed)]].concat();
        assert_eq!(when(&given, hook("d5", PreviewWish::Remove { merged: true }, "bbb")).unwrap(), []);
        // Reopened on the same commit: deployed again.
        assert_eq!(when(&given, hook("d6", deploy(13), "bbb")).unwrap().len(), 1);
        assert!(matches!(when(&given, hook("", deploy(14), "ccc")), Err(DomainError::InvalidInput { field: "delivery", .. })));
    }

    #[test]
    fn a_signed_hook_replayed_under_a_new_delivery_id_does_not_reopen_a_closed_request() {
        // Given a pull request opened at t=100 and closed at t=200
        let opened = at(hook("d1", deploy(10), "aaa"), 100);
        let closed = at(hook("d2", PreviewWish::Remove { merged: false }, "aaa"), 200);
        let given = [PreviewEvent::Requested(opened.clone()), PreviewEvent::Requested(closed)];
        // When the "opened" hook is sent again with a delivery id of the attacker's choosing
        let replayed = PreviewRequested { delivery: "forged".into(), wish: deploy(11), ..opened };
        // Then nothing is recorded
        assert_eq!(when(&given, replayed).unwrap(), []);
        // While the forge's real reopening, later, is
        let reopened = at(hook("d3", deploy(12), "aaa"), 300);
        assert_eq!(when(&given, reopened.clone()).unwrap(), [PreviewEvent::Requested(reopened)]);
    }

    #[test]
    fn a_preview_knows_the_deployments_it_asked_for() {
        let given = [PreviewEvent::Requested(hook("d1", deploy(10), "aaa")), PreviewEvent::Requested(hook("d2", deploy(11), "bbb"))];
        let state = fold::<Preview>(&given);
        assert!(state.made(Uuid::from_u128(10)) && state.made(Uuid::from_u128(11)));
        assert!(!state.made(Uuid::from_u128(12)), "a deployment someone else made under the same name");
    }

    #[test]
    fn deliveries_are_remembered_up_to_a_bound() {
        let given: Vec<PreviewEvent> =
            (0..REMEMBERED_DELIVERIES + 5).map(|i| PreviewEvent::Requested(hook(&format!("d{i}"), deploy(i as u128), &format!("{i}")))).collect();
        let state = fold::<Preview>(&given);
        assert_eq!(state.deliveries.len(), REMEMBERED_DELIVERIES);
        assert_eq!(state.deliveries.front().map(String::as_str), Some("d5"));
    }
}
