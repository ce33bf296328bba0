//! What kind of address an IP address is, as far as calling it goes: public, or one of the
//! kinds that reach inside a network ([`Reach`]). Pure: the only question asked of the host
//! (is it one of this machine's own addresses) is in [`is_this_host`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A kind of address that reaches inside a network rather than the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// 127.0.0.0/8, ::1: this machine.
    Loopback,
    /// 0.0.0.0/8, ::: connecting to it reaches this machine too.
    Unspecified,
    /// 169.254.0.0/16, fe80::/10: a link, where cloud metadata services answer.
    LinkLocal,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7.
    Private,
    /// 100.64.0.0/10: a carrier's or a cloud's internal network.
    Shared,
    /// Multicast, broadcast, benchmarking, protocol and reserved ranges: never an endpoint.
    Reserved,
    /// One of this machine's own public addresses.
    ThisHost,
}

impl Reach {
    /// How a person reads it: "127.0.0.1 is {noun}".
    pub fn noun(self) -> &'static str {
        match self {
            Reach::Loopback => "a loopback address",
            Reach::Unspecified => "an unspecified address (this machine)",
            Reach::LinkLocal => "a link-local address",
            Reach::Private => "a private address",
            Reach::Shared => "a shared (carrier or cloud internal) address",
            Reach::Reserved => "a reserved address",
            Reach::ThisHost => "an address of the machine NullOps runs on",
        }
    }
}

/// The kind of `ip` when it is not public, from its range alone.
pub fn special(ip: IpAddr) -> Option<Reach> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<Reach> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b) {
        (127, _) => Reach::Loopback,
        (0, _) => Reach::Unspecified,
        (169, 254) => Reach::LinkLocal,
        (10, _) | (192, 168) => Reach::Private,
        (172, 16..=31) => Reach::Private,
        (100, 64..=127) => Reach::Shared,
        (192, 0) if c == 0 => Reach::Reserved,
        (198, 18 | 19) => Reach::Reserved,
        (224..=255, _) => Reach::Reserved,
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<Reach> {
    let s = ip.segments();
    if ip.is_loopback() {
        return Some(Reach::Loopback);
    }
    if ip.is_unspecified() {
        return Some(Reach::Unspecified);
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address: judged as that one.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return special_v4(Ipv4Addr::from(u32::from(s[6]) << 16 | u32::from(s[7])));
    }
    if s[0] == 0x2002 {
        return special_v4(Ipv4Addr::from(u32::from(s[1]) << 16 | u32::from(s[2])));
    }
    Some(match s[0] {
        0xfe80..=0xfebf => Reach::LinkLocal,
        0xfc00..=0xfdff => Reach::Private,
        0xff00..=0xffff => Reach::Reserved,
        // ::/96 (IPv4-compatible, deprecated) and the rest of ::/8.
        0 => Reach::Reserved,
        _ => return None,
    })
}

/// Whether `ip` is this machine: loopback, unspecified, or an address one of its interfaces
/// has (a socket can be bound to it).
pub fn is_this_host(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<Reach> {
        special(s.parse().unwrap())
    }

    #[test]
    fn inside_addresses_are_told_from_public_ones() {
        for (address, expected) in [
            ("127.0.0.1", Some(Reach::Loopback)),
            ("127.255.0.9", Some(Reach::Loopback)),
            ("0.0.0.0", Some(Reach::Unspecified)),
            ("169.254.169.254", Some(Reach::LinkLocal)),
            ("10.1.2.3", Some(Reach::Private)),
            ("172.16.0.1", Some(Reach::Private)),
            ("172.31.255.255", Some(Reach::Private)),
            ("192.168.1.1", Some(Reach::Private)),
            ("100.64.0.1", Some(Reach::Shared)),
            ("224.0.0.1", Some(Reach::Reserved)),
            ("255.255.255.255", Some(Reach::Reserved)),
            ("::1", Some(Reach::Loopback)),
            ("::", Some(Reach::Unspecified)),
            ("fe80::1", Some(Reach::LinkLocal)),
            ("fd00::5", Some(Reach::Private)),
            ("::ffff:127.0.0.1", Some(Reach::Loopback)),
            ("::ffff:10.0.0.1", Some(Reach::Private)),
            ("64:ff9b::a9fe:a9fe", Some(Reach::LinkLocal)),
            ("2002:c0a8:0101::1", Some(Reach::Private)),
            ("::127.0.0.1", Some(Reach::Reserved)),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("8.8.8.8", None),
            ("140.82.112.3", None),
            ("2606:4700::1111", None),
            ("2002:0808:0808::1", None),
        ] {
            assert_eq!(kind(address), expected, "{address}");
        }
    }

    #[test]
    fn this_machine_is_recognised() {
        assert!(is_this_host("127.0.0.1".parse().unwrap()));
        assert!(is_this_host("0.0.0.0".parse().unwrap()));
        // Documentation range: no machine has it.
        assert!(!is_this_host("203.0.113.77".parse().unwrap()));
    }
}
