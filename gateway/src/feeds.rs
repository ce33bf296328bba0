//! Live lists: the feeds that keep a page's lists current without a reload. `deploymentsUpdated`
//! sends each deployment the caller may see again whenever it changes, `nodesUpdated` each node
//! (its status on events, its usage as agents report it), and `catalogUpdated` says which part
//! of the catalog changed so a page asks again for what it shows.
//!
//! Every feed serves one caller as the read models say they are now: the events that may change
//! what someone sees (a grant, a team membership, a disabled user, a revoked token) make the feed
//! look at the caller again, it ends with UNAUTHENTICATED once the credential no longer holds,
//! and it delivers only what the matching query would return at that moment. Each item is
//! sent once the read model it is read from shows the event, so a query made on receipt sees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::{Enum, SimpleObject, ID};
use futures::{Stream, StreamExt};
use nullops_domain::catalog::CatalogState;
use nullops_events::catalog::{AccessTarget, CatalogEvent, PipelineEvent};
use nullops_events::codec::types;
use nullops_events::preview::PreviewEvent;
use nullops_events::{DomainEvent, StoredEvent, Timestamp};
use nullops_projections::{deployments as deployments_read, nodes as nodes_read};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;
use uuid::Uuid;

use crate::auth::{CredentialRef, EXPIRED};
use crate::catalog::{catalog_state, NodeGql, Viewer};
use crate::deployments::{targets, DeploymentGql};
use crate::error::{ApiError, ApiResult};
use crate::live::{may_revoke_access, node_link_changed, until_error, OncePerEvent, ACCESS_READ_MODELS};
use crate::App;

/// The credential a feed's caller used. It is looked up again only at the events after which
/// its holder may see less or more (a revocation, a sign-out, a disabled user, a grant): the
/// log announces each of them. Its expiry, which no event announces, is watched in memory. So
/// a feed checks its caller's access at each event without a database read per subscriber.
#[derive(Clone)]
pub(crate) struct FeedCredential {
    pub(crate) reference: CredentialRef,
    /// When it expires (the identity read model's seconds), if it does.
    pub(crate) expires_at: Option<i64>,
}
/// How often `nodesUpdated` looks for usage its agents reported (they report every few seconds).
const USAGE_EVERY: Duration = Duration::from_secs(2);

/// Events after which someone may see more than before (the others are in `MAY_REVOKE_ACCESS`).
const MAY_GRANT_ACCESS: [&str; 2] = [types::ACCESS_GRANTED.0, types::TEAM_MEMBER_ADDED.0];

fn may_change_access(event_type: &str) -> bool {
    may_revoke_access(event_type) || MAY_GRANT_ACCESS.contains(&event_type)
}

/// What the feeds read for an event (after the read model shows it), shared by all of their
/// subscribers: each then only filters it by what its caller may see.
#[derive(Default)]
pub(crate) struct PerEvent {
    /// The deployments an event changed.
    deployments: OncePerEvent<Arc<Vec<deployments_read::DeploymentRow>>>,
    /// What an event changed in the catalog, who may hear of it, and the catalog as it is then.
    catalog: OncePerEvent<Arc<Option<(CatalogChange, Audience, CatalogState)>>>,
}

/// What a feed reacts to.
pub(crate) enum Input {
    /// An event appended to the log; `access_changed` when the caller now sees other things
    /// than before it.
    Event { event: Arc<StoredEvent>, access_changed: bool },
    /// The feed's timer.
    Timer,
}

/// One caller's feed state: who they are, as last looked up.
struct Follower<F> {
    app: Arc<App>,
    credential: FeedCredential,
    viewer: Viewer,
    events: broadcast::Receiver<Arc<StoredEvent>>,
    timer: Option<tokio::time::Interval>,
    on: F,
    ended: bool,
}

