//! The ingress's decisions, free of I/O: which host a request names (`host.rs`) and where the
//! routing table sends it (`routes.rs`). The proxy around them is still to come (issue 6).

pub mod host;
pub mod routes;

pub use host::{parse_host, HostError};
pub use routes::{Decision, DeploymentRoute, RouteState, RoutingTable};
