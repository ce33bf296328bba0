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

/// A tar archive as it is streamed to the engine.
type Archive = futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

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
    let mut head = Vec::with_capacity(2048);
    head.extend_from_slice(&tar_header("Dockerfile", dockerfile.len() as u64, 0o644)?);
    head.extend_from_slice(dockerfile.as_bytes());
    head.resize(head.len() + padding(dockerfile.len() as u64), 0);
    let mut parts: Vec<Archive> = vec![futures::stream::once(async { Ok(Bytes::from(head)) }).boxed()];
    if let Some((path, len)) = binary {
        let file = tokio::fs::File::open(&path).await.with_context(|| format!("reading {}", path.display()))?;
        parts.push(futures::stream::once(futures::future::ready(tar_header("nullops", len, 0o755).map(Bytes::from))).boxed());
        parts.push(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).boxed());
        parts.push(futures::stream::once(async move { Ok(Bytes::from(vec![0u8; padding(len)])) }).boxed());
    }
    // Two empty blocks end the archive.
    parts.push(futures::stream::once(async { Ok(Bytes::from(vec![0u8; 1024])) }).boxed());
    Ok(futures::stream::iter(parts).flatten().boxed())
}

fn padding(len: u64) -> usize {
    ((512 - len % 512) % 512) as usize
}

/// A ustar header for a regular file.
fn tar_header(name: &str, size: u64, mode: u32) -> std::io::Result<Vec<u8>> {
    if name.len() > 99 || size >= 8 << 30 {
        return Err(std::io::Error::other(format!("{name} does not fit a tar header")));
    }
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8], at: usize, width: usize, value: u64| {
        let text = format!("{value:0w$o}", w = width - 1);
        h[at..at + width - 1].copy_from_slice(text.as_bytes());
    };
    octal(&mut h, 100, 8, u64::from(mode));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_are_ustar_with_a_valid_checksum() {
        let h = tar_header("Dockerfile", 1234, 0o644).unwrap();
        assert_eq!(&h[257..262], b"ustar");
        assert_eq!(&h[124..135], b"00000002322");
        let stored = u64::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut blank = h.clone();
        blank[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, blank.iter().map(|&b| u64::from(b)).sum::<u64>());
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
    }
}
