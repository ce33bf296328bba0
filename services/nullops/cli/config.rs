//! Where the CLI keeps the server and token `nullops login` got: `$XDG_CONFIG_HOME/nullops/
//! config.json` (or `~/.config/nullops/config.json`), readable by its owner only. `NULLOPS_URL`
//! and `NULLOPS_TOKEN` override it, so CI needs no file at all.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::client::CliError;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Saved {
    pub url: Option<String>,
    pub token: Option<String>,
}

fn path() -> Result<PathBuf, CliError> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| CliError::new("USAGE", "neither XDG_CONFIG_HOME nor HOME is set: set NULLOPS_URL and NULLOPS_TOKEN instead"))?;
    Ok(base.join("nullops").join("config.json"))
}

/// What `nullops login` saved, if anything.
pub fn load() -> Saved {
    path().ok().and_then(|p| std::fs::read(p).ok()).and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Saves `saved` with mode 0600 (its directory 0700): the token is a credential.
pub fn save(saved: &Saved) -> Result<PathBuf, CliError> {
    let path = path()?;
    let fail = |e: std::io::Error| CliError::new("USAGE", format!("cannot write {}: {e}", path.display()));
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(fail)?;
    // A link planted where the credential goes would send it elsewhere: refuse to follow one,
    // for the directory and for the file (O_NOFOLLOW).
    for place in [dir, path.as_path()] {
        if std::fs::symlink_metadata(place).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(CliError::new(
                "USAGE",
                format!("{} is a symbolic link: the token is not written through it; remove it and sign in again", place.display()),
            ));
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    let text = serde_json::to_vec_pretty(saved).expect("plain strings serialise");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&path).map_err(fail)?;
    // A file made before with looser bits keeps them unless told.
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    file.write_all(&text).map_err(fail)?;
    Ok(path)
}

/// The server and token to use: the environment first, then what was saved. The saved token
/// goes only to the server it was issued for: `--url` or `NULLOPS_URL` naming another server
/// gets no token from the file (`NULLOPS_TOKEN`, given on purpose, goes where it is told).
pub fn resolve(url: Option<String>) -> (Option<String>, Option<String>) {
    let saved = load();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let url = url.or_else(|| env("NULLOPS_URL")).or(saved.url.clone());
    let saved_token = saved.token.filter(|_| matches!((&url, &saved.url), (Some(u), Some(s)) if same_server(u, s)));
    (url, env("NULLOPS_TOKEN").or(saved_token))
}

/// Whether two server URLs name the same origin (scheme, host, port; a trailing path or slash
/// does not matter).
pub fn same_server(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_belongs_to_one_origin() {
        assert!(same_server("http://127.0.0.1:8080", "http://127.0.0.1:8080/"));
        assert!(same_server("https://nullops.example.com", "https://NULLOPS.example.com:443/graphql"));
        assert!(!same_server("http://127.0.0.1:8080", "http://127.0.0.1:8081"));
        assert!(!same_server("http://nullops.example.com", "https://nullops.example.com"));
        assert!(!same_server("http://nullops.example.com", "http://nullops.example.com.evil.test"));
        assert!(!same_server("not a url", "not a url"));
    }
}
