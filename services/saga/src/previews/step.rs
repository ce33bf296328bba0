//! What one step of a preview does, decided from what the step found: pure, so that every
//! rule (a hand-made deployment is never touched, the previous commit's deployment goes first,
//! a missing tag is waited for, then given up) is tested here rather than only end to end.

use std::collections::BTreeMap;
use std::time::Duration;

use nullops_domain::deployment::Phase;
use nullops_domain::preview::preview_name;
use nullops_events::catalog::RepositoryLink;
use nullops_projections::previews::{PreviewPhase, PreviewRow};
use uuid::Uuid;

use super::forge::StatusState;

/// How often a deployment being placed, run or removed is looked at (its events also wake it).
pub const WATCH: Duration = Duration::from_secs(2);

/// The deployment that holds the preview's name in its environment.
#[derive(Debug, Clone)]
pub struct Holder {
    pub deployment_id: Uuid,
    pub project: String,
    pub created_by: String,
    /// Whether this preview made it (only those are replaced or deleted).
    pub made_by_preview: bool,
    /// Whether it is being removed or has ended already.
    pub removing: bool,
}

/// What the registry said of the tag the preview asks for.
#[derive(Debug, Clone)]
pub enum TagLookup {
    /// The link's service is gone from the catalog.
    NoService,
    /// The service's registry (named) is gone from the catalog.
    NoRegistry(String),
    /// `image` (without its tag) in `registry`: whether the tag is there.
    Asked { image: String, registry: String, found: bool },
    /// The registry could not be asked, and why.
    Unanswered { image: String, registry: String, why: String },
}

/// What a step found.
pub struct Facts<'a> {
    pub link: &'a RepositoryLink,
    pub row: &'a PreviewRow,
    /// Now, in microseconds.
    pub now: i64,
    pub holder: Option<&'a Holder>,
    /// The phase of the deployment the row asks for, when it exists.
    pub phase: Option<Phase>,
    /// Its services' URLs, once running.
    pub urls: BTreeMap<String, String>,
    /// Why it failed or was refused, when it did.
    pub failure: Option<String>,
    /// Looked up only when the deployment is still to be asked for.
    pub tag: Option<TagLookup>,
    /// How often the registry is asked meanwhile for a tag not there yet (`Pacing::preview_tag_poll`).
    pub tag_poll: Duration,
}

/// What a step found and what the forge should be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub phase: PreviewPhase,
    pub message: String,
    /// Look again after this long; `None`: nothing more to do until something changes.
    pub again_in: Option<Duration>,
    pub status: Option<(StatusState, String, Option<String>)>,
    /// The services' URLs, once running.
    pub urls: BTreeMap<String, String>,
}

impl Outcome {
    pub fn watch(phase: PreviewPhase, message: String, again_in: Duration, pending: &str) -> Self {
        Outcome { phase, status: Some((StatusState::Pending, pending.to_owned(), None)), message, again_in: Some(again_in), urls: BTreeMap::new() }
    }
    pub fn failed(message: String) -> Self {
        Outcome { phase: PreviewPhase::Failed, status: Some((StatusState::Failure, message.clone(), None)), message, again_in: None, urls: BTreeMap::new() }
    }
    pub fn settled(phase: PreviewPhase, message: String) -> Self {
        Outcome { phase, message, again_in: None, status: None, urls: BTreeMap::new() }
    }
    fn again(mut self, after: Duration) -> Self {
        self.again_in = Some(after);
        self
    }
}

/// What the step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing: report `0`.
    Report(Outcome),
    /// Delete the deployment (unless it is going already), then report `then`.
    Delete { deployment_id: Uuid, then: Outcome },
    /// Ask for the deployment under this id, then report `then` (a refusal is reported instead).
    Ask { deployment_id: Uuid, then: Outcome },
}

