//! Node capacity (stream `capacity-<node id>`): reservations of CPU and memory for deployments.
//!
//! A reservation is decided against what the node has, what is already reserved and what the
//! agent last measured in use, whichever is more: `free = total - max(reserved, used)`. The
//! measurement is passed in by the caller (it is telemetry, not a fact of the log); the
//! reservations are the stream's own, so concurrent reservations on one node are serialised by
//! the stream version and can never overcommit it.

use std::collections::BTreeMap;

use nullops_events::capacity::{CapacityEvent, CapacityReleased, CapacityReserved};
use nullops_events::DomainEvent;
use uuid::Uuid;

use crate::{Decider, DomainError};

/// CPU in thousandths of a core, memory in MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_mib: u64,
}

impl Resources {
    fn fits_in(self, free: Resources) -> bool {
        self.cpu_millis <= free.cpu_millis && self.memory_mib <= free.memory_mib
    }
}

pub enum CapacityCommand {
    /// `total` is the node's size and `used` what its agent last measured.
    Reserve {
        deployment_id: Uuid,
        request: Resources,
        total: Resources,
        used: Resources,
    },
    /// Each of `asks` (deployment, request) that fits, in order, each deciding against what
    /// the ones before it took: many placements decided in one append. Those that do not fit
    /// are left out (the caller tries them elsewhere); those already held are kept.
    ReserveEach {
        asks: Vec<(Uuid, Resources)>,
        total: Resources,
        used: Resources,
    },
    Release {
        deployment_id: Uuid,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapacityState {
    pub reservations: BTreeMap<Uuid, Resources>,
}

impl CapacityState {
    pub fn reserved(&self) -> Resources {
        self.reservations
            .values()
            .fold(Resources::default(), |a, r| Resources { cpu_millis: a.cpu_millis + r.cpu_millis, memory_mib: a.memory_mib + r.memory_mib })
    }

    /// What can still be promised on a node of size `total` using `used`.
    pub fn free(&self, total: Resources, used: Resources) -> Resources {
        let reserved = self.reserved();
        Resources {
            cpu_millis: total.cpu_millis.saturating_sub(reserved.cpu_millis.max(used.cpu_millis)),
            memory_mib: total.memory_mib.saturating_sub(reserved.memory_mib.max(used.memory_mib)),
        }
    }
}

/// The refusal when a node has no room: names what was asked and what is free.
pub fn exhausted(request: Resources, best_free: Resources) -> DomainError {
    DomainError::ResourcesExhausted(format!(
        "the deployment needs {} millicores and {} MiB; the most any node has free is {} millicores and {} MiB",
        request.cpu_millis, request.memory_mib, best_free.cpu_millis, best_free.memory_mib
    ))
}

/// The event reserving `request` for `deployment_id`.
fn reserved(deployment_id: Uuid, request: Resources) -> CapacityEvent {
    let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    CapacityEvent::Reserved(CapacityReserved { deployment_id, cpu_millis: narrow(request.cpu_millis), memory_mib: narrow(request.memory_mib) })
}

pub struct Capacity;

impl Decider for Capacity {
    type Command = CapacityCommand;
    type Event = CapacityEvent;
    type State = CapacityState;
    const KIND: &'static str = "capacity";

    fn decide(command: &CapacityCommand, state: &CapacityState) -> Result<Vec<CapacityEvent>, DomainError> {
        match command {
            CapacityCommand::Reserve { deployment_id, request, total, used } => {
                if state.reservations.contains_key(deployment_id) {
                    return Ok(vec![]);
                }
                let free = state.free(*total, *used);
                if !request.fits_in(free) {
                    return Err(exhausted(*request, free));
                }
                Ok(vec![reserved(*deployment_id, *request)])
            }
            CapacityCommand::ReserveEach { asks, total, used } => {
                let mut after = state.clone();
                let mut events = Vec::new();
                for (deployment_id, request) in asks {
                    if after.reservations.contains_key(deployment_id) || !request.fits_in(after.free(*total, *used)) {
                        continue;
                    }
                    let event = reserved(*deployment_id, *request);
                    after = Self::evolve(after, &event);
                    events.push(event);
                }
                Ok(events)
            }
            CapacityCommand::Release { deployment_id } if state.reservations.contains_key(deployment_id) => {
                Ok(vec![CapacityEvent::Released(CapacityReleased { deployment_id: *deployment_id })])
            }
            CapacityCommand::Release { .. } => Ok(vec![]),
        }
    }

    fn evolve(mut state: CapacityState, event: &CapacityEvent) -> CapacityState {
        match event {
            CapacityEvent::Reserved(r) => {
                state.reservations.insert(r.deployment_id, Resources { cpu_millis: r.cpu_millis.into(), memory_mib: r.memory_mib.into() });
            }
            CapacityEvent::Released(r) => {
                state.reservations.remove(&r.deployment_id);
            }
        }
        state
    }

    fn select(event: DomainEvent) -> Option<CapacityEvent> {
        match event {
            DomainEvent::Capacity(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold;

    const NODE: Resources = Resources { cpu_millis: 2000, memory_mib: 4096 };
    const IDLE: Resources = Resources { cpu_millis: 0, memory_mib: 0 };
    const SMALL: Resources = Resources { cpu_millis: 500, memory_mib: 1024 };

    fn reserve(id: u128, used: Resources) -> CapacityCommand {
        CapacityCommand::Reserve { deployment_id: Uuid::from_u128(id), request: SMALL, total: NODE, used }
    }
    fn reserved(id: u128) -> CapacityEvent {
        CapacityEvent::Reserved(CapacityReserved { deployment_id: Uuid::from_u128(id), cpu_millis: 500, memory_mib: 1024 })
    }

    #[test]
    fn reservations_fill_a_node_and_no_further() {
        let given: Vec<CapacityEvent> = (1..=4).map(reserved).collect();
        assert_eq!(Capacity::decide(&reserve(4, IDLE), &fold::<Capacity>(&given[..3])), Ok(vec![reserved(4)]));
        let refused = Capacity::decide(&reserve(5, IDLE), &fold::<Capacity>(&given));
        let Err(DomainError::ResourcesExhausted(message)) = refused else { panic!("{refused:?}") };
        assert!(message.contains("500 millicores and 1024 MiB") && message.contains("0 millicores and 0 MiB"), "{message}");
    }

    #[test]
    fn measured_use_beyond_reservations_counts_too() {
        let busy = Resources { cpu_millis: 1800, memory_mib: 512 };
        assert!(matches!(Capacity::decide(&reserve(1, busy), &CapacityState::default()), Err(DomainError::ResourcesExhausted(_))));
        // Use below what is reserved does not count twice.
        let given = [reserved(1)];
        assert_eq!(fold::<Capacity>(&given).free(NODE, Resources { cpu_millis: 100, memory_mib: 100 }), Resources { cpu_millis: 1500, memory_mib: 3072 });
    }

    #[test]
    fn a_release_frees_room_and_both_are_idempotent() {
        let given = [reserved(1), CapacityEvent::Released(CapacityReleased { deployment_id: Uuid::from_u128(1) })];
        assert_eq!(fold::<Capacity>(&given).reserved(), IDLE);
        assert_eq!(Capacity::decide(&reserve(1, IDLE), &fold::<Capacity>(&given[..1])), Ok(vec![]));
        assert_eq!(Capacity::decide(&CapacityCommand::Release { deployment_id: Uuid::from_u128(1) }, &fold::<Capacity>(&given)), Ok(vec![]));
    }

    #[test]
    fn many_asks_are_decided_in_one_command_each_against_what_the_ones_before_took() {
        // given a node holding deployment 1 …
        let given = [reserved(1)];
        let big = Resources { cpu_millis: 1500, memory_mib: 1024 };
        let asks = vec![(Uuid::from_u128(1), SMALL), (Uuid::from_u128(2), SMALL), (Uuid::from_u128(3), big), (Uuid::from_u128(4), SMALL)];
        let command = CapacityCommand::ReserveEach { asks, total: NODE, used: IDLE };
        // … when 1 (held), 2, 3 (too big once 1 and 2 are counted) and 4 are asked for at once …
        let events = Capacity::decide(&command, &fold::<Capacity>(&given)).expect("decided");
        // … then 1 is kept as it is, 2 and 4 are reserved and 3 is left for another node.
        assert_eq!(events, vec![reserved(2), reserved(4)]);
        let after = events.iter().fold(fold::<Capacity>(&given), Capacity::evolve);
        assert_eq!(after.reserved(), Resources { cpu_millis: 1500, memory_mib: 3072 });
    }
}
