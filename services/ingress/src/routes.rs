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

#[cfg(test)]
mod tests {
    use super::*;
    use nullops_events::urls::PublicOrigin;

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
