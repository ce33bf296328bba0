//! Nodes in GraphQL: registration and token management (admins), trust approval, and each node's
//! status and capacity. A node's token is returned once, by the mutation that makes it; only its
//! hash is kept, sealed.

use async_graphql::{Context, Enum, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use nullops_domain::capacity::Capacity;
use nullops_domain::node::{self, token_purpose, CertThumbprint, Node, NodeAction, NodeCommand, NodeHost};
use nullops_domain::{DnsLabel, Issuer};
use nullops_events::catalog::AccessTarget;
use nullops_projections::nodes::{self as read, NodeRow};
use nullops_store::commands::load;

use crate::agent_image::{AGENT_IMAGE, AGENT_IMAGE_PATH};
use nullops_wire::NodeToken;
use uuid::Uuid;

use super::{catalog_state, dispatch_keyed, Viewer};
use crate::context::{app, request, time};
use crate::error::{ApiError, ApiResult};
use crate::App;

/// The image `addNode` tells admins to run.

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "NodeStatus", remote = "nullops_domain::node::NodeStatus")]
pub enum NodeStatusGql {
    /// Disabled by an admin: not dialled, takes no new deployments.
    Disabled,
    /// Its token was revoked: not dialled until rotated.
    Revoked,
    /// The agent presents a certificate other than the pinned one; an admin must approve it.
    Untrusted,
    /// The agent refuses the node's token (not reconfigured after a rotation?).
    TokenRefused,
    /// The agent speaks another protocol version.
    Incompatible,
    /// Never reached yet.
    Pending,
    Online,
    Offline,
}

/// A node's status as its read-model row tells it.
pub(crate) fn node_status(r: &NodeRow) -> node::NodeStatus {
    nullops_saga::admission::node_status(r)
}

/// A Docker node and its agent.
pub struct NodeGql(NodeRow);

impl From<NodeRow> for NodeGql {
    fn from(row: NodeRow) -> Self {
        NodeGql(row)
    }
}

#[Object(name = "Node")]
impl NodeGql {
    async fn id(&self) -> ID {
        ID(self.0.node_id.to_string())
    }
    async fn environment(&self) -> &str {
        &self.0.environment
    }
    async fn host(&self) -> &str {
        &self.0.host
    }
    async fn port(&self) -> u16 {
        self.0.port
    }
    async fn status(&self) -> NodeStatusGql {
        node_status(&self.0).into()
    }
    /// Why the connection is as it is: the last disconnection's cause, a refusal's reason.
    async fn status_detail(&self) -> &str {
        &self.0.link_detail
    }
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// SHA-256 of the agent certificate the control plane trusts.
    async fn thumbprint(&self) -> Option<&str> {
        self.0.pinned.as_deref()
    }
    /// A different certificate the agent presents, awaiting `approveNodeThumbprint`.
    async fn pending_thumbprint(&self) -> Option<&str> {
        self.0.pending.as_deref()
    }
    async fn agent_version(&self) -> Option<&str> {
        (!self.0.agent_version.is_empty()).then_some(self.0.agent_version.as_str())
    }
    async fn added_at(&self) -> DateTime<Utc> {
        time(self.0.added_at)
    }
    async fn changed_at(&self) -> DateTime<Utc> {
        time(self.0.changed_at)
    }
    /// What the control plane has reserved on this node for deployments.
    async fn allocated(&self, ctx: &Context<'_>) -> ApiResult<NodeAllocationGql> {
        let a = read::allocation(&app(ctx).read_models, self.0.node_id).await?;
        Ok(NodeAllocationGql { cpu_millicores: a.cpu_millis, memory_mib: a.memory_mib, deployments: a.deployments })
    }
    /// Its CPU and memory in use and reserved over the last `minutes` (at most a day), sampled every 10 s
    /// (longer spans averaged into at most 360 points).
    async fn usage_history(&self, ctx: &Context<'_>, #[graphql(default = 60)] minutes: i32) -> ApiResult<Vec<crate::charts::NodeSample>> {
        crate::charts::node_history(ctx, self.0.node_id, minutes).await
    }
    /// What the agent last reported using; none before its first report.
    async fn usage(&self, ctx: &Context<'_>) -> ApiResult<Option<NodeUsageGql>> {
        let Some(u) = read::usage(&app(ctx).read_models, self.0.node_id).await? else { return Ok(None) };
        let containers: Vec<nullops_wire::message::ContainerUsage> =
            serde_json::from_str(&u.containers).map_err(|e| ApiError::internal(format!("node usage containers: {e}")))?;
        Ok(Some(NodeUsageGql {
            cpu_cores: u.cpu_cores,
            cpu_used_millicores: u.cpu_used_millicores,
            memory_total_bytes: u.memory_total_bytes,
            memory_used_bytes: u.memory_used_bytes,
            sampled_at: time(u.sampled_at),
            containers: containers
                .into_iter()
                .map(|c| ContainerUsageGql { deployment: c.deployment, name: c.name, cpu_millicores: c.cpu_millicores, memory_bytes: c.memory_bytes })
                .collect(),
        }))
    }
    /// The images the node was asked to hold ahead of deployments (the plugins and pinned
    /// services of its environment's latest pipelines), as its agent last reported them.
    async fn images(&self, ctx: &Context<'_>) -> ApiResult<Vec<NodeImageGql>> {
        let Some(json) = read::images(&app(ctx).read_models, self.0.node_id).await? else { return Ok(vec![]) };
        let held: Vec<nullops_wire::message::HeldImage> = serde_json::from_str(&json).map_err(|e| ApiError::internal(format!("node images: {e}")))?;
        Ok(held.into_iter().map(|h| NodeImageGql { image: h.image, digest: h.digest, present: h.present, detail: h.detail }).collect())
    }
}

