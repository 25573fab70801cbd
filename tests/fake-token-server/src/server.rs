//! Listening, serving connections, and the handle that owns the running server.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    http::Request,
    routing::{delete, get, post},
};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::{Error, adobe, akeneo, pipeline::DropConnection, state::ServerState, tls};

/// A running fake token server. It serves on the tokio runtime that started it and stops when
/// dropped (or on [`shutdown`](Self::shutdown)); the methods that control its state are
/// documented in the crate root.
#[derive(Debug)]
pub struct FakeTokenServer {
    pub(crate) state: Arc<ServerState>,
    url: String,
    local_addr: SocketAddr,
    task: AbortOnDrop,
}

/// The accept loop. Aborting it drops its [`JoinSet`], which aborts every connection, including
/// requests hanging on purpose.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl FakeTokenServer {
    /// Serves plain HTTP on an ephemeral port of 127.0.0.1.
    pub async fn start() -> Result<Self, Error> {
        Self::start_on(loopback()).await
    }

    /// Serves plain HTTP on `addr` (port 0 picks a free port).
    pub async fn start_on(addr: SocketAddr) -> Result<Self, Error> {
        Self::bind(addr, None).await
    }

    /// Serves HTTPS on an ephemeral port of 127.0.0.1 with this certificate chain (PEM, leaf
    /// first) and private key (PEM). The certificate should name `127.0.0.1` (and `localhost`)
    /// for clients to accept it.
    pub async fn start_tls(cert_chain_pem: &str, key_pem: &str) -> Result<Self, Error> {
        Self::start_tls_on(loopback(), cert_chain_pem, key_pem).await
    }

    /// Serves HTTPS on `addr`.
    pub async fn start_tls_on(addr: SocketAddr, cert_chain_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let acceptor = tls::acceptor(cert_chain_pem, key_pem)?;
        Self::bind(addr, Some(acceptor)).await
    }

    async fn bind(addr: SocketAddr, tls: Option<TlsAcceptor>) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
        let mut local_addr = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
        // A wildcard address is no place to send requests to; loopback reaches the same socket.
        if local_addr.ip().is_unspecified() {
            local_addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{local_addr}");
        let state = Arc::new(ServerState::new(url.clone()));
        let task = tokio::spawn(accept_loop(listener, tls, router(Arc::clone(&state))));
        Ok(Self { state, url, local_addr, task: AbortOnDrop(task) })
    }

    /// The base URL, without a trailing slash, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, aborts open connections and waits until the socket is closed.
    pub async fn shutdown(mut self) {
        let accept_loop = &mut self.task.0;
        accept_loop.abort();
        // The only possible error is the cancellation just requested.
        let _ = accept_loop.await;
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn router(state: Arc<ServerState>) -> Router {
    let client_credentials = post(adobe::client_credentials::token);
    let jwt_exchange = post(adobe::jwt_exchange::token);
    Router::new()
        .route("/ims/authorize/v1", get(adobe::user_auth::authorize))
        .route("/ims/authorize/v2", get(adobe::user_auth::authorize))
        .route("/ims/token/v1", client_credentials.clone())
        .route("/ims/token/v2", client_credentials.clone())
        .route("/ims/token/v3", client_credentials.clone())
        .route("/ims/token/v4", client_credentials)
        .route("/ims/exchange/jwt", jwt_exchange.clone())
        .route("/ims/exchange/jwt/", jwt_exchange.clone())
        .route("/ims/exchange/v1/jwt", jwt_exchange.clone())
        .route("/ims/exchange/v1/jwt/", jwt_exchange)
        .route("/api/oauth/v1/token", post(akeneo::token))
        .route(
            "/console/organizations/{org_id}/credentials/{credential_id}/secrets",
            get(adobe::management::list).post(adobe::management::add),
        )
        .route(
            "/console/organizations/{org_id}/credentials/{credential_id}/secrets/{uuid}",
            delete(adobe::management::delete),
        )
        .with_state(state)
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, router: Router) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, tls.clone(), router.clone()));
                }
                Err(err) => {
                    // Typically out of file descriptors; give connections time to close.
                    tracing::warn!(%err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, tls: Option<TlsAcceptor>, router: Router) {
    match tls {
        None => serve_http(stream, router).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => serve_http(stream, router).await,
            Err(err) => tracing::debug!(%err, "TLS handshake failed"),
        },
    }
}

/// The error a request fails with to make hyper close the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct ConnectionDropped;

async fn serve_http<S>(stream: S, router: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        async move {
            // The router cannot fail: its error type is `Infallible`.
            let Ok(response) = router.oneshot(request).await;
            if response.extensions().get::<DropConnection>().is_some() {
                Err(ConnectionDropped)
            } else {
                Ok::<_, ConnectionDropped>(response)
            }
        }
    });
    if let Err(err) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
        tracing::debug!(%err, "connection ended with an error");
    }
}