/// The step that moves the preview one step towards what its row asks.
pub fn choose(f: &Facts<'_>) -> Step {
    let (link, row) = (f.link, f.row);
    let name = preview_name(row.number);
    let environment = &link.environment;
    if let Some(h) = f.holder {
        if h.project != link.project {
            return Step::Report(Outcome::failed(format!("environment {environment} already has a deployment named {name}, of project {}", h.project)));
        }
        // Previews touch only what they made: a deployment someone made by hand under the
        // preview's name is theirs, never replaced or deleted here.
        if !h.made_by_preview {
            return Step::Report(match row.deployment_id {
                Some(_) => Outcome::failed(format!(
                    "environment {environment} already has a deployment named {name} that this preview did not make (by {}): delete or rename it to let the preview deploy",
                    h.created_by
                )),
                None => Outcome::settled(
                    PreviewPhase::Removed,
                    format!("the {} was closed; {name} in {environment} is not the preview's (by {}) and is left as it is", forge_noun(link), h.created_by),
                ),
            });
        }
    }
    let Some(deployment_id) = row.deployment_id else {
        // Closed or merged.
        return match f.holder {
            Some(h) => Step::Delete { deployment_id: h.deployment_id, then: Outcome::settled(PreviewPhase::Removing, format!("deleting {name}")).again(WATCH) },
            None => {
                let why = if row.merged { "merged" } else { "closed" };
                Step::Report(Outcome::settled(PreviewPhase::Removed, format!("the {} was {why}: {name} is deleted", forge_noun(link))))
            }
        };
    };
    if let Some(h) = f.holder.filter(|h| h.deployment_id != deployment_id) {
        return Step::Delete {
            deployment_id: h.deployment_id,
            then: Outcome::watch(
                PreviewPhase::Replacing,
                format!("deleting the preview of the previous commit to deploy {}", short(&row.head_sha)),
                WATCH,
                "Replacing the previous preview",
            ),
        };
    }
    let deploying =
        || Outcome::watch(PreviewPhase::Deploying, format!("deploying {name} with {}:{}", link.service, row.tag), WATCH, &format!("Deploying {name}"));
    let Some(phase) = f.phase else { return ask(f, deployment_id, &name) };
    Step::Report(match phase {
        Phase::Running => {
            let url = f.urls.get(&link.service).or_else(|| f.urls.values().next()).cloned();
            Outcome {
                phase: PreviewPhase::Running,
                message: url.clone().unwrap_or_else(|| format!("{name} is running")),
                again_in: None,
                status: Some((StatusState::Success, format!("Preview {name} is running"), url)),
                urls: f.urls.clone(),
            }
        }
        Phase::Failed | Phase::Rejected => Outcome::failed(f.failure.clone().unwrap_or_else(|| format!("deployment {name} failed"))),
        Phase::Cancelling | Phase::Deleting | Phase::Cancelled | Phase::Deleted => Outcome::settled(
            PreviewPhase::Gone,
            format!("{name} was deleted (it expired, or someone deleted it): push a commit or reopen the {} to deploy it again", forge_noun(link)),
        ),
        Phase::Pending | Phase::Scheduled | Phase::Deploying => deploying(),
    })
}

/// The deployment is still to be asked for: once the tag is in the registry (or fails when it
/// never came).
fn ask(f: &Facts<'_>, deployment_id: Uuid, name: &str) -> Step {
    let (row, deadline_passed) = (f.row, f.now >= f.row.tag_deadline);
    let waiting =
        |image: &str, message: String| Step::Report(Outcome::watch(PreviewPhase::WaitingForTag, message, f.tag_poll, &format!("Waiting for {image}")));
    match &f.tag {
        Some(TagLookup::NoService) => Step::Report(Outcome::failed(format!("service {} no longer exists", f.link.service))),
        Some(TagLookup::NoRegistry(registry)) => Step::Report(Outcome::failed(format!("registry {registry} no longer exists"))),
        Some(TagLookup::Unanswered { image, registry, why }) => {
            let image = format!("{image}:{}", row.tag);
            let message = format!("registry {registry} cannot be asked for {image}: {why}");
            if deadline_passed {
                Step::Report(Outcome::failed(message))
            } else {
                waiting(&image, message)
            }
        }
        Some(TagLookup::Asked { image, registry, found: false }) => {
            let image = format!("{image}:{}", row.tag);
            if deadline_passed {
                let minutes = (row.tag_deadline - row.requested_at) / 60_000_000;
                Step::Report(Outcome::failed(format!(
                    "{image} did not appear in registry {registry} within {minutes} minutes: push it, then push a commit to try again"
                )))
            } else {
                waiting(&image, format!("waiting for {image} in registry {registry}"))
            }
        }
        Some(TagLookup::Asked { image, found: true, .. }) => {
            let image = format!("{image}:{}", row.tag);
            Step::Ask {
                deployment_id,
                then: Outcome::watch(PreviewPhase::Deploying, format!("deploying {name} with {image}"), WATCH, &format!("Deploying {name}")),
            }
        }
        // Not looked up (the deployment is being made): look again shortly.
        None => Step::Report(Outcome::watch(PreviewPhase::Deploying, format!("deploying {name}"), WATCH, &format!("Deploying {name}"))),
    }
}