/// An image a node was asked to hold.
#[derive(SimpleObject)]
#[graphql(name = "NodeImage")]
pub struct NodeImageGql {
    /// As the node pulls it: `host/repository:tag` or `host/repository@sha256:…`.
    image: String,
    /// The registry manifest's digest, when the node holds it and knows one.
    digest: Option<String>,
    /// Whether the node holds it now: a deployment that needs it starts without a pull.
    present: bool,
    /// Why it is not held (a failed pull, the agent's disk budget), or "pulling".
    detail: String,
}

/// Resources the control plane has promised to deployments on a node.
#[derive(SimpleObject)]
#[graphql(name = "NodeAllocation")]
pub struct NodeAllocationGql {
    cpu_millicores: u64,
    memory_mib: u64,
    deployments: u32,
}

/// Resources in use on a node, as its agent last measured them.
#[derive(SimpleObject)]
#[graphql(name = "NodeUsage")]
pub struct NodeUsageGql {
    cpu_cores: u32,
    /// CPU in use across the node, in thousandths of a core.
    cpu_used_millicores: u64,
    memory_total_bytes: u64,
    memory_used_bytes: u64,
    sampled_at: DateTime<Utc>,
    containers: Vec<ContainerUsageGql>,
}

#[derive(SimpleObject)]
#[graphql(name = "ContainerUsage")]
pub struct ContainerUsageGql {
    deployment: String,
    name: String,
    cpu_millicores: u64,
    memory_bytes: u64,
}

/// A node with its new token, shown this once.
#[derive(SimpleObject)]
pub struct NodeCredentials {
    node: NodeGql,
    /// The agent's NULLOPS_AGENT_TOKEN. Only its hash is kept: copy it now.
    token: String,
    /// Runs the agent's container on the node, with the token filled in and its port bound to
    /// the node's address only. Its image comes from this server: load it first with
    /// `curl -fsS SERVER/agent-image.tar | docker load` (`imagePath`).
    run_command: String,
    /// Or runs the agent as a process, the same `nullops` binary: `nullops agent`.
    agent_command: String,
    /// Where this server serves the agent's image, for `docker load`.
    image_path: String,
}

