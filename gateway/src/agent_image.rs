//! `GET /agent-image.tar`: the agent's image, made from this very binary (`FROM scratch`, the
//! binary as `/nullops`, entrypoint `nullops agent`, data in `/data`, port 5000), in the archive
//! format `docker load` reads. A node that can reach the server installs its agent with no
//! registry and no internet:
//!
//! ```sh
//! curl -fsS http://SERVER/agent-image.tar | docker load
//! ```
//!
//! The image is described once per process (the layer's digest is a pass over the binary, off
//! the runtime) and streamed from the binary's file on every request.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};

use crate::tarball::{self, Archive};
use crate::App;

/// The image's name, as `docker load` tags it and the install line runs it.
pub const AGENT_IMAGE: &str = concat!("nullops/agent:", env!("CARGO_PKG_VERSION"));
/// Where the server serves it.
pub const AGENT_IMAGE_PATH: &str = "/agent-image.tar";
/// Downloads at once: each streams the whole binary.
const AT_ONCE: usize = 4;

pub fn routes() -> Router<Arc<App>> {
    Router::new().route(AGENT_IMAGE_PATH, get(serve))
}

/// What an archive of the image is made of, all but the binary's bytes.
struct Described {
    binary: PathBuf,
    binary_len: u64,
    config_name: String,
    config: Vec<u8>,
    manifest: Vec<u8>,
    layer_name: String,
    /// The layer (itself a tar of the one file) in bytes.
    layer_len: u64,
}

/// Why this server cannot make the agent image of its own binary (told to its log only).
#[derive(Debug, thiserror::Error)]
enum CannotDescribe {
    #[error("this binary cannot be read at {path}: {source}")]
    Binary { path: String, source: std::io::Error },
    #[error("the image's description cannot be written: {0}")]
    Description(#[from] serde_json::Error),
    #[error("reading the binary stopped: {0}")]
    Stopped(#[from] tokio::task::JoinError),
}

static DESCRIBED: OnceCell<Result<Described, CannotDescribe>> = OnceCell::const_new();
static DOWNLOADS: Semaphore = Semaphore::const_new(AT_ONCE);

async fn serve() -> Response {
    let Ok(_turn) = DOWNLOADS.try_acquire() else {
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "10")], "the agent image is being downloaded by others: try again shortly\n")
            .into_response();
    };
    let described = DESCRIBED.get_or_init(|| async { tokio::task::spawn_blocking(describe).await.unwrap_or_else(|e| Err(e.into())) }).await;
    let d = match described {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot make the agent image from this binary");
            return (StatusCode::SERVICE_UNAVAILABLE, "the agent image cannot be made on this server (see its log)\n").into_response();
        }
    };
    match archive(d).await {
        Ok((len, stream)) => Response::builder()
            .header(header::CONTENT_TYPE, "application/x-tar")
            .header(header::CONTENT_LENGTH, len)
            .header(header::CONTENT_DISPOSITION, "attachment; filename=\"nullops-agent.tar\"")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read this binary for the agent image");
            (StatusCode::SERVICE_UNAVAILABLE, "the agent image cannot be read on this server (see its log)\n").into_response()
        }
    }
}

/// The image's layer: a tar holding the binary as `nullops`.
async fn layer(d: &Described) -> std::io::Result<Archive> {
    let file = tarball::file_entry("nullops", &d.binary, d.binary_len, 0o755).await?;
    Ok(file.chain(futures::stream::once(async { Ok(Bytes::from_static(&tarball::END)) })).boxed())
}

/// The whole archive, and its length.
async fn archive(d: &Described) -> std::io::Result<(u64, Archive)> {
    let mut head = tarball::entry("manifest.json", &d.manifest, 0o644)?;
    head.extend(tarball::entry(&d.config_name, &d.config, 0o644)?);
    head.extend(tarball::header(&d.layer_name, d.layer_len, 0o644)?);
    let tail = vec![0u8; tarball::padding(d.layer_len)].into_iter().chain(tarball::END).collect::<Vec<u8>>();
    let len = head.len() as u64 + d.layer_len + tail.len() as u64;
    let stream = futures::stream::once(async move { Ok(Bytes::from(head)) })
        .chain(layer(d).await?)
        .chain(futures::stream::once(async move { Ok(Bytes::from(tail)) }))
        .boxed();
    Ok((len, stream))
}

/// Describes the image of this binary (blocking: reads the whole binary once).
fn describe() -> Result<Described, CannotDescribe> {
    fn unreadable(path: &std::path::Path) -> impl Fn(std::io::Error) -> CannotDescribe {
        let path = path.display().to_string();
        move |source| CannotDescribe::Binary { path: path.clone(), source }
    }
    let binary = std::env::current_exe().map_err(unreadable(std::path::Path::new("(this process's executable)")))?;
    let binary_len = std::fs::metadata(&binary).map_err(unreadable(&binary))?.len();
    // The layer's digest: its tar, byte for byte as `layer` streams it.
    let mut digest = Sha256::new();
    digest.update(tarball::header("nullops", binary_len, 0o755).map_err(unreadable(&binary))?);
    let mut file = std::fs::File::open(&binary).map_err(unreadable(&binary))?;
    std::io::copy(&mut file, &mut digest).map_err(unreadable(&binary))?;
    digest.update(vec![0u8; tarball::padding(binary_len)]);
    digest.update(tarball::END);
    let layer_hex = hex(&digest.finalize());
    let layer_len = 512 + binary_len + tarball::padding(binary_len) as u64 + tarball::END.len() as u64;
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/nullops", "agent"], "ExposedPorts": {"5000/tcp": {}}, "Volumes": {"/data": {}}},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]},
        "history": [{"created_by": concat!("nullops ", env!("CARGO_PKG_VERSION"), " (its own binary)")}],
    }))?;
    let config_name = format!("{}.json", hex(&Sha256::digest(&config)));
    let layer_name = format!("{layer_hex}/layer.tar");
    let manifest = serde_json::to_vec(&json!([{"Config": config_name, "RepoTags": [AGENT_IMAGE], "Layers": [layer_name]}]))?;
    Ok(Described { binary, binary_len, config_name, config, manifest, layer_name, layer_len })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
