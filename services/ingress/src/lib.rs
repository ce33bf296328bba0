//! The ingress: serves `http://SERVICE.DEPLOYMENT.ENVIRONMENT.BASE-DOMAIN` from the node port of
//! that service's container.
//!
//! Decisions free of I/O: which host a request names (`host.rs`), where the routing table sends
//! it (`routes.rs`), whether a request head frames its body ambiguously (`framing.rs`), how
//! headers change on the way (`forward.rs`), and what the ingress answers itself (`pages.rs`).
//! Around them: the live table kept from the read models and the bus (`live.rs`), one request's
//! forwarding (`proxy.rs`), the listener (`server.rs`) and TLS termination (`tls.rs`).

pub mod forward;
pub mod framing;
pub mod host;
pub mod live;
pub mod pages;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod tls;
pub mod traffic;

pub use host::{parse_host, HostError};
pub use live::RouteBook;
pub use routes::{Decision, DeploymentRoute, RouteState, RoutingTable};
pub use server::Ingress;
