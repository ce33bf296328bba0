//! Validated names: a value of these types is valid by construction.

use crate::DomainError;
use std::fmt;

/// A login name: 1 to 64 characters of lower-case letters, digits, `.`, `_` and `-`, starting
/// with a letter or digit. Also a stream key, so it must stay this strict.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
        let first_ok = raw.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if raw.is_empty() || raw.len() > 64 || !first_ok || !raw.chars().all(ok_char) {
            return Err(DomainError::invalid(
                "username",
                "use 1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
            ));
        }
        Ok(Username(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A new password as typed: 10 to 1024 characters. Only its hash ever leaves the request.
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 10;
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let chars = raw.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(DomainError::invalid("password", format!("use at least {} characters", Self::MIN_CHARS)));
        }
        if raw.len() > 1024 {
            return Err(DomainError::invalid("password", "use at most 1024 bytes"));
        }
        Ok(Password(raw.to_owned()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A label for a personal API token: 1 to 100 printable characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

impl TokenName {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 100 || trimmed.chars().any(char::is_control) {
            return Err(DomainError::invalid("name", "use 1 to 100 printable characters"));
        }
        Ok(TokenName(trimmed.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_checked_at_construction() {
        assert!(Username::parse("alice").is_ok());
        assert!(Username::parse("ci-bot.2").is_ok());
        for bad in ["", "Alice", "-x", "a b", "a/b", &"a".repeat(65), "ünï"] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_have_a_minimum_and_never_print() {
        assert!(Password::parse("short").is_err());
        let p = Password::parse("long enough pass").unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
    }

    #[test]
    fn token_names_are_trimmed_and_printable() {
        assert_eq!(TokenName::parse("  ci  ").unwrap().as_str(), "ci");
        assert!(TokenName::parse("\u{7}").is_err());
        assert!(TokenName::parse("   ").is_err());
    }
}
