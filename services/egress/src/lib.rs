//! Where the platform's own HTTP calls may go: webhook deliveries, forge statuses and comments,
//! registry tag listings. The URLs come from admins (and a registry's answers: redirects, token
//! realms), so unguarded they reach the platform's own API, metrics and ingress, the cloud's
//! metadata service and every private network the server sits in, and what is recorded of the
//! answers (status, error, time) maps them.
//!
//! [`Egress`] is the one policy: the platform's own listeners are never called; loopback,
//! link-local, private, shared and reserved addresses and this machine's own addresses only
//! when an admin allows them by name or range ([`ALLOW_VAR`]). It is applied
//! - when a URL is saved ([`Egress::vet`]): the admin reads why beside the field;
//! - before every call ([`Egress::admit`]): addresses written in the URL, and the own
//!   listeners behind a name;
//! - when a name is resolved for a connection ([`Egress::client`]'s resolver): what a name
//!   resolves to then is what is connected to, so a name that changes its answer between the
//!   check and the call (DNS rebinding) gains nothing;
//! - on every redirect that is followed ([`Egress::redirects`]).
//!
//! A failed call is told as a class of failure in our words ([`Failure`]), never the library's
//! text.

mod address;
mod failure;
mod resolve;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use address::Reach;
pub use failure::{failure, Failure};
use ipnet::IpNet;
use reqwest::Url;

/// The environment variable with the names and ranges an admin allows although they are
/// private: comma-separated host names (`registry.internal`), wildcards (`*.corp.example`),
/// addresses and ranges (`10.0.0.0/8`, `fd00::/8`).
pub const ALLOW_VAR: &str = "NULLOPS_ALLOWED_PRIVATE_TARGETS";

/// Bound on resolving one name.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a URL is not called. Its text is for the admin who gave the URL: it says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("use an http:// or https:// URL")]
    Scheme,
    #[error("the URL names no host")]
    NoHost,
    #[error("{host} port {port} is NullOps itself (its API, ingress, agent or metrics): it never calls itself")]
    OwnListener { host: String, port: u16 },
    #[error("{} is {}: NullOps calls such addresses only where its server allows them by name or range ({ALLOW_VAR})", at(.host, .ip), .reach.noun())]
    Inside { host: String, ip: IpAddr, reach: Reach },
    #[error("{host} does not resolve to any address")]
    NoSuchName { host: String },
}

/// `host (ip)`, or the address alone when that is how the URL named it.
fn at(host: &str, ip: &IpAddr) -> String {
    if host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|h| h == *ip) || host == ip.to_string() {
        ip.to_string()
    } else {
        format!("{host} ({ip})")
    }
}

/// One entry an admin allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Range(IpNet),
    /// A host name, lower case.
    Name(String),
    /// `*.corp.example`: kept as `.corp.example`.
    Suffix(String),
}

/// The policy of one process's outgoing calls. Shared (`Arc`) by every client that follows it.
#[derive(Debug, Default)]
pub struct Egress {
    allowed: Vec<Allowed>,
    /// This process's own listeners, as they bind (port 0 is only known then).
    own: RwLock<Vec<SocketAddr>>,
}

/// An entry of [`ALLOW_VAR`] that is none of the forms it takes; says which, and the forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ALLOW_VAR}: {entry:?} is not a host name, a *.domain wildcard, an address or a range such as 10.0.0.0/8")]
pub struct BadAllowEntry {
    pub entry: String,
}

impl Egress {
    /// The policy allowing `list` ([`ALLOW_VAR`]'s syntax).
    pub fn new(list: &str) -> Result<Self, BadAllowEntry> {
        let allowed = list.split(',').map(str::trim).filter(|e| !e.is_empty()).map(parse_allowed).collect::<Result<_, _>>()?;
        Ok(Egress { allowed, own: RwLock::default() })
    }

    /// The policy [`ALLOW_VAR`] asks for (none allowed when it is unset).
    pub fn from_env() -> Result<Self, BadAllowEntry> {
        Self::new(&std::env::var(ALLOW_VAR).unwrap_or_default())
    }

    /// Records a listener of this process: never called, whatever is allowed.
    pub fn listening(&self, addr: SocketAddr) {
        let mut own = self.own.write().unwrap_or_else(|e| e.into_inner());
        if !own.contains(&addr) {
            own.push(addr);
        }
    }

    fn is_own_port(&self, port: u16) -> bool {
        self.own.read().unwrap_or_else(|e| e.into_inner()).iter().any(|a| a.port() == port)
    }

    fn allows_name(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed.iter().any(|a| match a {
            Allowed::Name(n) => *n == host,
            Allowed::Suffix(s) => host.ends_with(s.as_str()),
            Allowed::Range(_) => false,
        })
    }