impl NodeCredentials {
    fn new(node: NodeRow, token: &NodeToken) -> Self {
        let (run_command, agent_command) = install_commands(&node.host, node.port, token);
        NodeCredentials { node: NodeGql(node), token: token.expose().to_owned(), run_command, agent_command, image_path: AGENT_IMAGE_PATH.to_owned() }
    }
}

/// How to start the agent on a node at `host:port`: as a container of the image this server
/// serves, and as a process. The agent listens on the address the admin gave when it is an IP
/// address (a name may resolve to any of the node's addresses: then on all of them).
fn install_commands(host: &str, port: u16, token: &NodeToken) -> (String, String) {
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok();
    let (publish, listen) = match ip {
        Some(std::net::IpAddr::V6(v6)) => (format!("[{v6}]:{port}:5000"), format!("[{v6}]:{port}")),
        Some(ip) => (format!("{ip}:{port}:5000"), format!("{ip}:{port}")),
        None => (format!("{port}:5000"), format!("0.0.0.0:{port}")),
    };
    let token = token.expose();
    let docker = format!(
        "docker run -d --name nullops-agent --restart unless-stopped -p {publish} -e NULLOPS_AGENT_TOKEN={token} \
         -v /var/run/docker.sock:/var/run/docker.sock -v nullops-agent:/data {AGENT_IMAGE}"
    );
    let process = format!("NULLOPS_AGENT_TOKEN={token} nullops agent --listen {listen} --data-dir /var/lib/nullops-agent");
    (docker, process)
}

async fn node_row(app: &App, node_id: Uuid) -> ApiResult<NodeRow> {
    read::node(&app.read_models, node_id).await?.ok_or_else(|| ApiError::NotFound(format!("no node {node_id}")))
}

fn parse_id(id: &ID) -> ApiResult<Uuid> {
    id.parse().map_err(|_| ApiError::InvalidInput(format!("node: {:?} is not a node id", id.as_str())))
}

/// Runs a node command as the caller, sealing `token`'s hash when given; destroys what it retires.
async fn change_node(
    ctx: &Context<'_>,
    node_id: Uuid,
    action: impl FnOnce(Option<nullops_events::catalog::Sealed>) -> NodeAction,
    token: Option<&NodeToken>,
) -> ApiResult<NodeRow> {
    let (app, req) = (app(ctx), request(ctx));
    let by = req.admin()?.clone();
    let sealed = match token {
        Some(t) => Some(app.keyring.seal(t.hash().as_bytes(), &token_purpose(node_id)).await?),
        None => None,
    };
    let fresh_key = sealed.as_ref().map(|s| s.key_id);
    let command = NodeCommand { by: Issuer::User(by), action: action(sealed) };
    dispatch_keyed::<Node>(app, None, req.metadata()?, &node_id.to_string(), command, fresh_key).await?;
    node_row(app, node_id).await
}

#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// Nodes, optionally of one environment: admins see all, others those of environments they
    /// have access to.
    async fn nodes(&self, ctx: &Context<'_>, environment: Option<String>) -> ApiResult<Vec<NodeGql>> {
        let viewer = Viewer::of(ctx).await?;
        let rows = read::nodes(&app(ctx).read_models, environment.as_deref()).await?;
        Ok(rows.into_iter().filter(|r| viewer.access(&[AccessTarget::Environment(r.environment.clone())]).is_some()).map(NodeGql).collect())
    }

    async fn node(&self, ctx: &Context<'_>, id: ID) -> ApiResult<NodeGql> {
        let viewer = Viewer::of(ctx).await?;
        let row = node_row(app(ctx), parse_id(&id)?).await?;
        if viewer.access(&[AccessTarget::Environment(row.environment.clone())]).is_none() {
            return Err(ApiError::NotFound(format!("no node {}", id.as_str())));
        }
        Ok(NodeGql(row))
    }
}

#[derive(Default)]
pub struct NodeMutation;

