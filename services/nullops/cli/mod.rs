//! `nullops` as a client, for people and CI: sign in once (`login`), then deploy and wait for
//! RUNNING, list, follow logs, delete, extend, clone, retry. Human output by default; `-o json`
//! prints the API's own objects, stable for scripts. Exit codes: 0 done, 1 the deployment
//! FAILED, 2 a usage or API error (its code and message on stderr), 3 a wait timed out.

/// Lines to stdout and stderr that never panic: a reader that went away (`| head`) ends the
/// output, not the process with a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
macro_rules! err_part {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut e = std::io::stderr().lock();
        let _ = write!(e, $($arg)*);
        let _ = e.flush();
    }};
}

mod client;
mod config;
mod output;
mod queries;

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use nullops_domain::deployment::{DeploymentStatus, Stage};
use serde_json::Value;

use client::{CliError, Client};
use queries::*;

/// What a command ended in; its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done = 0,
    Failed = 1,
    Error = 2,
    TimedOut = 3,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Format {
    /// Tables and sentences.
    #[default]
    Human,
    /// The API's objects as JSON.
    Json,
}

/// Where the server is, for every client command.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// The server (`http://host:port`); else NULLOPS_URL, else what `nullops login` saved.
    #[arg(long, global = true)]
    url: Option<String>,
    /// Output: human (default) or json.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Human, global = true)]
    output: Format,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Sign in and save the server and token for the commands below (mode 0600 in the user's
    /// config directory). Reads the password from the terminal without echo, or from stdin.
    Login {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        username: Option<String>,
        /// Sign in with an API token (from the console's Account page) read from stdin, instead
        /// of a password; NULLOPS_TOKEN, when set, is used instead of stdin.
        #[arg(long)]
        with_token: bool,
        /// Refused: a token in the arguments is seen by every local user (`ps`). Use
        /// --with-token or NULLOPS_TOKEN.
        #[arg(long, hide = true)]
        token: Option<String>,
    },
    /// Who the saved (or NULLOPS_TOKEN) credentials are.
    Whoami {
        #[command(flatten)]
        target: Target,
    },
    /// Deploy a project's latest pipeline to an environment.
    Deploy {
        project: String,
        #[arg(long = "env")]
        environment: String,
        /// The deployment's name (a DNS label); generated when not given.
        #[arg(long)]
        name: Option<String>,
        /// SERVICE=TAG for a service whose tag is chosen per deployment; repeat for more.
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Follow it until RUNNING (exit 0) or FAILED (exit 1).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (exit 3 past it): 90s, 10m, 1h.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        target: Target,
    },
    /// Deployments.
    Deployments {
        #[command(subcommand)]
        command: DeploymentsCommand,
    },
    /// A deployment's log (its pipeline's by default, or one service's).
    Logs {
        deployment: String,
        #[arg(long)]
        service: Option<String>,
        /// Keep printing lines as they come.
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines.
        #[arg(long, default_value_t = 200)]
        tail: i64,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a deployment (or cancel one still being created).
    Delete {
        deployment: String,
        /// Wait until it is gone from its node.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        target: Target,
    },
    /// Push a deployment's cleanup back by its environment's (or project's) lifetime.
    Extend {
        deployment: String,
        #[command(flatten)]
        target: Target,
    },
    /// Run a FAILED deployment again, with the latest pipeline version.
    Retry {
        deployment: String,
        #[command(flatten)]
        target: Target,
    },
    /// A new deployment with another's versions, some changed.
    Clone {
        deployment: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        #[command(flatten)]
        target: Target,
    },
    /// Webhooks and what was delivered to them (admins).
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// The tags of a service that a deployment may choose.
    Tags {
        service: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// List them (alive ones; --all for ended ones too).
    Ls {
        #[arg(long)]
        project: Option<String>,
        #[arg(long = "env")]
        environment: Option<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
    /// One, by name or id.
    Get {
        deployment: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Every webhook, with how its recent deliveries went.
    Ls {
        #[command(flatten)]
        target: Target,
    },
    /// A webhook's recent deliveries, each with its attempts.
    Deliveries {
        /// The webhook's id.
        webhook: String,
        #[command(flatten)]
        target: Target,
    },
}

/// A command-line value the CLI cannot read, and how to write it.
#[derive(Debug, thiserror::Error)]
enum BadValue {
    #[error("{0:?}: give SERVICE=TAG")]
    Tag(String),
    #[error("{0:?}: use a duration such as 90s, 10m or 1h")]
    Duration(String),
}

fn parse_tag(text: &str) -> Result<(String, String), BadValue> {
    match text.split_once('=') {
        Some((service, tag)) if !service.is_empty() && !tag.is_empty() => Ok((service.to_owned(), tag.to_owned())),
        _ => Err(BadValue::Tag(text.to_owned())),
    }
}

/// `90s`, `10m`, `1h`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, BadValue> {
    let bad = || BadValue::Duration(text.to_owned());
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number.parse().map_err(|_| bad())?;
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(bad()),
    };
    n.checked_mul(per).map(Duration::from_secs).ok_or_else(bad)
}

/// Runs a client command; its exit code.
pub async fn run(command: ClientCommand) -> i32 {
    let format = match &command {
        ClientCommand::Deployments { command: DeploymentsCommand::Ls { target, .. } | DeploymentsCommand::Get { target, .. } } => target.output,
        ClientCommand::Login { target, .. }
        | ClientCommand::Whoami { target }
        | ClientCommand::Deploy { target, .. }
        | ClientCommand::Logs { target, .. }
        | ClientCommand::Delete { target, .. }
        | ClientCommand::Extend { target, .. }
        | ClientCommand::Retry { target, .. }
        | ClientCommand::Clone { target, .. }
        | ClientCommand::Tags { target, .. }
        | ClientCommand::Webhooks { command: WebhooksCommand::Ls { target } | WebhooksCommand::Deliveries { target, .. } } => target.output,
    };
    match execute(command).await {
        Ok(outcome) => outcome as i32,
        Err(e) => {
            match format {
                Format::Json => err!("{}", serde_json::json!({"code": e.code, "message": e.message})),
                Format::Human => err!("{e}"),
            }
            Outcome::Error as i32
        }
    }
}

fn connect(target: &Target) -> Result<Client, CliError> {
    let (url, token) = config::resolve(target.url.clone());
    let url = url.ok_or_else(|| CliError::new("USAGE", "no server: run `nullops login --url http://HOST:PORT`, or set NULLOPS_URL"))?;
    Client::new(&url, token)
}

fn tags_of(tags: &[(String, String)]) -> Option<Vec<TagChoice>> {
    (!tags.is_empty()).then(|| tags.iter().map(|(service, tag)| TagChoice { service: service.clone(), tag: tag.clone() }).collect())
}

type TagChoice = create_deployment::TagChoice;

async fn execute(command: ClientCommand) -> Result<Outcome, CliError> {
    match command {
        ClientCommand::Login { target, username, with_token, token } => login(target, username, with_token, token.is_some()).await,
        ClientCommand::Whoami { target } => {
            let data = connect(&target)?.run::<Whoami>(whoami::Variables {}).await?;
            output::print(target.output, &data["me"], |me| {
                format!("{} ({})", me["username"].as_str().unwrap_or_default(), me["role"].as_str().unwrap_or_default().to_lowercase())
            });
            Ok(Outcome::Done)
        }
        ClientCommand::Deploy { project, environment, name, tags, wait, timeout, target } => {
            let client = connect(&target)?;
            let variables = create_deployment::Variables { project, environment, name, tags: tags_of(&tags) };
            let created = client.run::<CreateDeployment>(variables).await?["createDeployment"].clone();
            if !wait {
                output::print(target.output, &created, output::deployment);
                return Ok(Outcome::Done);
            }
            follow(&client, &created, Goal::Running, timeout, target.output).await
        }
        ClientCommand::Deployments { command: DeploymentsCommand::Ls { project, environment, all, target } } => {
            let variables = deployments::Variables { project, environment, include_ended: all };
            let data = connect(&target)?.run::<Deployments>(variables).await?;
            output::print(target.output, &data["deployments"], output::deployment_table);
            Ok(Outcome::Done)
        }
        ClientCommand::Deployments { command: DeploymentsCommand::Get { deployment, target } } => {
            let client = connect(&target)?;
            let found = find(&client, &deployment).await?;
            output::print(target.output, &found, output::deployment);
            Ok(Outcome::Done)
        }
        ClientCommand::Logs { deployment, service, follow: live, tail, target } => {
            let client = connect(&target)?;
            let id = find(&client, &deployment).await?["id"].as_str().unwrap_or_default().to_owned();
            if !live {
                let data = client.run::<Logs>(logs::Variables { id, service, tail }).await?;
                for line in data["deployment"]["logs"].as_array().into_iter().flatten() {
                    output::log_line(target.output, line);
                }
                return Ok(Outcome::Done);
            }
            let mut feed = client.subscribe::<DeploymentLogs>(deployment_logs::Variables { id, service }).await?;
            while let Some(data) = feed.next().await? {
                output::log_line(target.output, &data["deploymentLogs"]);
            }
            Ok(Outcome::Done)
        }
        ClientCommand::Delete { deployment, wait, timeout, target } => {
            let client = connect(&target)?;
            let deleted = act::<DeleteDeployment>(&client, &deployment, |id| delete_deployment::Variables { id }, "deleteDeployment").await?;
            if !wait {
                output::print(target.output, &deleted, output::deployment);
                return Ok(Outcome::Done);
            }
            follow(&client, &deleted, Goal::Ended, timeout, target.output).await
        }
        ClientCommand::Extend { deployment, target } => {
            let d = act::<ExtendDeployment>(&connect(&target)?, &deployment, |id| extend_deployment::Variables { id }, "extendDeployment").await?;
            output::print(target.output, &d, output::deployment);
            Ok(Outcome::Done)
        }
        ClientCommand::Retry { deployment, target } => {
            let d = act::<RetryDeployment>(&connect(&target)?, &deployment, |id| retry_deployment::Variables { id }, "retryDeployment").await?;
            output::print(target.output, &d, output::deployment);
            Ok(Outcome::Done)
        }
        ClientCommand::Clone { deployment, name, tags, target } => {
            let client = connect(&target)?;
            let id = find(&client, &deployment).await?["id"].as_str().unwrap_or_default().to_owned();
            let tags = (!tags.is_empty()).then(|| tags.iter().map(|(s, t)| clone_deployment::TagChoice { service: s.clone(), tag: t.clone() }).collect());
            let d = client.run::<CloneDeployment>(clone_deployment::Variables { id, name, tags }).await?["cloneDeployment"].clone();
            output::print(target.output, &d, output::deployment);
            Ok(Outcome::Done)
        }
        ClientCommand::Webhooks { command: WebhooksCommand::Ls { target } } => {
            let data = connect(&target)?.run::<Webhooks>(webhooks::Variables {}).await?;
            output::print(target.output, &data["webhooks"], output::webhook_table);
            Ok(Outcome::Done)
        }
        ClientCommand::Webhooks { command: WebhooksCommand::Deliveries { webhook, target } } => {
            let data = connect(&target)?.run::<Webhooks>(webhooks::Variables {}).await?;
            let found = data["webhooks"].as_array().into_iter().flatten().find(|w| w["id"] == webhook.as_str()).cloned();
            let found = found.ok_or_else(|| CliError::new("NOT_FOUND", format!("no webhook {webhook}")))?;
            output::print(target.output, &found["deliveries"], output::delivery_table);
            Ok(Outcome::Done)
        }
        ClientCommand::Tags { service, target } => {
            let data = connect(&target)?.run::<AvailableTags>(available_tags::Variables { service }).await?;
            output::print(target.output, &data["availableTags"], |tags| {
                tags.as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join("\n")
            });
            Ok(Outcome::Done)
        }
    }
}

/// Runs mutation `Q` on the deployment named or numbered `wanted`: the deployment after it.
async fn act<Q: graphql_client::GraphQLQuery>(
    client: &Client,
    wanted: &str,
    variables: impl FnOnce(String) -> Q::Variables,
    field: &str,
) -> Result<Value, CliError> {
    let id = find(client, wanted).await?["id"].as_str().unwrap_or_default().to_owned();
    Ok(client.run::<Q>(variables(id)).await?[field].clone())
}

/// A deployment by id, or by name (unique in its environment; a name in several environments
/// must be given as an id).
async fn find(client: &Client, wanted: &str) -> Result<Value, CliError> {
    if uuid::Uuid::try_parse(wanted).is_ok() {
        return Ok(client.run::<DeploymentById>(deployment_by_id::Variables { id: wanted.to_owned() }).await?["deployment"].clone());
    }
    let all = client.run::<Deployments>(deployments::Variables { project: None, environment: None, include_ended: true }).await?;
    let named: Vec<&Value> = all["deployments"].as_array().into_iter().flatten().filter(|d| d["name"] == wanted).collect();
    match named[..] {
        [one] => Ok(one.clone()),
        [] => Err(CliError::new("NOT_FOUND", format!("no deployment named {wanted}"))),
        _ => Err(CliError::new("USAGE", format!("{} deployments are named {wanted} (in different environments): give its id", named.len()))),
    }
}

/// What `--wait` waits for.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// RUNNING: every step succeeded.
    Running,
    /// Gone for good (the API's stage ENDED): deleted, cancelled or rejected.
    Ended,
}

impl Goal {
    fn reached(self, deployment: &Value) -> bool {
        match self {
            Goal::Running => deployment["state"] == DeploymentStatus::Running.name(),
            Goal::Ended => deployment["stage"] == Stage::Ended.name(),
        }
    }
}

fn failed(deployment: &Value) -> bool {
    deployment["state"] == DeploymentStatus::Failed.name()
}

/// Follows a deployment live until it reaches `goal` (exit 0), FAILED (exit 1), or the time
/// runs out (exit 3); a progress line on a terminal meanwhile.
async fn follow(client: &Client, start: &Value, goal: Goal, timeout: Duration, format: Format) -> Result<Outcome, CliError> {
    let id = start["id"].as_str().unwrap_or_default().to_owned();
    let name = start["name"].as_str().unwrap_or_default().to_owned();
    let progress = std::io::stderr().is_terminal() && matches!(format, Format::Human);
    let watch = async {
        let mut feed = client.subscribe::<DeploymentUpdated>(deployment_updated::Variables { id: id.clone() }).await?;
        let mut last = start.clone();
        while let Some(data) = feed.next().await? {
            last = data["deploymentUpdated"].clone();
            if progress {
                err_part!("\r\x1b[2K{}", output::progress(&last));
            }
            if goal.reached(&last) || failed(&last) {
                break;
            }
        }
        Ok::<Value, CliError>(last)
    };
    let ended = tokio::time::timeout(timeout, watch).await;
    if progress {
        err!();
    }
    let last = match ended {
        Ok(last) => last?,
        Err(_) => {
            let now = client.run::<DeploymentById>(deployment_by_id::Variables { id }).await.map(|d| d["deployment"].clone()).unwrap_or_else(|_| start.clone());
            output::print(format, &now, output::deployment);
            err!("TIMEOUT: deployment {name} is {} after {} s", now["state"].as_str().unwrap_or("unknown"), timeout.as_secs());
            return Ok(Outcome::TimedOut);
        }
    };
    output::print(format, &last, output::deployment);
    match last["state"].as_str() {
        _ if goal.reached(&last) => Ok(Outcome::Done),
        _ if failed(&last) => {
            let f = &last["failure"];
            let step = f["step"].as_str().map(|s| format!(" at step {s}")).unwrap_or_default();
            err!("FAILED: deployment {name}{step}: {}", f["reason"].as_str().unwrap_or("no reason given"));
            Ok(Outcome::Failed)
        }
        other => Err(CliError::new("NETWORK", format!("the live feed of deployment {name} ended while it was {}", other.unwrap_or("unknown")))),
    }
}

async fn login(target: Target, username: Option<String>, with_token: bool, token_in_arguments: bool) -> Result<Outcome, CliError> {
    if token_in_arguments {
        return Err(CliError::new(
            "USAGE",
            "a token given as --token VALUE is seen by every user of this machine (in the process list): pipe it in with nullops login --with-token, or set NULLOPS_TOKEN",
        ));
    }
    let url = target
        .url
        .clone()
        .or_else(|| config::resolve(None).0)
        .ok_or_else(|| CliError::new("USAGE", "give the server: nullops login --url http://HOST:PORT"))?;
    let from_env = std::env::var("NULLOPS_TOKEN").ok().filter(|t| !t.trim().is_empty());
    let token = match (with_token, from_env) {
        (_, Some(token)) => token.trim().to_owned(),
        (true, None) => {
            let token = output::ask("API token: ", false)?;
            if token.trim().is_empty() {
                return Err(CliError::new("USAGE", "no token on stdin: pipe the API token in, e.g. nullops login --with-token < token.txt"));
            }
            token.trim().to_owned()
        }
        (false, None) => {
            let username = match username {
                Some(u) => u,
                None => output::ask("Username: ", true)?,
            };
            let password = output::ask("Password: ", false)?;
            let data = Client::new(&url, None)?.run::<Login>(login::Variables { username, password }).await?;
            data["login"]["token"].as_str().unwrap_or_default().to_owned()
        }
    };
    // The token must work before it is kept.
    let me = Client::new(&url, Some(token.clone()))?.run::<Whoami>(whoami::Variables {}).await?;
    let path = config::save(&config::Saved { url: Some(url.clone()), token: Some(token) })?;
    match target.output {
        Format::Json => out!("{}", serde_json::json!({"url": url, "user": me["me"], "config": path})),
        Format::Human => out!("Signed in to {url} as {}; saved in {}", me["me"]["username"].as_str().unwrap_or_default(), path.display()),
    }
    Ok(Outcome::Done)
}
