//! The Host header of a request: a DNS name (and maybe a port), checked before anything is
//! looked up, so a hostile header gets a clean refusal.

/// Longest DNS name.
const MAX_NAME: usize = 253;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the request names no host")]
    Missing,
    #[error("the host name is longer than {MAX_NAME} characters")]
    TooLong,
    #[error("the host is not a DNS name: {0}")]
    Invalid(&'static str),
}

/// The lower-cased name in a Host header value (`name[:port]`, a trailing dot allowed), without
/// its port.
pub fn parse_host(raw: &str) -> Result<String, HostError> {
    if raw.is_empty() {
        return Err(HostError::Missing);
    }
    if raw.len() > MAX_NAME + 7 {
        return Err(HostError::TooLong);
    }
    if raw.starts_with('[') {
        return Err(HostError::Invalid("an address literal names no deployment"));
    }
    let name = match raw.rsplit_once(':') {
        Some((name, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u32>().map_or(true, |p| p > 65_535) {
                return Err(HostError::Invalid("the port is not a number from 0 to 65535"));
            }
            name
        }
        None => raw,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(HostError::Missing);
    }
    if name.len() > MAX_NAME {
        return Err(HostError::TooLong);
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(HostError::Invalid("a label is empty or longer than 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || label.starts_with('-') || label.ends_with('-') {
            return Err(HostError::Invalid("a label holds something other than letters, digits and inner hyphens"));
        }
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_cased_without_port_or_trailing_dot() {
        assert_eq!(parse_host("Web.PR-42.Staging.QA.example.com:8080"), Ok("web.pr-42.staging.qa.example.com".into()));
        assert_eq!(parse_host("web.pr-42.local.localhost."), Ok("web.pr-42.local.localhost".into()));
    }

    #[test]
    fn hostile_hosts_are_refused_cleanly() {
        assert_eq!(parse_host(""), Err(HostError::Missing));
        assert_eq!(parse_host(&"a.".repeat(200)), Err(HostError::TooLong));
        for bad in ["web..local", "web_1.x", "-web.x", "web.x:", "web.x:99999", "web.x:8a", "[::1]:80", "web.x/../etc", "web x", "wéb.x", "http://web.x"] {
            assert!(matches!(parse_host(bad), Err(HostError::Invalid(_))), "{bad}");
        }
    }
}
