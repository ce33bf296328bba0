//! HTTP health probes: one GET on a service's address on its deployment network.
//!
//! HTTP/1.0 with `Connection: close`, reading only the status line: a probe needs no more, and
//! a service that answers slowly or endlessly costs at most the probe's timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes read looking for the status line.
const MAX_STATUS_LINE: usize = 1024;

/// `Ok` when `GET path` on `ip:port` answers 2xx or 3xx within `timeout`; else what it did.
pub async fn http(ip: IpAddr, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, get_status(SocketAddr::new(ip, port), path)).await {
        Ok(Ok(status)) if (200..400).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(format!("GET {path} answered {status}")),
        Ok(Err(e)) => Err(format!("GET {path}: {e}")),
        Err(_) => Err(format!("GET {path}: no answer within {} ms", timeout.as_millis())),
    }
}

async fn get_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: nullops-agent\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buffer = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    while !buffer.contains(&b'\n') && buffer.len() < MAX_STATUS_LINE {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
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
        _ => Err(format!("not an HTTP answer: {:?}", line.chars().take(80).collect::<String>())),
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
        assert!(http(broken.ip(), broken.port(), "/", second).await.unwrap_err().contains("503"));
        let garbage = server(b"SSH-2.0-OpenSSH\r\n").await;
        assert!(http(garbage.ip(), garbage.port(), "/", second).await.unwrap_err().contains("not an HTTP answer"));
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let err = http(addr.ip(), addr.port(), "/", Duration::from_millis(200)).await.unwrap_err();
        assert!(err.contains("no answer"), "{err}");
    }
}
