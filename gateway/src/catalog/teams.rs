//! Teams, their members and their grants.

use async_graphql::{Context, Object};
use nullops_domain::catalog::CatalogAction;
use nullops_domain::Username;
use nullops_projections::catalog::{self as read, TeamRow};
use nullops_projections::identity;

use super::types::{AccessGql, AccessTargetInput, TeamGql};
use super::{change_catalog, Viewer};
use crate::context::{app, request, time};
use crate::error::{ApiError, ApiResult};
use crate::App;

async fn team_gql(app: &App, row: TeamRow) -> ApiResult<TeamGql> {
    Ok(TeamGql {
        members: read::team_members(&app.read_models, &row.team_id).await?,
        grants: read::grants_of_team(&app.read_models, &row.team_id).await?.into_iter().map(Into::into).collect(),
        name: row.name,
        created_at: time(row.created_at),
    })
}

async fn team_named(app: &App, name: &str) -> ApiResult<TeamGql> {
    let row = read::teams(&app.read_models).await?.into_iter().find(|t| t.name == name).ok_or_else(|| ApiError::NotFound(format!("no team named {name}")))?;
    team_gql(app, row).await
}

#[derive(Default)]
pub struct TeamQuery;

#[Object]
impl TeamQuery {
    /// Teams: admins see all, others the teams they belong to.
    async fn teams(&self, ctx: &Context<'_>) -> ApiResult<Vec<TeamGql>> {
        let viewer = Viewer::of(ctx).await?;
        let app = app(ctx);
        let mine = identity_teams(app, &viewer).await?;
        let mut out = Vec::new();
        for row in read::teams(&app.read_models).await? {
            if viewer.is_admin() || mine.contains(&row.name) {
                out.push(team_gql(app, row).await?);
            }
        }
        Ok(out)
    }

    /// One team (admins, or its members).
    async fn team(&self, ctx: &Context<'_>, name: String) -> ApiResult<TeamGql> {
        let viewer = Viewer::of(ctx).await?;
        if !viewer.is_admin() && !identity_teams(app(ctx), &viewer).await?.contains(&name) {
            // Not seen is not there: the answer for a missing team.
            return Err(ApiError::NotFound(format!("no team named {name}")));
        }
        team_named(app(ctx), &name).await
    }
}

async fn identity_teams(app: &App, viewer: &Viewer) -> ApiResult<Vec<String>> {
    Ok(read::teams_of(&app.read_models, viewer.principal.username.as_str()).await?)
}

/// Changes a team as the caller (admins) and answers with the team as it now is.
async fn change_team(ctx: &Context<'_>, team: &str, action: CatalogAction) -> ApiResult<TeamGql> {
    change_catalog(ctx, action).await?;
    team_named(app(ctx), team).await
}

#[derive(Default)]
pub struct TeamMutation;

#[Object]
impl TeamMutation {
    /// Creates a team (admins). Its name is a DNS label.
    async fn create_team(&self, ctx: &Context<'_>, name: String) -> ApiResult<TeamGql> {
        change_team(ctx, &name.clone(), CatalogAction::CreateTeam { team_id: uuid::Uuid::now_v7(), name }).await
    }

    /// Renames a team (admins); members and grants stay.
    async fn rename_team(&self, ctx: &Context<'_>, name: String, new_name: String) -> ApiResult<TeamGql> {
        change_team(ctx, &new_name.clone(), CatalogAction::RenameTeam { name, new_name }).await
    }

    /// Deletes a team and its grants (admins).
    async fn delete_team(&self, ctx: &Context<'_>, name: String) -> ApiResult<bool> {
        change_catalog(ctx, CatalogAction::DeleteTeam { name }).await?;
        Ok(true)
    }

    /// Adds a user to a team (admins).
    async fn add_team_member(&self, ctx: &Context<'_>, team: String, username: String) -> ApiResult<TeamGql> {
        request(ctx).admin()?;
        let username = Username::parse(&username)?;
        if identity::user(&app(ctx).read_models, username.as_str()).await?.is_none() {
            return Err(ApiError::NotFound(format!("no user named {username}")));
        }
        change_team(ctx, &team.clone(), CatalogAction::AddTeamMember { team, username }).await
    }

    /// Removes a user from a team (admins).
    async fn remove_team_member(&self, ctx: &Context<'_>, team: String, username: String) -> ApiResult<TeamGql> {
        let username = Username::parse(&username)?;
        change_team(ctx, &team.clone(), CatalogAction::RemoveTeamMember { team, username }).await
    }

    /// Gives a team FULL or READ_ONLY access to a project or environment (admins). Replaces the
    /// team's earlier grant on that target.
    async fn grant_access(&self, ctx: &Context<'_>, team: String, target: AccessTargetInput, access: AccessGql) -> ApiResult<TeamGql> {
        change_team(ctx, &team.clone(), CatalogAction::Grant { team, target: target.target(), access: access.into() }).await
    }

    /// Takes a team's access to a project or environment away (admins).
    async fn revoke_access(&self, ctx: &Context<'_>, team: String, target: AccessTargetInput) -> ApiResult<TeamGql> {
        change_team(ctx, &team.clone(), CatalogAction::Revoke { team, target: target.target() }).await
    }
}
