//! Deployment names (stream `deploymentnames-<environment>`): a name is held by one live
//! deployment of its environment at a time, from its request until its node removed it; then
//! it is free for a new deployment (which gets the same URLs).

use std::collections::BTreeMap;

use nullops_events::deployment_names::{DeploymentNameEvent, NameClaim};
use nullops_events::DomainEvent;
use uuid::Uuid;

use crate::{Decider, DnsLabel, DomainError};

pub enum NameCommand {
    Claim { name: DnsLabel, deployment_id: Uuid },
    Release { name: String, deployment_id: Uuid },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamesState {
    pub held: BTreeMap<String, Uuid>,
}

pub struct DeploymentNames;

impl Decider for DeploymentNames {
    type Command = NameCommand;
    type Event = DeploymentNameEvent;
    type State = NamesState;
    const KIND: &'static str = "deploymentnames";

    fn decide(command: &NameCommand, state: &NamesState) -> Result<Vec<DeploymentNameEvent>, DomainError> {
        match command {
            NameCommand::Claim { name, deployment_id } => match state.held.get(name.as_str()) {
                Some(holder) if holder == deployment_id => Ok(vec![]),
                Some(_) => Err(DomainError::Conflict(format!("the environment already has a deployment named {}", name.as_str()))),
                None => Ok(vec![DeploymentNameEvent::Claimed(NameClaim { name: name.as_str().to_owned(), deployment_id: *deployment_id })]),
            },
            NameCommand::Release { name, deployment_id } if state.held.get(name) == Some(deployment_id) => {
                Ok(vec![DeploymentNameEvent::Released(NameClaim { name: name.clone(), deployment_id: *deployment_id })])
            }
            NameCommand::Release { .. } => Ok(vec![]),
        }
    }

    fn evolve(mut state: NamesState, event: &DeploymentNameEvent) -> NamesState {
        match event {
            DeploymentNameEvent::Claimed(c) => {
                state.held.insert(c.name.clone(), c.deployment_id);
            }
            DeploymentNameEvent::Released(c) => {
                state.held.remove(&c.name);
            }
        }
        state
    }

    fn select(event: DomainEvent) -> Option<DeploymentNameEvent> {
        match event {
            DomainEvent::DeploymentName(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold;

    fn claim(name: &str, id: u128) -> NameCommand {
        NameCommand::Claim { name: DnsLabel::parse("name", name).unwrap(), deployment_id: Uuid::from_u128(id) }
    }
    fn claimed(name: &str, id: u128) -> DeploymentNameEvent {
        DeploymentNameEvent::Claimed(NameClaim { name: name.into(), deployment_id: Uuid::from_u128(id) })
    }

    #[test]
    fn a_name_is_held_once_until_released_by_its_holder() {
        let given = [claimed("pr-1", 1)];
        assert!(matches!(DeploymentNames::decide(&claim("pr-1", 2), &fold::<DeploymentNames>(&given)), Err(DomainError::Conflict(_))));
        assert_eq!(DeploymentNames::decide(&claim("pr-1", 1), &fold::<DeploymentNames>(&given)), Ok(vec![]), "claiming again is a no-op");
        let by_other = NameCommand::Release { name: "pr-1".into(), deployment_id: Uuid::from_u128(2) };
        assert_eq!(DeploymentNames::decide(&by_other, &fold::<DeploymentNames>(&given)), Ok(vec![]));
        let release = NameCommand::Release { name: "pr-1".into(), deployment_id: Uuid::from_u128(1) };
        let released = DeploymentNames::decide(&release, &fold::<DeploymentNames>(&given)).unwrap();
        let mut history = given.to_vec();
        history.extend(released);
        assert_eq!(DeploymentNames::decide(&claim("pr-1", 2), &fold::<DeploymentNames>(&history)), Ok(vec![claimed("pr-1", 2)]));
    }
}
