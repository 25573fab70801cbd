//! The error type of the control API.

use std::{io, net::SocketAddr, time::Duration};

/// What can go wrong while starting the server or changing its state.
///
/// Messages never contain a secret: they name clients, never their credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: io::Error,
    },
    /// The certificate chain or private key given for HTTPS is unusable.
    #[error("invalid TLS certificate or key: {0}")]
    Tls(String),
    /// No client with this id is registered.
    #[error("no client {0:?} is registered")]
    UnknownClient(String),
    /// Adobe allows at most two client secrets per credential at once.
    #[error("client {0:?} already has two secrets; remove one before adding another")]
    TooManySecrets(String),
    /// The secret to remove is not one of the client's secrets.
    #[error("client {0:?} has no such secret")]
    UnknownSecret(String),
    /// The client was registered without a Developer Console credential
    /// ([`AdobeClient::with_management`](crate::AdobeClient::with_management)).
    #[error("client {0:?} is not reachable through the I/O Management API")]
    NotManaged(String),
    /// The client was registered without a service account (JWT) binding.
    #[error("client {0:?} has no service account (JWT) binding")]
    NotServiceAccount(String),
    /// The PEM is not an RSA public key or certificate.
    #[error("invalid RSA public key: {0}")]
    InvalidPublicKey(String),
    /// A `wait_for_*` call reached its deadline.
    #[error("timed out after {timeout:?} waiting for {wanted} {what} for client {client_id:?}; saw {seen}")]
    Timeout {
        /// What was counted, e.g. "minted tokens".
        what: &'static str,
        /// The client the count was about.
        client_id: String,
        /// The count that was waited for.
        wanted: usize,
        /// The count when the deadline passed.
        seen: usize,
        /// How long the call waited.
        timeout: Duration,
    },
}
