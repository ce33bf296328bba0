//! The end-to-end suite, one binary: the real `nullops` binary driven over its API, CLI and
//! agents, embedded and in production mode, against real PostgreSQL, NATS JetStream, Docker and
//! a registry (`support` starts and talks to them). One binary links once: the suites were ten.

#[macro_use]
mod support;

mod catalog_api;
mod console_api;
mod crash_recovery;
mod deployment_lifecycle;
mod deployments;
mod graphql_api;
mod ingress;
mod live_access;
mod nodes;
mod plugins;