fn forge_noun(link: &RepositoryLink) -> &'static str {
    link.forge.request_noun()
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// The comment kept on the request: where its preview is and its URLs.
pub fn comment(link: &RepositoryLink, row: &PreviewRow, outcome: &Outcome) -> String {
    let name = preview_name(row.number);
    let headline = match outcome.phase {
        PreviewPhase::Requested | PreviewPhase::WaitingForTag => "waiting for its image",
        PreviewPhase::Replacing | PreviewPhase::Deploying => "deploying",
        PreviewPhase::Running => "running",
        PreviewPhase::Failed => "failed",
        PreviewPhase::Removing => "being deleted",
        PreviewPhase::Removed => "deleted",
        PreviewPhase::Gone => "deleted",
    };
    let mut text = format!("<!-- nullops-preview -->\n### NullOps preview `{name}`: {headline}\n\n");
    if outcome.urls.is_empty() {
        text.push_str(&format!("{}\n\n", outcome.message));
    } else {
        text.push_str("| Service | URL |\n|---|---|\n");
        for (service, url) in &outcome.urls {
            text.push_str(&format!("| {service} | {url} |\n"));
        }
        text.push('\n');
    }
    text.push_str(&format!(
        "Commit `{}` · {} `{}` · project `{}` · environment `{}`\n",
        short(&row.head_sha),
        link.service,
        row.tag,
        link.project,
        link.environment
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use nullops_events::catalog::{Forge, PreviewTagRule, Sealed};
    use nullops_projections::previews::Progress;

    const MINUTE: i64 = 60_000_000;
    const TAG_POLL: Duration = Duration::from_secs(5);

    fn link() -> RepositoryLink {
        RepositoryLink {
            project: "shop".into(),
            forge: Forge::GitHub,
            repository: "acme/shop".into(),
            api_url: "https://api.github.com".into(),
            environment: "staging".into(),
            service: "web".into(),
            tag_rule: PreviewTagRule::PrNumber,
            credentials: Sealed { key_id: Uuid::nil(), nonce: vec![], ciphertext: vec![] },
        }
    }

    fn row(deployment_id: Option<Uuid>) -> PreviewRow {
        PreviewRow {
            project_id: Uuid::nil(),
            number: 7,
            project: "shop".into(),
            forge: "github".into(),
            title: "Faster checkout".into(),
            url: "https://github.com/acme/shop/pull/7".into(),
            sender: "ada".into(),
            action: "synchronize".into(),
            deployment_id,
            merged: false,
            head_sha: "0123456789abcdef".into(),
            tag: "pr-7".into(),
            position: (1, 0),
            requested_at: 0,
            tag_deadline: 15 * MINUTE,
            progress: Progress::requested(),
        }
    }

    fn holder(id: Uuid, made_by_preview: bool) -> Holder {
        Holder { deployment_id: id, project: "shop".into(), created_by: "bob".into(), made_by_preview, removing: false }
    }

    fn facts<'a>(link: &'a RepositoryLink, row: &'a PreviewRow, holder: Option<&'a Holder>) -> Facts<'a> {
        Facts { link, row, now: MINUTE, holder, phase: None, urls: BTreeMap::new(), failure: None, tag: None, tag_poll: TAG_POLL }
    }

    fn asked(found: bool) -> Option<TagLookup> {
        Some(TagLookup::Asked { image: "acme/web".into(), registry: "local".into(), found })
    }

    #[test]
    fn a_deployment_made_by_hand_under_the_preview_name_is_never_replaced_nor_deleted() {
        let (link, id) = (link(), Uuid::now_v7());
        let hand_made = holder(Uuid::now_v7(), false);
        // given a request to deploy, when someone else's deployment holds pr-7: it fails, saying whose
        let asked_to_deploy = row(Some(id));
        let Step::Report(outcome) = choose(&facts(&link, &asked_to_deploy, Some(&hand_made))) else { panic!("touches it") };
        assert_eq!(outcome.phase, PreviewPhase::Failed);
        assert!(outcome.message.contains("did not make (by bob)"), "{}", outcome.message);
        // given the request closed: it is left as it is
        let closed = row(None);
        let Step::Report(outcome) = choose(&facts(&link, &closed, Some(&hand_made))) else { panic!("deletes it") };
        assert_eq!(outcome.phase, PreviewPhase::Removed);
        assert!(outcome.message.contains("left as it is"), "{}", outcome.message);
    }

    #[test]
    fn another_projects_deployment_under_the_name_fails_the_preview() {
        let (link, row) = (link(), row(Some(Uuid::now_v7())));
        let other = Holder { project: "billing".into(), ..holder(Uuid::now_v7(), true) };
        let Step::Report(outcome) = choose(&facts(&link, &row, Some(&other))) else { panic!("touches it") };
        assert_eq!(outcome.message, "environment staging already has a deployment named pr-7, of project billing");
    }

    #[test]
    fn closing_deletes_the_previews_deployment_and_then_reports_it_removed() {
        let (link, row) = (link(), row(None));
        let own = holder(Uuid::now_v7(), true);
        assert_eq!(
            choose(&facts(&link, &row, Some(&own))),
            Step::Delete { deployment_id: own.deployment_id, then: Outcome::settled(PreviewPhase::Removing, "deleting pr-7".into()).again(WATCH) }
        );
        let merged = PreviewRow { merged: true, ..row };
        let Step::Report(outcome) = choose(&facts(&link, &merged, None)) else { panic!("acts on nothing") };
        assert_eq!((outcome.phase, outcome.message.as_str()), (PreviewPhase::Removed, "the pull request was merged: pr-7 is deleted"));
    }

    #[test]
    fn a_new_commit_first_deletes_the_previous_commits_deployment() {
        let (link, row) = (link(), row(Some(Uuid::now_v7())));
        let previous = holder(Uuid::now_v7(), true);
        let Step::Delete { deployment_id, then } = choose(&facts(&link, &row, Some(&previous))) else { panic!("does not free the name") };
        assert_eq!(deployment_id, previous.deployment_id);
        assert_eq!(then.phase, PreviewPhase::Replacing);
        assert!(then.message.ends_with("to deploy 0123456"), "{}", then.message);
    }

    #[test]
    fn a_missing_tag_is_waited_for_until_the_deadline_then_given_up() {
        let (link, id) = (link(), Uuid::now_v7());
        let row = row(Some(id));
        let waiting = Facts { tag: asked(false), ..facts(&link, &row, None) };
        let Step::Report(outcome) = choose(&waiting) else { panic!("asks without the tag") };
        assert_eq!((outcome.phase, outcome.again_in), (PreviewPhase::WaitingForTag, Some(TAG_POLL)));
        assert_eq!(outcome.message, "waiting for acme/web:pr-7 in registry local");
        let late = Facts { now: row.tag_deadline, tag: asked(false), ..facts(&link, &row, None) };
        let Step::Report(outcome) = choose(&late) else { panic!("asks without the tag") };
        assert_eq!(outcome.phase, PreviewPhase::Failed);
        assert!(outcome.message.contains("did not appear in registry local within 15 minutes"), "{}", outcome.message);
        // A registry that does not answer is waited for in the same way.
        let unanswered = Facts {
            tag: Some(TagLookup::Unanswered { image: "acme/web".into(), registry: "local".into(), why: "no answer within 10 s".into() }),
            ..facts(&link, &row, None)
        };
        let Step::Report(outcome) = choose(&unanswered) else { panic!("asks without the tag") };
        assert_eq!(outcome.phase, PreviewPhase::WaitingForTag);
    }

    #[test]
    fn the_deployment_is_asked_for_once_its_tag_is_there_under_the_id_fixed_by_the_hook() {
        let (link, id) = (link(), Uuid::now_v7());
        let row = row(Some(id));
        let Step::Ask { deployment_id, then } = choose(&Facts { tag: asked(true), ..facts(&link, &row, None) }) else { panic!("does not ask") };
        assert_eq!(deployment_id, id);
        assert_eq!((then.phase, then.message.as_str()), (PreviewPhase::Deploying, "deploying pr-7 with acme/web:pr-7"));
    }

    #[test]
    fn a_running_preview_reports_success_with_its_services_url() {
        let (link, id) = (link(), Uuid::now_v7());
        let row = row(Some(id));
        let own = holder(id, true);
        let urls = BTreeMap::from([("db".to_owned(), "http://db.x/".to_owned()), ("web".to_owned(), "http://web.pr-7.staging.qa/".to_owned())]);
        let running = Facts { phase: Some(Phase::Running), urls: urls.clone(), ..facts(&link, &row, Some(&own)) };
        let Step::Report(outcome) = choose(&running) else { panic!("acts on a running preview") };
        assert_eq!(outcome.status, Some((StatusState::Success, "Preview pr-7 is running".into(), Some("http://web.pr-7.staging.qa/".into()))));
        assert_eq!((outcome.again_in, outcome.urls), (None, urls));
        let failed = Facts { phase: Some(Phase::Failed), failure: Some("step web: exit code 1".into()), ..facts(&link, &row, Some(&own)) };
        assert_eq!(choose(&failed), Step::Report(Outcome::failed("step web: exit code 1".into())));
    }
}
