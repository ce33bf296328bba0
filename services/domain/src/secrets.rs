//! Project secrets (stream `secrets-<project id>`): named values, each sealed under its own data
//! key by the command layer. Decisions see only ciphertext and key ids.

use std::collections::BTreeMap;

use nullops_events::catalog::{Access, Sealed, SecretDeleted, SecretEvent, SecretSet};
use nullops_events::DomainEvent;
use uuid::Uuid;

use crate::{access, Decider, DomainError, SecretName};

pub enum SecretCommand {
    /// Creates or replaces a secret. `access` is the caller's access to the project.
    Set {
        access: Option<Access>,
        project: String,
        name: SecretName,
        value: Sealed,
    },
    Delete {
        access: Option<Access>,
        project: String,
        name: SecretName,
    },
}

/// Secret name to the data key of its current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretsState {
    pub keys: BTreeMap<String, Uuid>,
    /// Each secret's sealed value, for the platform to unseal when a deployment runs.
    pub values: BTreeMap<String, Sealed>,
}

/// The associated data that binds a sealed secret to its project and name.
pub fn secret_purpose(project_id: Uuid, name: &str) -> String {
    format!("secret:{project_id}:{name}")
}

pub struct Secrets;

impl Decider for Secrets {
    type Command = SecretCommand;
    type Event = SecretEvent;
    type State = SecretsState;
    const KIND: &'static str = "secrets";

    fn decide(command: &SecretCommand, state: &SecretsState) -> Result<Vec<SecretEvent>, DomainError> {
        match command {
            SecretCommand::Set { access, project, name, value } => {
                access::require(*access, Access::Full, &format!("project {project}"))?;
                let retired_key = state.keys.get(name.as_str()).copied();
                let set = SecretSet { name: name.as_str().to_owned(), value: value.clone(), retired_key };
                Ok(vec![if retired_key.is_some() { SecretEvent::Updated(set) } else { SecretEvent::Created(set) }])
            }
            SecretCommand::Delete { access, project, name } => {
                access::require(*access, Access::Full, &format!("project {project}"))?;
                let key =
                    state.keys.get(name.as_str()).ok_or_else(|| DomainError::NotFound(format!("project {project} has no secret named {}", name.as_str())))?;
                Ok(vec![SecretEvent::Deleted(SecretDeleted { name: name.as_str().to_owned(), retired_key: *key })])
            }
        }
    }

    fn evolve(mut state: SecretsState, event: &SecretEvent) -> SecretsState {
        match event {
            SecretEvent::Created(s) | SecretEvent::Updated(s) => {
                state.keys.insert(s.name.clone(), s.value.key_id);
                state.values.insert(s.name.clone(), s.value.clone());
            }
            SecretEvent::Deleted(d) => {
                state.keys.remove(&d.name);
                state.values.remove(&d.name);
            }
        }
        state
    }

    fn select(event: DomainEvent) -> Option<SecretEvent> {
        match event {
            DomainEvent::Secret(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold;

    fn sealed(key: u128) -> Sealed {
        Sealed { key_id: Uuid::from_u128(key), nonce: vec![0; 12], ciphertext: vec![9] }
    }
    fn set(key: u128, access: Option<Access>) -> SecretCommand {
        SecretCommand::Set { access, project: "shop".into(), name: SecretName::parse("DB_PASSWORD").unwrap(), value: sealed(key) }
    }

    #[test]
    fn replacing_a_secret_retires_the_old_data_key() {
        let created = Secrets::decide(&set(1, Some(Access::Full)), &SecretsState::default()).unwrap();
        assert!(matches!(&created[..], [SecretEvent::Created(SecretSet { retired_key: None, .. })]));
        let updated = Secrets::decide(&set(2, Some(Access::Full)), &fold::<Secrets>(&created)).unwrap();
        assert!(matches!(&updated[..], [SecretEvent::Updated(SecretSet { retired_key: Some(k), .. })] if *k == Uuid::from_u128(1)));
    }

    #[test]
    fn deleting_names_the_key_to_destroy_and_unknown_secrets_are_not_found() {
        let given = fold::<Secrets>(&Secrets::decide(&set(1, Some(Access::Full)), &SecretsState::default()).unwrap());
        let delete = |name: &str| SecretCommand::Delete { access: Some(Access::Full), project: "shop".into(), name: SecretName::parse(name).unwrap() };
        assert_eq!(
            Secrets::decide(&delete("DB_PASSWORD"), &given).unwrap(),
            [SecretEvent::Deleted(SecretDeleted { name: "DB_PASSWORD".into(), retired_key: Uuid::from_u128(1) })]
        );
        assert!(matches!(Secrets::decide(&delete("OTHER"), &given), Err(DomainError::NotFound(_))));
    }

    #[test]
    fn only_full_access_changes_secrets() {
        for access in [None, Some(Access::ReadOnly)] {
            assert!(matches!(Secrets::decide(&set(1, access), &SecretsState::default()), Err(DomainError::Forbidden(_))));
        }
    }
}
