//! Deployment names (stream `deploymentname-<environment>.<name>`, one per name): a name is held
//! by one live deployment of its environment at a time, from its request until its node removed
//! it; then it is free for a new deployment (which gets the same URLs). A stream per name, so
//! requests for different names never contend.

use nullops_events::deployment_names::{DeploymentNameEvent, NameClaim};
use nullops_events::DomainEvent;
use uuid::Uuid;

use crate::{Decider, DnsLabel, DomainError};

/// The aggregate key of `name` in `environment` (both DNS labels, so the dot is unambiguous).
pub fn name_key(environment: &str, name: &str) -> String {
    format!("{environment}.{name}")
}

pub enum NameCommand {
    Claim { name: DnsLabel, deployment_id: Uuid },
    Release { name: String, deployment_id: Uuid },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameState {
    pub holder: Option<Uuid>,
}

pub struct DeploymentName;

impl Decider for DeploymentName {
    type Command = NameCommand;
    type Event = DeploymentNameEvent;
    type State = NameState;
    const KIND: &'static str = "deploymentname";

    fn decide(command: &NameCommand, state: &NameState) -> Result<Vec<DeploymentNameEvent>, DomainError> {
        match command {
            NameCommand::Claim { name, deployment_id } => match state.holder {
                Some(holder) if holder == *deployment_id => Ok(vec![]),
                Some(_) => Err(DomainError::Conflict(format!("the environment already has a deployment named {}", name.as_str()))),
                None => Ok(vec![DeploymentNameEvent::Claimed(NameClaim { name: name.as_str().to_owned(), deployment_id: *deployment_id })]),
            },
            NameCommand::Release { name, deployment_id } if state.holder == Some(*deployment_id) => {
                Ok(vec![DeploymentNameEvent::Released(NameClaim { name: name.clone(), deployment_id: *deployment_id })])
            }
            NameCommand::Release { .. } => Ok(vec![]),
        }
    }

    fn evolve(mut state: NameState, event: &DeploymentNameEvent) -> NameState {
        state.holder = match event {
            DeploymentNameEvent::Claimed(c) => Some(c.deployment_id),
            DeploymentNameEvent::Released(_) => None,
        };
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

    fn claim(id: u128) -> NameCommand {
        NameCommand::Claim { name: DnsLabel::parse("name", "pr-1").unwrap(), deployment_id: Uuid::from_u128(id) }
    }
    fn claimed(id: u128) -> DeploymentNameEvent {
        DeploymentNameEvent::Claimed(NameClaim { name: "pr-1".into(), deployment_id: Uuid::from_u128(id) })
    }

    #[test]
    fn a_name_is_held_once_until_released_by_its_holder() {
        let given = [claimed(1)];
        assert!(matches!(DeploymentName::decide(&claim(2), &fold::<DeploymentName>(&given)), Err(DomainError::Conflict(_))));
        assert_eq!(DeploymentName::decide(&claim(1), &fold::<DeploymentName>(&given)), Ok(vec![]), "claiming again is a no-op");
        let by_other = NameCommand::Release { name: "pr-1".into(), deployment_id: Uuid::from_u128(2) };
        assert_eq!(DeploymentName::decide(&by_other, &fold::<DeploymentName>(&given)), Ok(vec![]));
        let release = NameCommand::Release { name: "pr-1".into(), deployment_id: Uuid::from_u128(1) };
        let released = DeploymentName::decide(&release, &fold::<DeploymentName>(&given)).unwrap();
        let mut history = given.to_vec();
        history.extend(released);
        assert_eq!(DeploymentName::decide(&claim(2), &fold::<DeploymentName>(&history)), Ok(vec![claimed(2)]));
    }
}
