//! Project secrets (stream `secrets-<project id>`): named values, each sealed under its own data
//! key by the command layer. Decisions see only ciphertext and key ids, and the sizes in clear
//! (`Sealed::plaintext_len`), which the limits count: at most [`MAX_SECRETS`] a project, and
//! [`MAX_SECRETS_BYTES`] of names and values together, the same limits a node's desired state
//! is checked against (they come from `nullops-wire`), so a project can never hold secrets its
//! deployments could not carry.

use std::collections::BTreeMap;

use nullops_events::catalog::{Access, Sealed, SecretDeleted, SecretEvent, SecretSet};
use nullops_events::DomainEvent;
use uuid::Uuid;

use crate::{access, Decider, DomainError, SecretName};

pub use nullops_events::catalog::{MAX_SECRETS, MAX_SECRETS_BYTES, MAX_SECRET_VALUE_BYTES};

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
                if retired_key.is_none() && state.values.len() >= MAX_SECRETS {
                    return Err(DomainError::invalid(
                        "name",
                        format!("project {project} holds {} secrets, the most a project may hold ({MAX_SECRETS}); delete one first", state.values.len()),
                    ));
                }
                if value.plaintext_len() > MAX_SECRET_VALUE_BYTES {
                    return Err(DomainError::invalid("value", format!("a secret's value may take at most {MAX_SECRET_VALUE_BYTES} bytes")));
                }
                let others: usize = state.values.iter().filter(|(n, _)| n.as_str() != name.as_str()).map(|(n, v)| n.len() + v.plaintext_len()).sum();
                let total = others + name.as_str().len() + value.plaintext_len();
                if total > MAX_SECRETS_BYTES {
                    return Err(DomainError::invalid(
                        "value",
                        format!(
                            "a project's secrets may take at most {MAX_SECRETS_BYTES} bytes (1 MiB), names and values together; with this value project {project}'s would take {total}"
                        ),
                    ));
                }
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
        Sealed { key_id: Uuid::from_u128(key), nonce: vec![0; 12], ciphertext: vec![9; 1 + nullops_events::catalog::SEAL_TAG_BYTES] }
    }
    /// `name` set to a value of `len` bytes in clear.
    fn set_sized(name: &str, len: usize) -> SecretCommand {
        let value = Sealed { key_id: Uuid::now_v7(), nonce: vec![0; 12], ciphertext: vec![0; len + nullops_events::catalog::SEAL_TAG_BYTES] };
        SecretCommand::Set { access: Some(Access::Full), project: "shop".into(), name: SecretName::parse(name).unwrap(), value }
    }
    fn given(commands: impl IntoIterator<Item = SecretCommand>) -> SecretsState {
        commands.into_iter().fold(SecretsState::default(), |state, c| Secrets::decide(&c, &state).unwrap().iter().fold(state, Secrets::evolve))
    }

    #[test]
    fn a_project_holds_at_most_256_secrets() {
        let full = given((0..MAX_SECRETS).map(|i| set_sized(&format!("S{i}"), 1)));
        let refused = Secrets::decide(&set_sized("ONE_MORE", 1), &full);
        assert!(matches!(&refused, Err(DomainError::InvalidInput { field, message }) if *field == "name" && message.contains("256")), "{refused:?}");
        // Replacing one of them is not one more.
        assert!(Secrets::decide(&set_sized("S7", 2), &full).is_ok());
    }

    #[test]
    fn a_projects_secrets_take_at_most_1_mib_names_and_values_together() {
        let value = |name: &str| MAX_SECRET_VALUE_BYTES - name.len();
        let full = given((0..16).map(|i| format!("S{i:02}")).map(|n| set_sized(&n, value(&n))));
        let refused = Secrets::decide(&set_sized("X", 1), &full);
        assert!(matches!(&refused, Err(DomainError::InvalidInput { field, message }) if *field == "value" && message.contains("1 MiB")), "{refused:?}");
        // A smaller value in place of one of them fits.
        assert!(Secrets::decide(&set_sized("S03", 10), &full).is_ok());
        assert!(Secrets::decide(&set_sized("BIG", MAX_SECRET_VALUE_BYTES + 1), &SecretsState::default()).is_err());
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
