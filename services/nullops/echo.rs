//! `nullops example echo`: an example service for trying the ingress (packaged as the
//! `nullops/echo` image by `infra/demo-images.sh`). It answers with the request it received, so
//! what a proxy changed on the way shows; echoes a POST body to /echo as it streams in; counts a
//! POST body to /count once it has all arrived; echoes
//! WebSocket messages at /ws; and answers /healthz.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;

pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/echo", post(|request: Request| async move { Body::from_stream(request.into_body().into_data_stream()) }))
        // Answers once the whole body has arrived, as most services do: how many bytes it had.
        .route("/count", post(|body: axum::body::Bytes| async move { format!("{} bytes\n", body.len()) }))
        .route("/ws", get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo_messages) }))
        .fallback(any(describe));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("echo service listening on {}", listener.local_addr()?);
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(crate::platform::wait_for_signal()).await?;
    Ok(())
}

/// The banner (`ECHO_BANNER`, when set), the request line, the client's address and every
/// header, one per line.
async fn describe(ConnectInfo(client): ConnectInfo<SocketAddr>, request: Request) -> Response {
    let mut text = std::env::var("ECHO_BANNER").map(|b| format!("{b}\n")).unwrap_or_default();
    text += &format!("{} {} {:?}\nclient: {client}\n", request.method(), request.uri(), request.version());
    for (name, value) in request.headers() {
        text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
    }
    text.into_response()
}

async fn echo_messages(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if socket.send(message).await.is_err() {
            return;
        }
    }
}
