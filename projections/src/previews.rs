//! Pull-request previews (`previews`): one row per pull request of a linked repository, what
//! it asks for now (from its latest `preview.requested`) and how far the gateway's `previews`
//! process has got: the deployment's progress, the commit status and the comment it posted.
//! Working data like `webhook_deliveries`, not history: only that process writes it (a row is
//! made or moved on, idempotently, when it reacts to the event); a projection rebuild leaves it
//! alone.

use sqlx::Row;
use uuid::Uuid;

use crate::WorkingRows;
use crate::{ProjectionError, ReadModelDb};

pub(crate) const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS previews (project_id TEXT NOT NULL, number BIGINT NOT NULL, project TEXT NOT NULL,
        forge TEXT NOT NULL, title TEXT NOT NULL, url TEXT NOT NULL, sender TEXT NOT NULL, action TEXT NOT NULL, deployment_id TEXT,
        merged BIGINT NOT NULL, head_sha TEXT NOT NULL, tag TEXT NOT NULL, commit_pos BIGINT NOT NULL, seq_pos BIGINT NOT NULL,
        requested_at BIGINT NOT NULL, tag_deadline BIGINT NOT NULL, phase TEXT NOT NULL, message TEXT NOT NULL, settled BIGINT NOT NULL,
        next_at BIGINT NOT NULL, reported TEXT NOT NULL, comment_id TEXT NOT NULL, comment TEXT NOT NULL, failures BIGINT NOT NULL,
        PRIMARY KEY (project_id, number))"];

nullops_events::named_enum! {
    /// Where a preview is. One home for the names the API and the console show.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum PreviewPhase {
        /// Recorded; the process has not looked at it yet.
        Requested = "requested",
        /// The tag the rule asks for is not in the registry yet (CI may still be pushing it).
        WaitingForTag = "waiting_for_tag",
        /// The preview of an earlier commit is being removed to make room for this one.
        Replacing = "replacing",
        /// The deployment is being placed and run.
        Deploying = "deploying",
        Running = "running",
        Failed = "failed",
        /// Closed or merged: the deployment is being removed.
        Removing = "removing",
        /// Closed or merged, and nothing is left.
        Removed = "removed",
        /// Deleted while the pull request is open (expired, or by hand): a push or a reopen
        /// deploys it again.
        Gone = "gone",
    }
}

impl PreviewPhase {
    fn stored(raw: &str) -> Result<Self, ProjectionError> {
        Self::parse(raw).ok_or_else(|| ProjectionError::Corrupt(format!("previews: phase {raw:?}")))
    }
}

/// How far the process has got with a preview's latest request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub phase: PreviewPhase,
    /// What a person reads about it: why it waits or failed, its URL.
    pub message: String,
    /// Nothing to do until a new request or a change to its deployment.
    pub settled: bool,
    /// When the process looks at it again (microseconds).
    pub next_at: i64,
    /// The commit status last posted, as `<sha> <state> <description>` ('' for none).
    pub reported: String,
    /// The forge's id of the comment kept up to date ('' until it is posted).
    pub comment_id: String,
    /// The comment's body as last posted.
    pub comment: String,
    /// Forge calls failed in a row (statuses and comments are retried with growing pauses).
    pub failures: u32,
}

