//! The demo's images (`nullops_gateway::demo`), built into the local Docker engine from this very
//! binary: a `FROM scratch` base holding it, and one small image per demo image on top with its
//! entrypoint. No base image is pulled and no registry is needed, so a machine with Docker and
//! no internet deploys the demo.
//!
//! The base is rebuilt when the binary differs from the one it holds (size and modification
//! time, kept as a label), and the images on top with it; otherwise nothing is built.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bollard::query_parameters::BuildImageOptions;
use bollard::Docker;
use bytes::Bytes;
use futures::StreamExt;
use nullops_gateway::demo::{DemoImage, IMAGES};

const BASE: &str = "nullops.local/demo/base";
/// The label saying which binary an image holds.
const BINARY_LABEL: &str = "nullops.demo.binary";
/// Bound on building the base (a copy of the binary, hundreds of MB for a debug build).
const BASE_BUILD: Duration = Duration::from_secs(300);
const SMALL_BUILD: Duration = Duration::from_secs(60);

/// Makes sure every demo image is in the engine, built from this binary. Returns how many it built.
pub async fn ensure_images() -> anyhow::Result<usize> {
    let docker = Docker::connect_with_local_defaults().context("no Docker engine")?;
    let exe = std::env::current_exe().context("where this binary is")?;
    let meta = tokio::fs::metadata(&exe).await?;
    let modified = meta.modified().ok().and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
    let identity = format!("{}-{}-{modified}", env!("CARGO_PKG_VERSION"), meta.len());
    let base = format!("{BASE}:{}", env!("CARGO_PKG_VERSION"));
    let mut built = 0;
    let base_current = label_of(&docker, &base).await.as_deref() == Some(identity.as_str());
    if !base_current {
        tracing::info!(image = %base, "building the demo's base image from this binary");
        let dockerfile = "FROM scratch\nCOPY nullops /nullops\n";
        let body = tar_stream(dockerfile, Some((exe, meta.len()))).await?;
        build(&docker, &base, &identity, body, BASE_BUILD).await?;
        built += 1;
    }
    for image in &IMAGES {
        let name = format!("{}:{}", image.repository, image.tag);
        if base_current && label_of(&docker, &name).await.as_deref() == Some(identity.as_str()) {
            continue;
        }
        let body = tar_stream(&dockerfile(&base, image), None).await?;
        build(&docker, &name, &identity, body, SMALL_BUILD).await?;
        built += 1;
    }
    Ok(built)
}

fn dockerfile(base: &str, image: &DemoImage) -> String {
    let entrypoint = serde_json::to_string(image.entrypoint).unwrap_or_default();
    let banner = image.banner.map(|b| format!("ENV ECHO_BANNER={}\n", serde_json::to_string(b).unwrap_or_default())).unwrap_or_default();
    format!("FROM {base}\n{banner}EXPOSE 8080\nENTRYPOINT {entrypoint}\n")
}

async fn label_of(docker: &Docker, image: &str) -> Option<String> {
    let inspected = docker.inspect_image(image).await.ok()?;
    inspected.config?.labels?.get(BINARY_LABEL).cloned()
}

use nullops_gateway::tarball::{self, Archive};

async fn build(docker: &Docker, name: &str, identity: &str, body: Archive, bound: Duration) -> anyhow::Result<()> {
    let options = BuildImageOptions {
        t: Some(name.to_owned()),
        labels: Some(HashMap::from([(BINARY_LABEL.to_owned(), identity.to_owned())])),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    let run = async {
        let mut progress = docker.build_image(options, None, Some(bollard::body_try_stream(body)));
        while let Some(step) = progress.next().await {
            let step = step.map_err(|e| anyhow!("building {name}: {e}"))?;
            if let Some(detail) = step.error_detail {
                bail!("building {name}: {}", detail.message.unwrap_or_default());
            }
        }
        Ok(())
    };
    tokio::time::timeout(bound, run).await.map_err(|_| anyhow!("building {name} took over {} s", bound.as_secs()))?
}

/// A tar archive, streamed: `Dockerfile`, and the file at `binary` as `nullops` when given.
async fn tar_stream(dockerfile: &str, binary: Option<(std::path::PathBuf, u64)>) -> anyhow::Result<Archive> {
    let head = tarball::entry("Dockerfile", dockerfile.as_bytes(), 0o644)?;
    let mut parts: Vec<Archive> = vec![futures::stream::once(async { Ok(Bytes::from(head)) }).boxed()];
    if let Some((path, len)) = binary {
        parts.push(tarball::file_entry("nullops", &path, len, 0o755).await.with_context(|| format!("reading {}", path.display()))?);
    }
    parts.push(futures::stream::once(async { Ok(Bytes::from_static(&tarball::END)) }).boxed());
    Ok(futures::stream::iter(parts).flatten().boxed())
}
