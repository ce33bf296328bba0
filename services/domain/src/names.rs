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
            return Err(DomainError::invalid("username", "use 1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"));
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

/// A DNS label (RFC 1123): 1 to 63 lower-case letters, digits and `-`, neither first nor last a
/// `-`. Names of teams, registries, services, plugins, environments and projects are labels, since
/// services, deployments and environments become host names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsLabel(String);

impl DnsLabel {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, DomainError> {
        let ok = !raw.is_empty()
            && raw.len() <= 63
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-')
            && !raw.ends_with('-');
        if !ok {
            return Err(DomainError::invalid(
                field,
                format!("{raw:?} is not a DNS label: use 1 to 63 lower-case letters, digits or '-', not starting or ending with '-'"),
            ));
        }
        Ok(DnsLabel(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Display for DnsLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DNS domain of one or more labels, such as `qa.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, DomainError> {
        let lower = raw.trim_end_matches('.').to_ascii_lowercase();
        if lower.is_empty() || lower.len() > 253 || lower.split('.').any(|l| DnsLabel::parse(field, l).is_err()) {
            return Err(DomainError::invalid(field, format!("{raw:?} is not a domain name such as qa.example.com")));
        }
        Ok(DomainName(lower))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A secret's name, as referenced by `${{ secrets.NAME }}`: an upper-case identifier of at most
/// 128 characters (letters, digits, `_`; not starting with a digit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretName(String);

impl SecretName {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = !raw.is_empty()
            && raw.len() <= 128
            && raw.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            && !raw.as_bytes()[0].is_ascii_digit();
        if !ok {
            return Err(DomainError::invalid(
                "name",
                format!("{raw:?} is not a secret name: use upper-case letters, digits and '_', not starting with a digit (e.g. DB_PASSWORD)"),
            ));
        }
        Ok(SecretName(raw.to_owned()))
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
    fn labels_domains_and_secret_names_are_checked_at_construction() {
        assert!(DnsLabel::parse("name", "shop-api2").is_ok());
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(DnsLabel::parse("name", bad).is_err(), "{bad:?}");
        }
        assert_eq!(DomainName::parse("d", "QA.Example.com.").unwrap().as_str(), "qa.example.com");
        assert!(DomainName::parse("d", "a..b").is_err());
        assert!(SecretName::parse("DB_PASSWORD").is_ok());
        for bad in ["", "db", "1X", "A-B"] {
            assert!(SecretName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn token_names_are_trimmed_and_printable() {
        assert_eq!(TokenName::parse("  ci  ").unwrap().as_str(), "ci");
        assert!(TokenName::parse("\u{7}").is_err());
        assert!(TokenName::parse("   ").is_err());
    }
}
