//! How often the background processes act and how long they wait: the one home of every pause
//! a process takes on its own (a pause a process waits out while nothing else wakes it).
//!
//! Each has a default fit for production. An operator may change any of them with
//! `--pacing name=duration,...` (`NULLOPS_PACING`), within bounds that keep a process from
//! spinning or from never acting; the test servers run the processes quicker this way, so that
//! the tests do not wait real minutes for what they check.

use std::fmt;
use std::time::Duration;

macro_rules! pacing {
    ($($(#[doc = $doc:literal])* $field:ident = $default:expr, at least $min:expr, at most $max:expr;)+) => {
        /// The pauses of the background processes (see the module's documentation).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Pacing {
            $($(#[doc = $doc])* pub $field: Duration,)+
        }

        impl Default for Pacing {
            fn default() -> Self {
                Pacing { $($field: $default,)+ }
            }
        }

        impl Pacing {
            /// Every pause's name, as `--pacing` takes it.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),+];

            /// The pause called `name`, with its bounds.
            fn slot(&mut self, name: &str) -> Option<(&mut Duration, Duration, Duration)> {
                match name {
                    $(stringify!($field) => Some((&mut self.$field, $min, $max)),)+
                    _ => None,
                }
            }
        }
    };
}

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

pacing! {
    /// How long a request waits for a node of its environment to come online (or to report its
    /// size, as after a restart) before it is rejected for want of room.
    node_grace = 15 * SECOND, at least 100 * MS, at most 10 * MINUTE;
    /// How often the reaper looks for deployments whose lifetime ended.
    reap_every = SECOND, at least 100 * MS, at most MINUTE;
    /// The pause after a webhook's first failed attempt; each failure in a row doubles it.
    webhook_first_pause = SECOND, at least 10 * MS, at most MINUTE;
    /// The longest pause between a failing webhook's attempts.
    webhook_max_pause = 30 * SECOND, at least 10 * MS, at most HOUR;
    /// How long one webhook attempt may take before it counts as failed.
    webhook_attempt_timeout = 10 * SECOND, at least 100 * MS, at most MINUTE;
    /// How often the registry is asked for a tag a preview waits for.
    preview_tag_poll = 5 * SECOND, at least 100 * MS, at most 10 * MINUTE;
    /// How long a preview waits for its tag to appear before it gives up.
    preview_tag_wait = 15 * MINUTE, at least SECOND, at most 24 * HOUR;
    /// How often sealed data keys that nothing uses any more are looked for.
    key_sweep_every = HOUR, at least SECOND, at most 7 * 24 * HOUR;
    /// How long an unused data key is kept before it is destroyed (a command using it may be
    /// on its way).
    key_sweep_grace = 15 * MINUTE, at least SECOND, at most 7 * 24 * HOUR;
}

/// Why `--pacing` was refused, in words that say what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacingError {
    #[error("{0:?} is not name=duration (as in webhook_max_pause=10s)")]
    NotAPair(String),
    #[error("there is no pause called {0:?}; the pauses are: {names}", names = Pacing::NAMES.join(", "))]
    UnknownName(String),
    #[error("{name}={value:?}: a duration is a whole number with ms, s, m or h (as in 500ms or 2m)")]
    NotADuration { name: String, value: String },
    #[error("{name} must be between {} and {}", Shown(*min), Shown(*max))]
    OutOfBounds { name: String, min: Duration, max: Duration },
}

impl PacingError {
    /// The stable code of every `--pacing` refusal.
    pub const CODE: &'static str = "INVALID_PACING";
}

impl Pacing {
    /// The defaults with `spec`'s changes (`name=duration`, comma-separated; empty: none).
    pub fn parse(spec: &str) -> Result<Pacing, PacingError> {
        let mut pacing = Pacing::default();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').ok_or_else(|| PacingError::NotAPair(pair.to_owned()))?;
            let (name, value) = (name.trim(), value.trim());
            let (slot, min, max) = pacing.slot(name).ok_or_else(|| PacingError::UnknownName(name.to_owned()))?;
            let duration = duration(value).ok_or_else(|| PacingError::NotADuration { name: name.to_owned(), value: value.to_owned() })?;
            if duration < min || duration > max {
                return Err(PacingError::OutOfBounds { name: name.to_owned(), min, max });
            }
            *slot = duration;
        }
        if pacing.webhook_first_pause > pacing.webhook_max_pause {
            let max = pacing.webhook_max_pause;
            return Err(PacingError::OutOfBounds { name: "webhook_first_pause".into(), min: 10 * MS, max });
        }
        Ok(pacing)
    }
}

/// `500ms`, `10s`, `2m`, `1h`.
fn duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit = match unit {
        "ms" => MS,
        "s" => SECOND,
        "m" => MINUTE,
        "h" => HOUR,
        _ => return None,
    };
    unit.checked_mul(u32::try_from(n).ok()?)
}

/// `d` as a person reads it, in the unit `--pacing` would take it in (`10s`, `500ms`).
pub fn shown(d: Duration) -> String {
    Shown(d).to_string()
}

/// A duration in the unit `--pacing` would take it in.
struct Shown(Duration);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
            if ms >= size && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_given_is_the_defaults_and_each_pause_is_changed_by_its_name() {
        assert_eq!(Pacing::parse("").unwrap(), Pacing::default());
        let quick = Pacing::parse(" webhook_first_pause=100ms, webhook_max_pause=2s ,preview_tag_poll=1m").unwrap();
        assert_eq!((quick.webhook_first_pause, quick.webhook_max_pause, quick.preview_tag_poll), (100 * MS, 2 * SECOND, MINUTE));
        assert_eq!(quick.node_grace, Pacing::default().node_grace);
        assert_eq!(Pacing::NAMES.len(), 9);
    }

    #[test]
    fn what_cannot_be_read_is_refused_saying_what_to_write() {
        assert_eq!(Pacing::parse("reap_every").unwrap_err(), PacingError::NotAPair("reap_every".into()));
        let unknown = Pacing::parse("reap_evry=1s").unwrap_err();
        assert!(unknown.to_string().contains("reap_every, webhook_first_pause"), "{unknown}");
        for bad in ["1.5s", "10", "s", "-1s", "10 days"] {
            assert!(matches!(Pacing::parse(&format!("reap_every={bad}")), Err(PacingError::NotADuration { .. })), "{bad}");
        }
        let spinning = Pacing::parse("reap_every=1ms").unwrap_err();
        assert_eq!(spinning.to_string(), "reap_every must be between 100ms and 1m");
        let crossed = Pacing::parse("webhook_first_pause=10s,webhook_max_pause=1s").unwrap_err();
        assert_eq!(crossed.to_string(), "webhook_first_pause must be between 10ms and 1s");
    }
}
