//! The routing table: from a host name to the node address and port of a service, or why not.
//!
//! A name is `SERVICE.DEPLOYMENT.ENVIRONMENT.BASE-DOMAIN`, where BASE-DOMAIN is the environment's
//! own; environments may nest domains, so the longest matching base domain wins. The table is
//! rebuilt from the read models (deployments, nodes, environments); looking up never does I/O.

use std::collections::HashMap;

/// Where a deployment stands, as far as routing goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteState {
    /// Running: its services take requests.
    Running,
    /// Anything else (deploying, failed, deleting…), as its state reads.
    Not(String),
}

/// A live deployment as the table keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRoute {
    pub state: RouteState,
    /// Its node's address, and whether the node is online.
    pub node_host: String,
    pub node_online: bool,
    /// Service name to the node port its container port is published on.
    pub ports: HashMap<String, u16>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Forward {
        host: String,
        port: u16,
    },
    /// No environment, deployment or service of that name (404).
    Unknown,
    /// The deployment exists but does not run now (503 with its state).
    NotRunning(String),
    /// Its node is offline (503).
    NodeOffline,
}

#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    /// Base domain to environment name, longest domain first when matching.
    environments: Vec<(String, String)>,
    /// (environment, deployment name) to its route.
    deployments: HashMap<(String, String), DeploymentRoute>,
}

impl RoutingTable {
    /// A table of `environments` (name, base domain) and `deployments` ((environment, name),
    /// route).
    pub fn new(environments: impl IntoIterator<Item = (String, String)>, deployments: impl IntoIterator<Item = ((String, String), DeploymentRoute)>) -> Self {
        let mut environments: Vec<(String, String)> = environments.into_iter().map(|(name, domain)| (domain.to_ascii_lowercase(), name)).collect();
        environments.sort_by_key(|(domain, _)| std::cmp::Reverse(domain.len()));
        RoutingTable { environments, deployments: deployments.into_iter().collect() }
    }

    /// Where `name` (a host name as [`crate::parse_host`] returns it) goes.
    pub fn route(&self, name: &str) -> Decision {
        for (domain, environment) in &self.environments {
            let Some(rest) = name.strip_suffix(domain.as_str()).and_then(|r| r.strip_suffix('.')) else { continue };
            let mut labels = rest.split('.');
            let (Some(service), Some(deployment), Some(env), None) = (labels.next(), labels.next(), labels.next(), labels.next()) else { continue };
            if env != environment {
                continue;
            }
            let Some(d) = self.deployments.get(&(environment.clone(), deployment.to_owned())) else { return Decision::Unknown };
            let Some(port) = d.ports.get(service).copied() else {
                return match &d.state {
                    RouteState::Not(state) => Decision::NotRunning(state.clone()),
                    RouteState::Running => Decision::Unknown,
                };
            };
            return match (&d.state, d.node_online) {
                (RouteState::Not(state), _) => Decision::NotRunning(state.clone()),
                (RouteState::Running, false) => Decision::NodeOffline,
                (RouteState::Running, true) => Decision::Forward { host: d.node_host.clone(), port },
            };
        }
        Decision::Unknown
    }
}

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

    fn table(state: RouteState, online: bool) -> RoutingTable {
        let route = DeploymentRoute { state, node_host: "10.0.0.7".into(), node_online: online, ports: HashMap::from([("web".into(), 32768)]) };
        RoutingTable::new(
            [("staging".to_owned(), "qa.example.com".to_owned()), ("eu".to_owned(), "eu.qa.example.com".to_owned())],
            [
                (("staging".to_owned(), "pr-42".to_owned()), route.clone()),
                (("eu".to_owned(), "pr-42".to_owned()), DeploymentRoute { node_host: "10.0.0.8".into(), ..route }),
            ],
        )
    }

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

    #[test]
    fn service_urls_name_the_port_only_when_it_is_not_the_default() {
        let url = |https, port| PublicOrigin { https, port, address: None }.service_url("web", "pr-42", "staging", "qa.example.com");
        assert_eq!(url(false, 80), "http://web.pr-42.staging.qa.example.com/");
        assert_eq!(url(false, 8081), "http://web.pr-42.staging.qa.example.com:8081/");
        assert_eq!(url(true, 443), "https://web.pr-42.staging.qa.example.com/");
        assert_eq!(url(true, 80), "https://web.pr-42.staging.qa.example.com:80/");
        // What a URL names routes back to the same service.
        let name = crate::parse_host("web.pr-42.staging.qa.example.com:8081").unwrap();
        assert_eq!(table(RouteState::Running, true).route(&name), Decision::Forward { host: "10.0.0.7".into(), port: 32768 });
    }

    #[test]
    fn a_running_service_is_forwarded_to_its_node_port() {
        let t = table(RouteState::Running, true);
        assert_eq!(t.route("web.pr-42.staging.qa.example.com"), Decision::Forward { host: "10.0.0.7".into(), port: 32768 });
        // The longest base domain wins: eu's, not staging's.
        assert_eq!(t.route("web.pr-42.eu.eu.qa.example.com"), Decision::Forward { host: "10.0.0.8".into(), port: 32768 });
    }

    #[test]
    fn unknown_names_not_running_deployments_and_offline_nodes_say_so() {
        let t = table(RouteState::Running, true);
        for unknown in [
            "api.pr-42.staging.qa.example.com",
            "web.pr-1.staging.qa.example.com",
            "web.pr-42.prod.qa.example.com",
            "pr-42.staging.qa.example.com",
            "x.web.pr-42.staging.qa.example.com",
            "web.pr-42.staging.other.com",
            "qa.example.com",
        ] {
            assert_eq!(t.route(unknown), Decision::Unknown, "{unknown}");
        }
        assert_eq!(table(RouteState::Not("DEPLOYING".into()), true).route("web.pr-42.staging.qa.example.com"), Decision::NotRunning("DEPLOYING".into()));
        assert_eq!(table(RouteState::Running, false).route("web.pr-42.staging.qa.example.com"), Decision::NodeOffline);
    }
}