/// Follows the log (and `every`, when given) for the caller of `ctx`, turning each input into the
/// items `on` finds for the caller's current view.
fn follow<T, F, Fut>(app: Arc<App>, credential: FeedCredential, viewer: Viewer, every: Option<Duration>, on: F) -> impl Stream<Item = ApiResult<T>>
where
    T: Send + 'static,
    F: Fn(Arc<App>, Viewer, Input) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ApiResult<Vec<T>>> + Send,
{
    let timer = every.map(|every| {
        let mut timer = tokio::time::interval_at(Instant::now() + every, every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    });
    let events = app.live.subscribe();
    let follower = Follower { app, credential, viewer, events, timer, on, ended: false };
    let batches = futures::stream::unfold(follower, |mut f| async move {
        if f.ended {
            return None;
        }
        loop {
            let input = match f.timer.as_mut() {
                Some(timer) => tokio::select! {
                    e = f.events.recv() => Some(e),
                    _ = timer.tick() => None,
                },
                None => Some(f.events.recv().await),
            };
            let batch = match input {
                Some(Err(RecvError::Closed)) => return None,
                Some(Err(RecvError::Lagged(_))) => Err(ApiError::Conflict("this feed fell behind and missed events; subscribe again".into())),
                Some(Ok(event)) => f.step(Some(event)).await,
                None => f.step(None).await,
            };
            match batch {
                Ok(items) if items.is_empty() => continue,
                Ok(items) => return Some((Ok(items), f)),
                Err(e) => {
                    f.ended = true;
                    return Some((Err(e), f));
                }
            }
        }
    });
    until_error(batches.flat_map(|batch| {
        let items: Vec<ApiResult<T>> = match batch {
            Ok(items) => items.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(items)
    }))
}

impl<F> Follower<F> {
    async fn step<T, Fut>(&mut self, event: Option<Arc<StoredEvent>>) -> ApiResult<Vec<T>>
    where
        F: Fn(Arc<App>, Viewer, Input) -> Fut,
        Fut: std::future::Future<Output = ApiResult<Vec<T>>>,
    {
        let mut access_changed = false;
        if let Some(e) = event.as_ref().filter(|e| may_change_access(&e.event_type)) {
            self.app.read_models.wait_for(&ACCESS_READ_MODELS, e.position, self.app.consistency_wait).await?;
            let now = Viewer::now(&self.app, &self.credential.reference).await?;
            access_changed = !now.sees_as(&self.viewer);
            self.viewer = now;
        } else if self.credential.expires_at.is_some_and(|at| at <= Timestamp::now().0) {
            return Err(ApiError::Unauthenticated(EXPIRED.into()));
        }
        let input = match event {
            Some(event) => Input::Event { event, access_changed },
            None => Input::Timer,
        };
        (self.on)(self.app.clone(), self.viewer.clone(), input).await
    }
}

// ---------------------------------------------------------------------------------------------
// deploymentsUpdated

/// The deployments `viewer` may see (of `project` and `environment` when given) that `input`
/// changed: the one whose stream it is, or those on a node whose link it changed (their state
/// shows OFFLINE while it is).
async fn changed_deployments(
    app: Arc<App>,
    viewer: Viewer,
    input: Input,
    project: Option<String>,
    environment: Option<String>,
) -> ApiResult<Vec<DeploymentGql>> {
    let Input::Event { event, .. } = input else { return Ok(vec![]) };
    if !matches!(event.stream_id.kind(), "deployment" | "node") {
        return Ok(vec![]);
    }
    // The read runs as a task of its own (see OncePerEvent), with its own handles.
    let read = {
        let (app, event) = (app.clone(), event.clone());
        move || async move {
            let rows = match event.stream_id.kind() {
                "deployment" => {
                    let Ok(id) = Uuid::try_parse(event.stream_id.key()) else { return Ok(Arc::new(vec![])) };
                    app.read_models.wait_for(&["deployments"], event.position, app.consistency_wait).await?;
                    deployments_read::deployment(&app.read_models, id).await?.into_iter().collect()
                }
                "node" => {
                    let Some(id) = node_link_changed(&event) else { return Ok(Arc::new(vec![])) };
                    app.read_models.wait_for(&["nodes"], event.position, app.consistency_wait).await?;
                    deployments_read::on_node(&app.read_models, id).await?
                }
                _ => vec![],
            };
            ApiResult::Ok(Arc::new(rows))
        }
    };
    let rows = app.live.per_event.deployments.get(event.position, read).await?;
    Ok(rows
        .iter()
        .filter(|r| project.as_ref().is_none_or(|p| *p == r.project) && environment.as_ref().is_none_or(|e| *e == r.environment))
        .filter_map(|r| viewer.access(&targets(r)).map(|access| DeploymentGql(r.clone(), access)))
        .collect())
}

pub(crate) fn deployments(
    app: Arc<App>,
    credential: FeedCredential,
    viewer: Viewer,
    project: Option<String>,
    environment: Option<String>,
) -> impl Stream<Item = ApiResult<DeploymentGql>> {
    follow(app, credential, viewer, None, move |app, viewer, input| changed_deployments(app, viewer, input, project.clone(), environment.clone()))
}

// ---------------------------------------------------------------------------------------------
// nodesUpdated

/// A node as it is now, or that it is gone.
#[derive(SimpleObject)]
#[graphql(name = "NodeChange")]
pub struct NodeChange {
    id: ID,
    /// Null once the node is removed (or no longer visible to the caller).
    node: Option<NodeGql>,
}

/// What one `nodesUpdated` feed remembers between inputs.
#[derive(Default)]
struct NodeFeed {
    /// When each node's agent last reported usage, as the feed last looked.
    sampled: HashMap<Uuid, i64>,
    /// The nodes this caller has been shown (or saw when subscribing): only these may be sent
    /// as gone. A node the caller never could see is never named, not even by its id.
    shown: std::collections::HashSet<Uuid>,
}

/// The nodes of `environment` (all when none) that `input` changed, as `viewer` may see them:
/// on an event of a node or of its capacity, that node; on the timer, those whose agent
/// reported usage since the last look. A node that went out of sight (removed, or access to its
/// environment revoked) is sent as gone, once, and only to a caller who was shown it.
async fn changed_nodes(app: Arc<App>, viewer: Viewer, input: Input, environment: Option<String>, feed: Arc<Mutex<NodeFeed>>) -> ApiResult<Vec<NodeChange>> {
    let ids: Vec<Uuid> = match input {
        Input::Event { event, .. } => {
            let is_node = matches!(event.stream_id.kind(), "node" | "capacity");
            match Uuid::try_parse(event.stream_id.key()) {
                Ok(id) if is_node => {
                    app.read_models.wait_for(&["nodes"], event.position, app.consistency_wait).await?;
                    vec![id]
                }
                _ => return Ok(vec![]),
            }
        }
        Input::Timer => {
            let samples = nodes_read::usage_samples(&app.read_models).await?;
            let mut feed = feed.lock().map_err(|_| ApiError::internal("node feed memory poisoned"))?;
            samples.into_iter().filter(|(id, at)| feed.sampled.insert(*id, *at) != Some(*at)).map(|(id, _)| id).collect()
        }
    };
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        rows.push((id, nodes_read::node(&app.read_models, id).await?));
    }
    let mut feed = feed.lock().map_err(|_| ApiError::internal("node feed memory poisoned"))?;
    let mut changes = Vec::with_capacity(rows.len());
    for (id, row) in rows {
        match row.filter(|r| environment.as_ref().is_none_or(|e| *e == r.environment)) {
            Some(r) if node_visible(&viewer, &r) => {
                feed.shown.insert(id);
                changes.push(NodeChange { id: ID(id.to_string()), node: Some(NodeGql::from(r)) });
            }
            // Removed, or out of sight: a page showing it drops it.
            _ if feed.shown.remove(&id) => changes.push(NodeChange { id: ID(id.to_string()), node: None }),
            _ => {}
        }
    }
    Ok(changes)
}

fn node_visible(viewer: &Viewer, node: &nodes_read::NodeRow) -> bool {
    viewer.access(&[AccessTarget::Environment(node.environment.clone())]).is_some()
}

pub(crate) async fn nodes(
    app: Arc<App>,
    credential: FeedCredential,
    viewer: Viewer,
    environment: Option<String>,
) -> ApiResult<impl Stream<Item = ApiResult<NodeChange>>> {
    // What agents have reported so far is what the page has: only newer reports are news.
    let sampled: HashMap<Uuid, i64> = nodes_read::usage_samples(&app.read_models).await?.into_iter().collect();
    // What the matching `nodes` query shows the caller now.
    let shown = nodes_read::nodes(&app.read_models, environment.as_deref()).await?.iter().filter(|r| node_visible(&viewer, r)).map(|r| r.node_id).collect();
    let feed = Arc::new(Mutex::new(NodeFeed { sampled, shown }));
    Ok(follow(app, credential, viewer, Some(USAGE_EVERY), move |app, viewer, input| changed_nodes(app, viewer, input, environment.clone(), feed.clone())))
}

// ---------------------------------------------------------------------------------------------
// catalogUpdated

/// A part of the catalog, as `catalogUpdated` names what changed.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "CatalogKind")]
pub enum CatalogKind {
    Registry,
    Service,
    Plugin,
    Environment,
    Project,
    /// A project's pipeline (a new version): `name` is the project's.
    Pipeline,
    /// A project's secrets: `name` is the project's.
    Secret,
    Team,
    User,
    /// What the caller may see changed (a grant, a team membership): ask again for every list.
    Access,
    /// A webhook (admins): `name` is its id.
    Webhook,
    /// The feed's first item: it listens from here on. What was read before it may have
    /// changed before it listened: read it again (a page loads its data while its feed starts).
    Listening,
}

/// Something in the catalog changed.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "CatalogChange")]
pub struct CatalogChange {
    kind: CatalogKind,
    /// What changed (for PIPELINE and SECRET, its project); null for ACCESS.
    name: Option<String>,
    /// It no longer exists.
    removed: bool,
}

/// Who may hear of a change: those who may see what changed.
enum Audience {
    Everyone,
    Environment(String),
    Project(String),
    /// Admins and the team's members.
    Team(Uuid),
    /// Admins and the user.
    User(String),
    Admins,
}

/// Names the catalog's teams and projects by id, as the catalog is now.
struct Names {
    teams: HashMap<Uuid, String>,
    projects: HashMap<Uuid, String>,
}

/// What `event` changed in the catalog (kind, name, removed), and who may hear of it.
/// Exhaustive: a new event does not compile until it is placed here.
fn catalog_change(event: &DomainEvent, stream_key: &str, names: &Names) -> Option<(CatalogChange, Audience)> {
    use CatalogKind as K;
    let change = |kind, name: Option<&str>, removed, audience| Some((CatalogChange { kind, name: name.map(str::to_owned), removed }, audience));
    let team = |id: &Uuid| names.teams.get(id).map(String::as_str);
    match event {
        DomainEvent::Catalog(e) => match e {
            CatalogEvent::WebhookCreated(w) => change(K::Webhook, Some(&w.webhook_id.to_string()), false, Audience::Admins),
            CatalogEvent::WebhookSecretRotated(w) => change(K::Webhook, Some(&w.webhook_id.to_string()), false, Audience::Admins),
            CatalogEvent::WebhookDeleted(w) => change(K::Webhook, Some(&w.webhook_id.to_string()), true, Audience::Admins),
            CatalogEvent::TeamCreated(t) => change(K::Team, Some(&t.name), false, Audience::Team(t.team_id)),
            CatalogEvent::TeamRenamed(t) => change(K::Team, Some(&t.name), false, Audience::Team(t.team_id)),
            CatalogEvent::TeamDeleted(_) => change(K::Team, None, true, Audience::Admins),
            CatalogEvent::TeamMemberAdded(m) | CatalogEvent::TeamMemberRemoved(m) => change(K::Team, team(&m.team_id), false, Audience::Team(m.team_id)),
            CatalogEvent::AccessGranted(g) => change(K::Team, team(&g.team_id), false, Audience::Team(g.team_id)),
            CatalogEvent::AccessRevoked(r) => change(K::Team, team(&r.team_id), false, Audience::Team(r.team_id)),
            CatalogEvent::RegistryAdded(r) => change(K::Registry, Some(&r.name), false, Audience::Everyone),
            CatalogEvent::RegistryChanged(r) => change(K::Registry, Some(&r.definition.name), false, Audience::Everyone),
            CatalogEvent::RegistryRemoved(r) => change(K::Registry, Some(&r.name), true, Audience::Everyone),
            CatalogEvent::ServiceCreated(s) | CatalogEvent::ServiceUpdated(s) => change(K::Service, Some(&s.name), false, Audience::Everyone),
            CatalogEvent::ServiceRemoved(r) => change(K::Service, Some(&r.name), true, Audience::Everyone),
            CatalogEvent::PluginCreated(p) | CatalogEvent::PluginUpdated(p) => change(K::Plugin, Some(&p.name), false, Audience::Everyone),
            CatalogEvent::PluginRemoved(r) => change(K::Plugin, Some(&r.name), true, Audience::Everyone),
            CatalogEvent::EnvironmentCreated(e) | CatalogEvent::EnvironmentUpdated(e) => {
                change(K::Environment, Some(&e.name), false, Audience::Environment(e.name.clone()))
            }
            // Those who saw it hear of it as ACCESS: their grants on it went with it.
            CatalogEvent::EnvironmentRemoved(r) => change(K::Environment, Some(&r.name), true, Audience::Admins),
            CatalogEvent::ProjectCreated(p) | CatalogEvent::ProjectUpdated(p) => change(K::Project, Some(&p.name), false, Audience::Project(p.name.clone())),
            CatalogEvent::ProjectRemoved(r) => change(K::Project, Some(&r.name), true, Audience::Admins),
            // A project's page shows its link (its secrets never).
            CatalogEvent::RepositoryLinked(l) => change(K::Project, Some(&l.link.project), false, Audience::Project(l.link.project.clone())),
            CatalogEvent::RepositoryUnlinked(u) => change(K::Project, Some(&u.project), false, Audience::Project(u.project.clone())),
        },
        // A project's page lists its previews.
        DomainEvent::Preview(PreviewEvent::Requested(r)) => change(K::Project, Some(&r.project), false, Audience::Project(r.project.clone())),
        // A dry run changes nothing anyone sees but the audit.
        DomainEvent::Pipeline(PipelineEvent::DryRun(_)) => None,
        DomainEvent::Pipeline(_) | DomainEvent::Secret(_) => {
            let kind = if matches!(event, DomainEvent::Pipeline(_)) { K::Pipeline } else { K::Secret };
            let project = names.projects.get(&Uuid::try_parse(stream_key).ok()?)?;
            change(kind, Some(project), false, Audience::Project(project.clone()))
        }
        DomainEvent::User(_) => change(K::User, Some(stream_key), false, Audience::User(stream_key.to_owned())),
        DomainEvent::Session(_)
        | DomainEvent::ApiToken(_)
        | DomainEvent::Node(_)
        | DomainEvent::Capacity(_)
        | DomainEvent::DeploymentName(_)
        | DomainEvent::Deployment(_) => None,
    }
}

impl Audience {
    /// As the queries rule: an environment is seen through a grant on it or on a project that
    /// deploys there; a team by its members.
    fn includes(&self, viewer: &Viewer, catalog: &CatalogState) -> bool {
        if viewer.is_admin() {
            return true;
        }
        let sees_project = |name: &str| viewer.access(&[AccessTarget::Project(name.to_owned())]).is_some();
        match self {
            Audience::Everyone => true,
            Audience::Environment(name) => {
                viewer.access(&[AccessTarget::Environment(name.clone())]).is_some()
                    || catalog.projects.values().any(|p| p.environments.contains(name) && sees_project(&p.name))
            }
            Audience::Project(name) => sees_project(name),
            Audience::Team(id) => catalog.teams.get(id).is_some_and(|t| t.members.contains(viewer.username())),
            Audience::User(name) => viewer.username() == name,
            Audience::Admins => false,
        }
    }
}

/// What `input` changed in the catalog that `viewer` may hear of.
async fn catalog_changes(app: Arc<App>, viewer: Viewer, input: Input) -> ApiResult<Vec<CatalogChange>> {
    let Input::Event { event, access_changed } = input else { return Ok(vec![]) };
    let mut changes = Vec::new();
    if access_changed {
        changes.push(CatalogChange { kind: CatalogKind::Access, name: None, removed: false });
    }
    if !matches!(event.stream_id.kind(), "catalog" | "pipeline" | "secrets" | "user" | "preview") {
        return Ok(changes);
    }
    let read = {
        let (app, event) = (app.clone(), event.clone());
        move || async move {
            let decoded = match nullops_events::codec::decode(&event.event_type, event.schema_version, &event.payload) {
                Ok(decoded) => decoded,
                Err(e) => {
                    tracing::warn!(error = %e, "catalog feed: an event does not decode; skipped");
                    return Ok(Arc::new(None));
                }
            };
            app.read_models.wait_for(&["catalog", "identity"], event.position, app.consistency_wait).await?;
            let state = catalog_state(&app).await?;
            let names = Names {
                teams: state.teams.iter().map(|(id, t)| (*id, t.name.clone())).collect(),
                projects: state.projects.values().map(|p| (p.project_id, p.name.clone())).collect(),
            };
            ApiResult::Ok(Arc::new(catalog_change(&decoded, event.stream_id.key(), &names).map(|(change, audience)| (change, audience, state))))
        }
    };
    let found = app.live.per_event.catalog.get(event.position, read).await?;
    if let Some((change, audience, state)) = found.as_ref() {
        if audience.includes(&viewer, state) {
            changes.push(change.clone());
        }
    }
    Ok(changes)
}

pub(crate) fn catalog(app: Arc<App>, credential: FeedCredential, viewer: Viewer) -> impl Stream<Item = ApiResult<CatalogChange>> {
    // `follow` has subscribed to the live events by the time the first item is taken.
    let listening = CatalogChange { kind: CatalogKind::Listening, name: None, removed: false };
    futures::stream::once(std::future::ready(Ok(listening))).chain(follow(app, credential, viewer, None, catalog_changes))
}
