//! Where deployment networks take their addresses: a /24 each from the agent's pool (by
//! default `10.214.0.0/16`, so 256 deployments a node), never overlapping a network the engine
//! already has. Docker's own default pools hold about thirty networks in all, which would cap a
//! node at about thirty deployments.

use std::net::Ipv4Addr;

/// The prefix length of each deployment network.
pub const NETWORK_PREFIX: u8 = 24;
/// The default pool.
pub const DEFAULT_POOL: &str = "10.214.0.0/16";

/// Why a range was refused, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRange {
    #[error("{0:?} is not an IPv4 range such as 10.214.0.0/16")]
    NotARange(String),
    #[error("{given:?} has host bits set: its network is {network}")]
    HostBitsSet { given: String, network: Subnet },
    #[error("{0:?} is smaller than one /{NETWORK_PREFIX} network")]
    TooSmall(String),
}

/// An IPv4 range: first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    base: u32,
    prefix: u8,
}

impl Subnet {
    /// `a.b.c.d/n`, with no host bits set.
    pub fn parse(raw: &str) -> Result<Subnet, BadRange> {
        let bad = || BadRange::NotARange(raw.to_owned());
        let (address, prefix) = raw.trim().split_once('/').ok_or_else(bad)?;
        let address: Ipv4Addr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let base = u32::from(address);
        if base & !mask(prefix) != 0 {
            return Err(BadRange::HostBitsSet { given: raw.to_owned(), network: Subnet { base: base & mask(prefix), prefix } });
        }
        Ok(Subnet { base, prefix })
    }

    fn last(self) -> u32 {
        self.base | !mask(self.prefix)
    }

    pub fn overlaps(self, other: Subnet) -> bool {
        self.base <= other.last() && other.base <= self.last()
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// The range deployment networks are carved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool(Subnet);

impl Pool {
    /// A range of at least one /24.
    pub fn parse(raw: &str) -> Result<Pool, BadRange> {
        let range = Subnet::parse(raw)?;
        if range.prefix > NETWORK_PREFIX {
            return Err(BadRange::TooSmall(raw.to_owned()));
        }
        Ok(Pool(range))
    }

    /// The pool's /24s that overlap none of `used`, in order.
    pub fn free<'a>(&self, used: &'a [Subnet]) -> impl Iterator<Item = Subnet> + 'a {
        let count = 1u64 << (NETWORK_PREFIX - self.0.prefix);
        let base = self.0.base;
        (0..count)
            .map(move |i| Subnet { base: base + ((i as u32) << (32 - u32::from(NETWORK_PREFIX))), prefix: NETWORK_PREFIX })
            .filter(move |candidate| !used.iter().any(|u| u.overlaps(*candidate)))
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool::parse(DEFAULT_POOL).expect("the default pool is a range")
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_overlap_as_written() {
        let a = Subnet::parse("10.214.0.0/16").unwrap();
        assert!(a.overlaps(Subnet::parse("10.214.7.0/24").unwrap()));
        assert!(!a.overlaps(Subnet::parse("10.213.0.0/16").unwrap()));
        assert!(Subnet::parse("10.0.0.0/8").unwrap().overlaps(a));
        for bad in ["10.214.0.0", "10.214.0.0/33", "x/8", "::1/64"] {
            assert_eq!(Subnet::parse(bad), Err(BadRange::NotARange(bad.into())), "{bad}");
        }
        let set = Subnet::parse("10.214.0.1/16").unwrap_err();
        assert_eq!(set.to_string(), "\"10.214.0.1/16\" has host bits set: its network is 10.214.0.0/16");
        assert_eq!(Pool::parse("10.214.0.0/25"), Err(BadRange::TooSmall("10.214.0.0/25".into())));
    }

    #[test]
    fn a_pool_hands_out_the_24s_nothing_else_uses() {
        let pool = Pool::parse("10.214.0.0/22").unwrap();
        assert_eq!(pool.free(&[]).map(|s| s.to_string()).collect::<Vec<_>>(), ["10.214.0.0/24", "10.214.1.0/24", "10.214.2.0/24", "10.214.3.0/24"]);
        let used = [Subnet::parse("10.214.1.128/25").unwrap(), Subnet::parse("172.17.0.0/16").unwrap()];
        assert_eq!(pool.free(&used).map(|s| s.to_string()).collect::<Vec<_>>(), ["10.214.0.0/24", "10.214.2.0/24", "10.214.3.0/24"]);
        assert_eq!(Pool::default().free(&[]).count(), 256);
    }
}