#[Object]
impl NodeMutation {
    /// Registers a Docker node of an environment whose agent listens at `host:port` (admins).
    /// Returns the agent's token, once, and the command that starts the agent.
    async fn add_node(&self, ctx: &Context<'_>, environment: String, host: String, #[graphql(default = 5000)] port: u16) -> ApiResult<NodeCredentials> {
        let app = app(ctx);
        request(ctx).admin()?;
        let environment = DnsLabel::parse("environment", &environment)?;
        let host = NodeHost::parse(&host)?;
        if read::endpoint_taken(&app.read_models, host.as_str(), port).await? {
            return Err(ApiError::Conflict(format!("a node at {}:{port} is already registered", host.as_str())));
        }
        let environment_exists = catalog_state(app).await?.environments.contains_key(environment.as_str());
        let node_id = Uuid::now_v7();
        let token = NodeToken::generate();
        let add = |sealed: Option<_>| NodeAction::Add { node_id, environment, environment_exists, host, port, token_hash: sealed.expect("sealed") };
        let row = change_node(ctx, node_id, add, Some(&token)).await?;
        Ok(NodeCredentials::new(row, &token))
    }

    /// Issues a new token (admins): the old one stops working at once, the live connection is
    /// closed, and the agent must be restarted with the new token. Also re-issues a revoked token.
    async fn rotate_node_token(&self, ctx: &Context<'_>, id: ID) -> ApiResult<NodeCredentials> {
        let node_id = parse_id(&id)?;
        let token = NodeToken::generate();
        let row = change_node(ctx, node_id, |sealed| NodeAction::RotateToken { token_hash: sealed.expect("sealed") }, Some(&token)).await?;
        Ok(NodeCredentials::new(row, &token))
    }

    /// Revokes the node's token (admins): the agent is disconnected at once and not dialled again
    /// until the token is rotated.
    async fn revoke_node_token(&self, ctx: &Context<'_>, id: ID) -> ApiResult<NodeGql> {
        Ok(NodeGql(change_node(ctx, parse_id(&id)?, |_| NodeAction::RevokeToken, None).await?))
    }

    /// Disables a node (admins): not dialled, no new deployments; what runs there keeps running.
    async fn disable_node(&self, ctx: &Context<'_>, id: ID) -> ApiResult<NodeGql> {
        Ok(NodeGql(change_node(ctx, parse_id(&id)?, |_| NodeAction::Disable, None).await?))
    }

    async fn enable_node(&self, ctx: &Context<'_>, id: ID) -> ApiResult<NodeGql> {
        Ok(NodeGql(change_node(ctx, parse_id(&id)?, |_| NodeAction::Enable, None).await?))
    }

    /// Removes a node that runs no deployment (admins); its token's key is destroyed.
    async fn remove_node(&self, ctx: &Context<'_>, id: ID) -> ApiResult<bool> {
        let (app, req) = (app(ctx), request(ctx));
        let node_id = parse_id(&id)?;
        // Read from the node's capacity stream, the authority on what holds room there.
        let (capacity, _) = load::<Capacity>(&*app.store, &node_id.to_string()).await?;
        let action = NodeAction::Remove { deployments: capacity.reservations.len() };
        let command = NodeCommand { by: Issuer::User(req.admin()?.clone()), action };
        dispatch_keyed::<Node>(app, None, req.metadata()?, &node_id.to_string(), command, None).await?;
        Ok(true)
    }

    /// Trusts the certificate an untrusted node's agent now presents (admins). `thumbprint` must
    /// be exactly the pending one: check it against `nullops agent`'s startup log on the node.
    async fn approve_node_thumbprint(&self, ctx: &Context<'_>, id: ID, thumbprint: String) -> ApiResult<NodeGql> {
        // Who asks first: a caller who may not approve learns nothing about the input.
        request(ctx).admin()?;
        let thumbprint = CertThumbprint::parse(&thumbprint).map_err(|m| ApiError::InvalidInput(format!("thumbprint: {m}")))?;
        Ok(NodeGql(change_node(ctx, parse_id(&id)?, |_| NodeAction::ApproveThumbprint { thumbprint }, None).await?))
    }
}
