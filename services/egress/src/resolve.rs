//! The resolver every guarded client connects through: what a name resolves to when a
//! connection is made is judged then, so the address connected to is the address judged.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::{Egress, Refusal, RESOLVE_TIMEOUT};

/// Resolves with the system's resolver and keeps only the addresses the policy allows.
pub(crate) struct Guarded(pub(crate) Arc<Egress>);

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = lookup(&host).await?;
            let mut refused = None;
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match egress.judge(&host, a.ip(), None) {
                    Ok(()) => true,
                    Err(r) => {
                        refused.get_or_insert(r);
                        false
                    }
                })
                .collect();
            if kept.is_empty() {
                let refusal = refused.unwrap_or(Refusal::NoSuchName { host });
                return Err(Box::new(refusal) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// Every address `host` resolves to now (port 0), bounded in time.
pub(crate) async fn lookup(host: &str) -> Result<Vec<SocketAddr>, Refusal> {
    let no_such_name = || Refusal::NoSuchName { host: host.to_owned() };
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0))).await {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => {
            tracing::debug!(%host, error = %e, "a name did not resolve");
            Err(no_such_name())
        }
        Err(_) => Err(no_such_name()),
    }
}