impl Progress {
    /// A request just recorded: nothing done or posted for it yet, to be looked at at once.
    pub fn requested() -> Self {
        Progress {
            phase: PreviewPhase::Requested,
            message: String::new(),
            settled: false,
            next_at: 0,
            reported: String::new(),
            comment_id: String::new(),
            comment: String::new(),
            failures: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewRow {
    pub project_id: Uuid,
    pub number: u64,
    pub project: String,
    /// `github` or `gitlab`.
    pub forge: String,
    pub title: String,
    pub url: String,
    pub sender: String,
    pub action: String,
    /// The deployment that runs the requested commit; none when the request was closed.
    pub deployment_id: Option<Uuid>,
    pub merged: bool,
    pub head_sha: String,
    pub tag: String,
    /// The position of the `preview.requested` this row follows.
    pub position: (i64, i64),
    pub requested_at: i64,
    /// Until when a missing tag is waited for.
    pub tag_deadline: i64,
    pub progress: Progress,
}

const COLUMNS: &str = "project_id, number, project, forge, title, url, sender, action, deployment_id, merged, head_sha, tag, commit_pos, seq_pos, \
                       requested_at, tag_deadline, phase, message, settled, next_at, reported, comment_id, comment, failures";

fn row(r: &sqlx::any::AnyRow) -> Result<PreviewRow, ProjectionError> {
    let corrupt = |what: &str, raw: &str| ProjectionError::Corrupt(format!("previews: {what} {raw:?}"));
    let project_id: String = r.try_get(0)?;
    let deployment_id: Option<String> = r.try_get(8)?;
    Ok(PreviewRow {
        project_id: project_id.parse().map_err(|_| corrupt("project id", &project_id))?,
        number: u64::try_from(r.try_get::<i64, _>(1)?).unwrap_or(0),
        project: r.try_get(2)?,
        forge: r.try_get(3)?,
        title: r.try_get(4)?,
        url: r.try_get(5)?,
        sender: r.try_get(6)?,
        action: r.try_get(7)?,
        deployment_id: deployment_id.as_deref().map(|d| d.parse().map_err(|_| corrupt("deployment id", d))).transpose()?,
        merged: r.try_get::<i64, _>(9)? != 0,
        head_sha: r.try_get(10)?,
        tag: r.try_get(11)?,
        position: (r.try_get(12)?, r.try_get(13)?),
        requested_at: r.try_get(14)?,
        tag_deadline: r.try_get(15)?,
        progress: Progress {
            phase: PreviewPhase::stored(&r.try_get::<String, _>(16)?)?,
            message: r.try_get(17)?,
            settled: r.try_get::<i64, _>(18)? != 0,
            next_at: r.try_get(19)?,
            reported: r.try_get(20)?,
            comment_id: r.try_get(21)?,
            comment: r.try_get(22)?,
            failures: u32::try_from(r.try_get::<i64, _>(23)?).unwrap_or(u32::MAX),
        },
    })
}

/// Makes a preview's row follow a newer request: what it asks for now, to be looked at at
/// once. A request at or before the row's position changes nothing (the process reacts to an
/// event again after a crash); the comment and the last status stay (they are kept up to date).
pub(crate) async fn record(conn: &mut sqlx::AnyConnection, p: &PreviewRow) -> Result<(), ProjectionError> {
    let sql = format!(
        "INSERT INTO previews ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)
         ON CONFLICT (project_id, number) DO UPDATE SET project = excluded.project, forge = excluded.forge, title = excluded.title, url = excluded.url,
           sender = excluded.sender, action = excluded.action, deployment_id = excluded.deployment_id, merged = excluded.merged,
           head_sha = excluded.head_sha, tag = excluded.tag, commit_pos = excluded.commit_pos, seq_pos = excluded.seq_pos,
           requested_at = excluded.requested_at, tag_deadline = excluded.tag_deadline, phase = excluded.phase, message = excluded.message,
           settled = excluded.settled, next_at = excluded.next_at, failures = excluded.failures
         WHERE previews.commit_pos < excluded.commit_pos OR (previews.commit_pos = excluded.commit_pos AND previews.seq_pos < excluded.seq_pos)"
    );
    sqlx::query(&sql)
        .bind(p.project_id.to_string())
        .bind(i64::try_from(p.number).unwrap_or(i64::MAX))
        .bind(p.project.clone())
        .bind(p.forge.clone())
        .bind(p.title.clone())
        .bind(p.url.clone())
        .bind(p.sender.clone())
        .bind(p.action.clone())
        .bind(p.deployment_id.map(|d| d.to_string()))
        .bind(i64::from(p.merged))
        .bind(p.head_sha.clone())
        .bind(p.tag.clone())
        .bind(p.position.0)
        .bind(p.position.1)
        .bind(p.requested_at)
        .bind(p.tag_deadline)
        .bind(p.progress.phase.name())
        .bind(p.progress.message.clone())
        .bind(i64::from(p.progress.settled))
        .bind(p.progress.next_at)
        .bind(p.progress.reported.clone())
        .bind(p.progress.comment_id.clone())
        .bind(p.progress.comment.clone())
        .bind(i64::from(p.progress.failures))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records how far the process got with `p`'s request, unless a newer request came meanwhile
/// (then that one is looked at next and this is dropped). Whether it was recorded.
pub async fn progressed(db: &WorkingRows, p: &PreviewRow, progress: &Progress) -> Result<bool, ProjectionError> {
    let done = sqlx::query(
        "UPDATE previews SET phase = $1, message = $2, settled = $3, next_at = $4, reported = $5, comment_id = $6, comment = $7, failures = $8
         WHERE project_id = $9 AND number = $10 AND commit_pos = $11 AND seq_pos = $12",
    )
    .bind(progress.phase.name())
    .bind(progress.message.clone())
    .bind(i64::from(progress.settled))
    .bind(progress.next_at)
    .bind(progress.reported.clone())
    .bind(progress.comment_id.clone())
    .bind(progress.comment.clone())
    .bind(i64::from(progress.failures))
    .bind(p.project_id.to_string())
    .bind(i64::try_from(p.number).unwrap_or(i64::MAX))
    .bind(p.position.0)
    .bind(p.position.1)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Previews with something to do by `now`, those waiting longest first (at most `limit`).
pub async fn due(db: &ReadModelDb, now: i64, limit: u32) -> Result<Vec<PreviewRow>, ProjectionError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM previews WHERE settled = 0 AND next_at <= $1 ORDER BY next_at LIMIT $2"))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(row).collect()
}

/// Has the preview that runs `deployment_id` looked at again now: its deployment changed.
pub(crate) async fn wake(conn: &mut sqlx::AnyConnection, deployment_id: Uuid) -> Result<(), ProjectionError> {
    sqlx::query("UPDATE previews SET settled = 0, next_at = 0 WHERE deployment_id = $1").bind(deployment_id.to_string()).execute(&mut *conn).await?;
    Ok(())
}

/// A project's previews, newest request first.
pub async fn of_project(db: &ReadModelDb, project_id: Uuid) -> Result<Vec<PreviewRow>, ProjectionError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM previews WHERE project_id = $1 ORDER BY commit_pos DESC, seq_pos DESC"))
        .bind(project_id.to_string())
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::WorkingWrite;

    fn preview(position: i64, sha: &str) -> PreviewRow {
        PreviewRow {
            project_id: Uuid::from_u128(1),
            number: 7,
            project: "shop".into(),
            forge: "github".into(),
            title: "Faster checkout".into(),
            url: "https://github.com/acme/shop/pull/7".into(),
            sender: "octocat".into(),
            action: "opened".into(),
            deployment_id: Some(Uuid::from_u128(u128::try_from(position).unwrap())),
            merged: false,
            head_sha: sha.into(),
            tag: "pr-7".into(),
            position: (position, 0),
            requested_at: 10,
            tag_deadline: 100,
            progress: Progress::requested(),
        }
    }

    #[tokio::test]
    async fn a_row_follows_the_newest_request_and_keeps_its_comment() {
        let path = std::env::temp_dir().join(format!("nullops-previews-{}.db", Uuid::now_v7()));
        let db = ReadModelDb::open(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
        let first = preview(5, "aaa");
        let commit = |writes: Vec<WorkingWrite>, at: u64| {
            let rows = db.working_rows();
            async move { rows.commit("previews", &writes, nullops_events::LogPosition { commit: at, seq: at }).await.unwrap() }
        };
        commit(vec![WorkingWrite::Preview(Box::new(first.clone()))], 1).await;
        let running = Progress { phase: PreviewPhase::Running, settled: true, comment_id: "42".into(), comment: "up".into(), ..first.progress.clone() };
        assert!(progressed(&db.working_rows(), &first, &running).await.unwrap());
        assert!(due(&db, 1, 10).await.unwrap().is_empty(), "settled");
        commit(vec![WorkingWrite::WakePreviews(Uuid::from_u128(5))], 2).await;
        assert_eq!(due(&db, 1, 10).await.unwrap().len(), 1, "its deployment changed");

        // An older request (an event reacted to again) changes nothing; a newer one moves it on.
        commit(vec![WorkingWrite::Preview(Box::new(preview(3, "old"))), WorkingWrite::Preview(Box::new(preview(9, "bbb")))], 3).await;
        let rows = of_project(&db, Uuid::from_u128(1)).await.unwrap();
        assert_eq!((rows.len(), rows[0].head_sha.as_str(), rows[0].progress.phase), (1, "bbb", PreviewPhase::Requested));
        assert_eq!((rows[0].progress.comment_id.as_str(), rows[0].progress.comment.as_str()), ("42", "up"), "the comment is kept up to date, not made again");
        // Progress on the request it no longer follows is dropped.
        assert!(!progressed(&db.working_rows(), &first, &running).await.unwrap());
        let _ = std::fs::remove_file(path);
    }
}
