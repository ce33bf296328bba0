//! Leases: at most one active relay or projection runner per name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Held while alive. On PostgreSQL it owns the connection holding a session advisory lock, so a
/// crashed holder's lease ends with its connection; in-process it owns a mutex guard.
pub struct Lease {
    inner: LeaseInner,
}

enum LeaseInner {
    Postgres(sqlx::PgConnection),
    /// Held only to be dropped: dropping it releases the lease.
    Local {
        _guard: tokio::sync::OwnedMutexGuard<()>,
    },
}

impl Lease {
    pub(crate) fn postgres(conn: sqlx::PgConnection) -> Self {
        Lease { inner: LeaseInner::Postgres(conn) }
    }

    /// False once the lease is lost (its database connection died): stop acting as holder.
    pub async fn is_held(&mut self) -> bool {
        match &mut self.inner {
            LeaseInner::Postgres(conn) => sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok(),
            LeaseInner::Local { .. } => true,
        }
    }
}

/// Leases of one process, for the embedded store.
#[derive(Default)]
pub(crate) struct LocalLeases {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl LocalLeases {
    pub(crate) fn try_take(&self, name: &str) -> Option<Lease> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(name.to_owned()).or_default().clone()
        };
        lock.try_lock_owned().ok().map(|guard| Lease { inner: LeaseInner::Local { _guard: guard } })
    }
}
