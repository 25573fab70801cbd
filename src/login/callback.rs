//! The local HTTPS endpoint the browser is sent to after the sign-in. Its certificate is made for
//! this one sign-in (the browser warns once; the fingerprint shown lets the user compare), every
//! connection gets one request in bounded time, and the first redirect of this sign-in ends the
//! wait. Requests of other sign-ins, or for other paths, are answered and ignored.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure};
use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::Url;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{Refusal, authorization_response};
use crate::secret_value::SecretValue;

/// Time a connection gets for its TLS handshake and its one request.
const CONNECTION_TIME: Duration = Duration::from_secs(30);
/// Connections served at once per listener; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 32;

type Outcome = Result<SecretValue, Refusal>;

pub struct Callback {
    listeners: Vec<TcpListener>,
    tls: TlsAcceptor,
    path: String,
    /// SHA-256 of the certificate as browsers show it (upper-case hex, colon-separated).
    pub fingerprint: String,
}

impl Callback {
    /// Listens where the redirect URI points, with a new self-signed certificate for its host.
    pub async fn bind(redirect_uri: &Url) -> anyhow::Result<Self> {
        let (host, addresses) = local_addresses(redirect_uri)?;
        let mut listeners = Vec::new();
        for (index, address) in addresses.into_iter().enumerate() {
            match TcpListener::bind(address).await {
                Ok(listener) => listeners.push(listener),
                // `localhost` is also [::1]: a machine without it sends no browser there either.
                Err(err) if index > 0 && not_on_this_machine(&err) => {}
                // Any other error (taken by another program or user, forbidden) is on an address
                // the machine has: a browser may open `localhost` there and hand the code to
                // whoever listens, while this command would wait on the other address only.
                Err(err) if index > 0 => bail!(
                    "cannot receive the redirect on {address} ({err}), where browsers may open {host}: free the port there, or use --paste"
                ),
                Err(err) => bail!("cannot receive the redirect on {address} ({err}): free the port, or use --paste"),
            }
        }
        let certified = rcgen::generate_simple_self_signed(vec![host])?;
        let der = certified.cert.der().clone();
        let fingerprint = Sha256::digest(&der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![der], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = TlsAcceptor::from(Arc::new(config));
        Ok(Self { listeners, tls, path: redirect_uri.path().to_owned(), fingerprint })
    }

    /// The code of this sign-in's redirect; IMS's refusal ends the wait with its error.
    pub async fn code(self, state: &str) -> anyhow::Result<SecretValue> {
        let (outcomes, mut received) = mpsc::channel(1);
        let endpoint = Arc::new(Endpoint { tls: self.tls, path: self.path, state: state.to_owned(), outcomes });
        // Dropped on return: that aborts the listeners and their connections.
        let mut listeners = JoinSet::new();
        for listener in self.listeners {
            listeners.spawn(accept(listener, endpoint.clone()));
        }
        let outcome = received.recv().await.ok_or_else(|| anyhow!("the local endpoint stopped"))?;
        Ok(outcome?)
    }
}

/// Where the redirect URI points on this machine, and the host name its certificate is for.
fn local_addresses(uri: &Url) -> anyhow::Result<(String, Vec<SocketAddr>)> {
    let host = uri.host_str().unwrap_or_default();
    let port = uri.port_or_known_default().unwrap_or(443);
    let elsewhere =
        || anyhow!("the redirect URI's host {host:?} is not this machine: use --paste, or a redirect URI on localhost");
    if host.eq_ignore_ascii_case("localhost") {
        let addresses = vec![(Ipv4Addr::LOCALHOST, port).into(), (Ipv6Addr::LOCALHOST, port).into()];
        return Ok(("localhost".to_owned(), addresses));
    }
    let ip: IpAddr = host.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| elsewhere())?;
    ensure!(ip.is_loopback(), elsewhere());
    Ok((ip.to_string(), vec![(ip, port).into()]))
}

