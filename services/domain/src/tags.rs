//! Image tags: which a service may run (its glob pattern) and in what order they are offered.

use std::cmp::Ordering;

use crate::DomainError;

/// A tag as registries accept it: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn check_tag(field: &'static str, tag: &str) -> Result<(), DomainError> {
    let ok =
        (1..=128).contains(&tag.len()) && !tag.starts_with(['.', '-']) && tag.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(field, format!("{tag:?} is not an image tag: use letters, digits, '.', '_' and '-' (at most 128)")))
    }
}

/// A glob over tags: `*` matches any run of characters, `?` any one; everything else itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPattern(String);

impl TagPattern {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = (1..=128).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'*' | b'?'));
        if !ok {
            return Err(DomainError::invalid("tagPattern", format!("{raw:?} is not a tag pattern such as v*, 1.2.* or feature-*")));
        }
        Ok(TagPattern(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, tag: &str) -> bool {
        glob(self.0.as_bytes(), tag.as_bytes())
    }
}

/// Iterative glob match with one backtrack point: linear in practice, never exponential.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// A tag read as a version: optional `v`, dot-separated numbers, optional `-prerelease`.
#[derive(Debug, PartialEq, Eq)]
struct Version<'a> {
    numbers: Vec<u64>,
    prerelease: Option<&'a str>,
}

fn version(tag: &str) -> Option<Version<'_>> {
    let bare = tag.strip_prefix('v').unwrap_or(tag);
    let (core, prerelease) = match bare.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (bare, None),
    };
    let numbers: Option<Vec<u64>> = core.split('.').map(|n| n.parse().ok()).collect();
    numbers.filter(|n| !n.is_empty() && n.len() <= 4).map(|numbers| Version { numbers, prerelease })
}

/// Newest first: versions by number (a release above its pre-releases), then every other tag
/// in reverse lexical order (so dated tags come newest first too).
pub fn newest_first(a: &str, b: &str) -> Ordering {
    match (version(a), version(b)) {
        (Some(va), Some(vb)) => {
            let by_number = vb.numbers.iter().chain(std::iter::repeat(&0)).take(4).cmp(va.numbers.iter().chain(std::iter::repeat(&0)).take(4));
            by_number
                .then_with(|| match (va.prerelease, vb.prerelease) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                    (Some(pa), Some(pb)) => pb.cmp(pa),
                })
                .then_with(|| b.cmp(a))
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => b.cmp(a),
    }
}

/// The tags a service may offer, filtered by its pattern and sorted newest first.
pub fn selectable(mut tags: Vec<String>, pattern: Option<&TagPattern>) -> Vec<String> {
    tags.retain(|t| pattern.is_none_or(|p| p.matches(t)));
    tags.sort_by(|a, b| newest_first(a, b));
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_shells_do() {
        let p = |s| TagPattern::parse(s).unwrap();
        assert!(p("v*").matches("v1.2.3"));
        assert!(!p("v*").matches("1.2.3"));
        assert!(p("1.2.*").matches("1.2.10"));
        assert!(!p("1.2.*").matches("1.20.0"));
        assert!(p("feature-*").matches("feature-login"));
        assert!(p("*-rc?").matches("2.0-rc1"));
        assert!(p("a*b*c").matches("aXbYc") && !p("a*b*c").matches("aXbY"));
        assert!(TagPattern::parse("v[0-9]").is_err());
    }

    #[test]
    fn versions_sort_newest_first_and_other_tags_after() {
        let tags = ["v1.2.0", "latest", "v1.10.0", "v1.2.0-rc1", "1.9", "v2.0.0", "feature-x"].map(String::from).to_vec();
        assert_eq!(selectable(tags, None), ["v2.0.0", "v1.10.0", "1.9", "v1.2.0", "v1.2.0-rc1", "latest", "feature-x"]);
    }

    #[test]
    fn tags_are_checked() {
        assert!(check_tag("tag", "v1.2.3_build-7").is_ok());
        for bad in ["", ".x", "-x", "a/b", "a b", &"a".repeat(129)] {
            assert!(check_tag("tag", bad).is_err(), "{bad:?}");
        }
    }
}
