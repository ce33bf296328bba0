//! The access rule, in one place for commands (from catalog state) and queries (from read models).
//!
//! - An admin (a role on the user) may do everything.
//! - Anyone else holds on a project the highest grant that any of their teams holds on it, and on
//!   an environment likewise. Several teams may hold grants on one target; the highest wins.
//! - Access to a deployment is the highest grant any of the user's teams holds on its project or
//!   on its environment.
//! - No grant means no access: the target is not even visible.
//! - `READ_ONLY` sees; `FULL` sees and changes. Defining the catalog itself (teams, grants,
//!   registries, services, plugins, environments, projects) is for admins only.

use nullops_events::catalog::Access;

use crate::DomainError;

/// The effective access of a user holding `grants` (from all their teams, on every target that
/// counts for the operation).
pub fn effective(is_admin: bool, grants: impl IntoIterator<Item = Access>) -> Option<Access> {
    if is_admin {
        Some(Access::Full)
    } else {
        grants.into_iter().max()
    }
}

/// Refuses unless `held` is at least `needed`; `what` names the target for the message.
pub fn require(held: Option<Access>, needed: Access, what: &str) -> Result<(), DomainError> {
    match held {
        Some(a) if a >= needed => Ok(()),
        Some(_) => Err(DomainError::Forbidden(format!("you have read-only access to {what}"))),
        None => Err(DomainError::Forbidden(format!("you have no access to {what}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Access::*;

    #[test]
    fn the_highest_grant_of_any_team_wins_and_admins_hold_full() {
        assert_eq!(effective(false, []), None);
        assert_eq!(effective(false, [ReadOnly]), Some(ReadOnly));
        assert_eq!(effective(false, [ReadOnly, Full, ReadOnly]), Some(Full));
        assert_eq!(effective(true, []), Some(Full));
    }

    #[test]
    fn read_only_sees_but_does_not_change() {
        assert!(require(Some(ReadOnly), ReadOnly, "project shop").is_ok());
        let denied = require(Some(ReadOnly), Full, "project shop").unwrap_err();
        assert_eq!(denied, DomainError::Forbidden("you have read-only access to project shop".into()));
        assert!(require(None, ReadOnly, "project shop").is_err());
    }
}
