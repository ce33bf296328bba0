//! What the gateway knows about one request: who is calling, from where, in which trace.

use std::net::IpAddr;
use std::sync::Arc;

use async_graphql::Context;
use chrono::{DateTime, Utc};

use nullops_domain::Principal;
use nullops_events::{Actor, CorrelationId, EventMetadata};

use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult};
use crate::App;

#[derive(Debug, Clone)]
pub enum Authentication {
    Anonymous,
    Caller(Caller),
    /// A credential was sent but is not good; operations that need a caller fail with this reason.
    Rejected(String),
}

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub auth: Authentication,
    pub client_addr: IpAddr,
    pub correlation_id: CorrelationId,
    pub traceparent: Option<String>,
}

impl RequestContext {
    pub async fn resolve(app: &App, token: Option<String>, client_addr: IpAddr, traceparent: Option<String>) -> Self {
        let auth = match token {
            None => Authentication::Anonymous,
            Some(token) => match auth::resolve(&app.read_models, &token).await {
                Ok(caller) => Authentication::Caller(caller),
                Err(ApiError::Unauthenticated(reason)) => Authentication::Rejected(reason),
                Err(e) => Authentication::Rejected(e.message()),
            },
        };
        RequestContext { auth, client_addr, correlation_id: CorrelationId::new(), traceparent }
    }

    pub fn caller(&self) -> ApiResult<&Caller> {
        match &self.auth {
            Authentication::Caller(c) => Ok(c),
            Authentication::Anonymous => Err(ApiError::sign_in()),
            Authentication::Rejected(reason) => Err(ApiError::Unauthenticated(reason.clone())),
        }
    }

    pub fn principal(&self) -> ApiResult<&Principal> {
        Ok(&self.caller()?.principal)
    }

    pub fn admin(&self) -> ApiResult<&Principal> {
        let p = self.principal()?;
        if p.is_admin() {
            Ok(p)
        } else {
            Err(ApiError::Forbidden("this needs the admin role".into()))
        }
    }

    /// Metadata for events this request causes, acting as `actor`.
    pub fn metadata_as(&self, actor: Actor) -> EventMetadata {
        // The span the events are appended in, when traced: what they cause joins its trace.
        let trace_context = nullops_telemetry::traceparent().or_else(|| self.traceparent.clone());
        EventMetadata { actor, correlation_id: self.correlation_id, causation_id: None, trace_context }
    }

    /// Metadata for events caused by the authenticated caller.
    pub fn metadata(&self) -> ApiResult<EventMetadata> {
        Ok(self.metadata_as(Actor::User(self.principal()?.username.to_string())))
    }
}

/// The platform, from a resolver's context.
pub(crate) fn app<'a>(ctx: &Context<'a>) -> &'a Arc<App> {
    ctx.data_unchecked::<Arc<App>>()
}

/// The request being served, from a resolver's context.
pub(crate) fn request<'a>(ctx: &Context<'a>) -> &'a RequestContext {
    ctx.data_unchecked::<RequestContext>()
}

/// Microseconds since the epoch, as the API writes times.
pub(crate) fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}
