//! HTTP health probes: one GET on a service's address on its deployment network.
//!
//! HTTP/1.0 with `Connection: close`, reading only the status line: a probe needs no more, and
//! a service that answers slowly or endlessly costs at most the probe's timeout.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes read looking for the status line.
const MAX_STATUS_LINE: usize = 1024;

/// Why a probe did not pass, as a person reads it beside the service's health: our words by
/// kind, never the operating system's (`Connection refused (os error 111)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailed {
    #[error("GET {path} answered {status}")]
    Answered { path: String, status: u16 },
    #[error("GET {path}: nothing accepts connections on port {port} yet")]
    Refused { path: String, port: u16 },
    #[error("GET {path}: the connection was cut before an answer")]
    Cut { path: String },
    #[error("GET {path}: the service cannot be reached on its network")]
    Unreachable { path: String },
    #[error("GET {path}: not an HTTP answer: {start:?}")]
    NotHttp { path: String, start: String },
    #[error("GET {path}: no answer within {ms} ms")]
    Silent { path: String, ms: u128 },
}

/// `Ok` when `GET path` on `ip:port` answers 2xx or 3xx within `timeout`; else what it did.
pub async fn http(ip: IpAddr, port: u16, path: &str, timeout: Duration) -> Result<(), ProbeFailed> {
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    match tokio::time::timeout(timeout, get_status(SocketAddr::new(ip, port), &path)).await {
        Ok(Ok(status)) if (200..400).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(ProbeFailed::Answered { path, status }),
        Ok(Err(Failure::Io(e))) => Err(match e.kind() {
            ErrorKind::ConnectionRefused => ProbeFailed::Refused { path, port },
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof => ProbeFailed::Cut { path },
            _ => ProbeFailed::Unreachable { path },
        }),
        Ok(Err(Failure::NotHttp(start))) => Err(ProbeFailed::NotHttp { path, start }),
        Err(_) => Err(ProbeFailed::Silent { path, ms: timeout.as_millis() }),
    }
}

/// What went wrong inside one GET, before it is put in words.
enum Failure {
    Io(std::io::Error),
    /// The start of what came back instead of a status line.
    NotHttp(String),
}

async fn get_status(addr: SocketAddr, path: &str) -> Result<u16, Failure> {
    let mut stream = TcpStream::connect(addr).await.map_err(Failure::Io)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: nullops-agent\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(Failure::Io)?;
    let mut buffer = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    while !buffer.contains(&b'\n') && buffer.len() < MAX_STATUS_LINE {
        let n = stream.read(&mut chunk).await.map_err(Failure::Io)?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buffer);
    let line = line.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|c| c.parse().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(Failure::NotHttp(line.chars().take(80).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn server(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut request = [0u8; 512];
                let _ = s.read(&mut request).await;
                let _ = s.write_all(answer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn success_failure_garbage_and_silence() {
        let second = Duration::from_secs(1);
        let ok = server(b"HTTP/1.0 200 OK\r\n\r\nfine").await;
        assert_eq!(http(ok.ip(), ok.port(), "/healthz", second).await, Ok(()));
        let broken = server(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert_eq!(http(broken.ip(), broken.port(), "/", second).await, Err(ProbeFailed::Answered { path: "/".into(), status: 503 }));
        let garbage = server(b"SSH-2.0-OpenSSH\r\n").await;
        let said = http(garbage.ip(), garbage.port(), "health", second).await.unwrap_err().to_string();
        assert_eq!(said, "GET /health: not an HTTP answer: \"SSH-2.0-OpenSSH\"");
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let err = http(addr.ip(), addr.port(), "/", Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(err, ProbeFailed::Silent { path: "/".into(), ms: 200 });
        // Nothing listening: our words, not the operating system's.
        drop(silent);
        let refused = http(addr.ip(), addr.port(), "/", second).await.unwrap_err().to_string();
        assert_eq!(refused, format!("GET /: nothing accepts connections on port {} yet", addr.port()));
    }
}
