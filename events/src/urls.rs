//! Where users reach deployments: how a service's URL is written (`service.deployment.
//! environment.domain` on the ingress's public scheme and port) and the DNS record that sends
//! an environment's names to the ingress. The ingress routes by these names; the API, the
//! webhooks and the previews write them; only this module knows their shape.

/// How users reach the ingress: the scheme and port service URLs are written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicOrigin {
    pub https: bool,
    pub port: u16,
    /// The address users reach the ingress at (an IP address or a host name), when known: each
    /// environment's DNS record points there.
    pub address: Option<String>,
}

impl Default for PublicOrigin {
    fn default() -> Self {
        PublicOrigin { https: false, port: 80, address: None }
    }
}

/// The DNS record that sends an environment's service names to the ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// A wildcard name, fully qualified: `*.staging.qa.example.com.`.
    pub name: String,
    /// `A`, `AAAA` or `CNAME`, by the address.
    pub kind: &'static str,
    /// The ingress's address; unknown until it is configured.
    pub value: Option<String>,
}

impl PublicOrigin {
    /// The URL of `service` of deployment `deployment` in `environment`: it depends on nothing
    /// else, so it stays the same when the deployment is recreated under its name.
    pub fn service_url(&self, service: &str, deployment: &str, environment: &str, base_domain: &str) -> String {
        let (scheme, default_port) = if self.https { ("https", 443) } else { ("http", 80) };
        let port = if self.port == default_port { String::new() } else { format!(":{}", self.port) };
        format!("{scheme}://{service}.{deployment}.{environment}.{base_domain}{port}/")
    }

    /// The record an environment needs so that its URLs reach the ingress; none under
    /// `localhost`, whose names resolve to this machine already (RFC 6761).
    pub fn dns_record(&self, environment: &str, base_domain: &str) -> Option<DnsRecord> {
        if base_domain == "localhost" || base_domain.ends_with(".localhost") {
            return None;
        }
        let kind = match self.address.as_deref().map(str::parse::<std::net::IpAddr>) {
            Some(Ok(std::net::IpAddr::V6(_))) => "AAAA",
            Some(Err(_)) => "CNAME",
            Some(Ok(std::net::IpAddr::V4(_))) | None => "A",
        };
        let value = self.address.as_ref().map(|a| if kind == "CNAME" { format!("{}.", a.trim_end_matches('.')) } else { a.clone() });
        Some(DnsRecord { name: format!("*.{environment}.{base_domain}."), kind, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_is_pointed_at_the_ingress_by_the_record_its_address_calls_for() {
        let origin = |address: Option<&str>| PublicOrigin { https: false, port: 80, address: address.map(str::to_owned) };
        let record = |address| origin(address).dns_record("staging", "qa.example.com").unwrap();
        assert_eq!(record(Some("203.0.113.7")), DnsRecord { name: "*.staging.qa.example.com.".into(), kind: "A", value: Some("203.0.113.7".into()) });
        assert_eq!(record(Some("2001:db8::7")).kind, "AAAA");
        assert_eq!(
            record(Some("lb.example.net")),
            DnsRecord { name: "*.staging.qa.example.com.".into(), kind: "CNAME", value: Some("lb.example.net.".into()) }
        );
        assert_eq!(record(None).value, None);
        assert_eq!(origin(None).dns_record("demo", "localhost"), None);
    }
}