    fn allows_address(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|a| matches!(a, Allowed::Range(r) if r.contains(&ip)))
    }

    /// Whether `ip`, reached as `host`, may be connected to (on `port`, when known).
    pub fn judge(&self, host: &str, ip: IpAddr, port: Option<u16>) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        let this_host = address::is_this_host(ip);
        if let Some(port) = port.filter(|p| this_host && self.is_own_port(*p)) {
            return Err(Refusal::OwnListener { host: host.to_owned(), port });
        }
        let Some(reach) = address::special(ip).or(this_host.then_some(Reach::ThisHost)) else { return Ok(()) };
        if self.allows_name(host) || self.allows_address(ip) {
            return Ok(());
        }
        Err(Refusal::Inside { host: host.to_owned(), ip, reach })
    }

    /// The URL, when it may be saved: its scheme, the address it names, and every address its
    /// name resolves to now. A name that does not resolve now is not held against it (it may
    /// later); [`Egress::admit`] and the resolver judge again at each call.
    pub async fn vet(&self, url: &str) -> Result<Url, Refusal> {
        let url = self.literal(url)?;
        let (host, port) = host_port(&url)?;
        if let Host::Name(name) = &host {
            if let Ok(addrs) = resolve::lookup(name).await {
                for addr in addrs {
                    self.judge(name, addr.ip(), Some(port))?;
                }
            }
        }
        Ok(url)
    }

    /// Whether `url` may be called now: its scheme and written address, and (when its port is
    /// one of this process's listeners) what its name resolves to. Names are judged again as
    /// they are resolved for the connection.
    pub async fn admit(&self, url: &Url) -> Result<(), Refusal> {
        self.literal_url(url)?;
        let (host, port) = host_port(url)?;
        if let Host::Name(name) = &host {
            if self.is_own_port(port) {
                for addr in resolve::lookup(name).await.unwrap_or_default() {
                    self.judge(name, addr.ip(), Some(port))?;
                }
            }
        }
        Ok(())
    }

    fn literal(&self, url: &str) -> Result<Url, Refusal> {
        let url = Url::parse(url.trim()).map_err(|_| Refusal::Scheme)?;
        self.literal_url(&url)?;
        Ok(url)
    }

    /// What can be judged without resolving: the scheme and an address written in the URL.
    fn literal_url(&self, url: &Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme);
        }
        match host_port(url)? {
            (Host::Address(ip), port) => self.judge(&ip.to_string(), ip, Some(port)),
            (Host::Name(_), _) => Ok(()),
        }
    }

    /// An HTTP client that resolves names through this policy: `builder` with its resolver set.
    pub fn client(self: &Arc<Self>, builder: reqwest::ClientBuilder) -> reqwest::Client {
        builder.dns_resolver(Arc::new(resolve::Guarded(self.clone()))).build().expect("an HTTP client with rustls and a resolver builds")
    }

    /// A redirect policy following at most `max` redirects, each to a URL this policy admits
    /// (its address; names are judged as they resolve).
    pub fn redirects(self: &Arc<Self>, max: usize) -> reqwest::redirect::Policy {
        let egress = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max {
                return attempt.error(TooManyRedirects(max));
            }
            match egress.literal_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refusal) => attempt.error(refusal),
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("more than {0} redirects")]
pub struct TooManyRedirects(usize);

enum Host {
    Address(IpAddr),
    Name(String),
}

fn host_port(url: &Url) -> Result<(Host, u16), Refusal> {
    let port = url.port_or_known_default().ok_or(Refusal::Scheme)?;
    let host = match url.host() {
        None => return Err(Refusal::NoHost),
        Some(url::Host::Ipv4(ip)) => Host::Address(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Host::Address(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => Host::Name(name.to_owned()),
    };
    Ok((host, port))
}

fn parse_allowed(entry: &str) -> Result<Allowed, BadAllowEntry> {
    let bad = || BadAllowEntry { entry: entry.to_owned() };
    if entry.contains('/') {
        return entry.parse::<IpNet>().map(|n| Allowed::Range(n.trunc())).map_err(|_| bad());
    }
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Ok(Allowed::Range(IpNet::from(ip)));
    }
    let lower = entry.to_ascii_lowercase();
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest.to_owned()),
        None => (false, lower),
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-'));
    match (valid, suffix) {
        (false, _) => Err(bad()),
        (true, true) => Ok(Allowed::Suffix(format!(".{name}"))),
        (true, false) => Ok(Allowed::Name(name)),
    }
}

#[cfg(test)]
mod tests;