/// Whether binding failed because the machine has no such address at all (IPv6 disabled on
/// loopback, or no IPv6): only then is listening on fewer addresses than the URI names safe.
fn not_on_this_machine(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::AddrNotAvailable || error.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

struct Endpoint {
    tls: TlsAcceptor,
    path: String,
    state: String,
    outcomes: mpsc::Sender<Outcome>,
}

async fn accept(listener: TcpListener, endpoint: Arc<Endpoint>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if connections.len() < MAX_CONNECTIONS => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(tokio::time::timeout(CONNECTION_TIME, serve(stream, endpoint.clone())));
                }
                // Out of file descriptors, typically: let connections close.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One request per connection; its outcome is delivered after the answer went out, so the
/// browser sees the page before the command moves on.
async fn serve(stream: TcpStream, endpoint: Arc<Endpoint>) {
    // A browser that refuses the certificate ends here; the user may accept it and retry.
    let Ok(tls) = endpoint.tls.accept(stream).await else { return };
    let slot: Arc<Mutex<Option<Outcome>>> = Arc::default();
    let service = service_fn(|request: Request<Incoming>| {
        let response = endpoint.answer(&request, &slot);
        async move { Ok::<_, Infallible>(response) }
    });
    // A failed connection delivers nothing; the user can reload the page.
    let _ = http1::Builder::new().keep_alive(false).serve_connection(TokioIo::new(tls), service).await;
    let outcome = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(outcome) = outcome {
        // Only the first outcome is awaited; later ones have nobody to go to.
        let _ = endpoint.outcomes.send(outcome).await;
    }
}

impl Endpoint {
    fn answer(&self, request: &Request<Incoming>, slot: &Mutex<Option<Outcome>>) -> Response<Body> {
        if request.method() != Method::GET || request.uri().path() != self.path {
            return page(StatusCode::NOT_FOUND, "Nothing here: this address only receives the sign-in redirect.");
        }
        let outcome = authorization_response(request.uri().query().unwrap_or_default(), &self.state);
        let response = match &outcome {
            Ok(_) => page(StatusCode::OK, "Signed in. You can close this window: the terminal shows what was written."),
            Err(refusal) => page(StatusCode::BAD_REQUEST, &format!("Sign-in failed: {refusal}")),
        };
        if outcome != Err(Refusal::OtherSignIn) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
        }
        response
    }
}

fn page(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_of_this_machine_are_listened_on() {
        let url = |s: &str| Url::parse(s).expect("url");
        let (host, addresses) = local_addresses(&url("https://localhost:8443/callback")).expect("localhost");
        assert_eq!(host, "localhost");
        assert_eq!(addresses, ["127.0.0.1:8443".parse().expect("v4"), "[::1]:8443".parse().expect("v6")]);
        let (host, addresses) = local_addresses(&url("https://127.0.0.1/cb")).expect("loopback");
        assert_eq!((host.as_str(), addresses), ("127.0.0.1", vec!["127.0.0.1:443".parse().expect("addr")]));
        assert_eq!(local_addresses(&url("https://[::1]:9000/cb")).expect("v6").1, ["[::1]:9000".parse().expect("v6")]);
        for elsewhere in ["https://app.example.com/callback", "https://10.0.0.5/callback"] {
            let error = local_addresses(&url(elsewhere)).expect_err(elsewhere).to_string();
            assert!(error.contains("--paste"), "{error}");
        }
    }

    #[test]
    fn only_an_address_the_machine_lacks_may_be_left_out() {
        let absent =
            [io::Error::from(io::ErrorKind::AddrNotAvailable), io::Error::from_raw_os_error(libc::EAFNOSUPPORT)];
        assert!(absent.iter().all(not_on_this_machine));
        let present = [io::ErrorKind::AddrInUse, io::ErrorKind::PermissionDenied].map(io::Error::from);
        assert!(!present.iter().any(not_on_this_machine), "someone else may listen there");
    }

    #[tokio::test]
    async fn the_redirect_of_this_sign_in_ends_the_wait_and_others_do_not() {
        let callback = Callback::bind(&Url::parse("https://127.0.0.1:0/cb").expect("url")).await.expect("bind");
        let port = callback.listeners[0].local_addr().expect("addr").port();
        let wait = tokio::spawn(callback.code("st-1"));
        let browser = reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("browser");
        let get = |query: &'static str| {
            let browser = browser.clone();
            async move {
                let url = format!("https://127.0.0.1:{port}{query}");
                browser.get(url).send().await.expect("callback answers").status()
            }
        };
        assert_eq!(get("/favicon.ico").await, StatusCode::NOT_FOUND);
        assert_eq!(get("/cb?code=forged&state=st-0").await, StatusCode::BAD_REQUEST);
        assert_eq!(get("/cb?code=c-1&state=st-1").await, StatusCode::OK);
        let code = wait.await.expect("joined").expect("code");
        assert_eq!(code.expose(), "c-1", "the forged redirect did not end the wait");
    }
}
