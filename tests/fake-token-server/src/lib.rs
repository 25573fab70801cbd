//! Protocol-exact stand-ins for the Adobe IMS and Akeneo PIM token endpoints, for tests that
//! cannot reach the real services.
//!
//! The server follows `shared/protocols.md`: the same paths, bodies, units and error shapes, and
//! it verifies what the real servers verify (client secrets, RS256 JWT signatures and claims,
//! grant types, Basic client authentication). A test controls it through [`FakeTokenServer`]:
//!
//! - **Serving:** [`FakeTokenServer::start`] (HTTP) or [`FakeTokenServer::start_tls`] (HTTPS)
//!   on an ephemeral loopback port, [`FakeTokenServer::url`] for the base URL. Dropping the
//!   handle stops the server.
//! - **Endpoints:** `POST /ims/token/v2|v3|v4` (client credentials, `expires_in` in seconds),
//!   `POST /ims/exchange/jwt` and `/ims/exchange/v1/jwt`, each also with a trailing `/` (JWT
//!   exchange, `expires_in` in milliseconds; an unknown client gets 401, a wrong secret 400,
//!   both `invalid_client`), `POST /api/oauth/v1/token` (Akeneo password and refresh_token
//!   grants). Adobe responses carry an `x-debug-id` header.
//! - **User authentication (OAuth Web App):** `GET /ims/authorize/v1|v2` consents at once for
//!   the signed-in user and redirects to the client's registered HTTPS redirect URI with `code`
//!   and `state` (PKCE S256 required); `POST /ims/token/v1|v2|v3` with
//!   `grant_type=authorization_code` (single-use code, `code_verifier` of 43–128 characters,
//!   `client_secret_post` or Basic) or `grant_type=refresh_token`. Refresh tokens are issued
//!   only with `offline_access`, rotate (the presented one dies on use), live 14 days from issue
//!   unless [`AdobeClient::with_refresh_token_lifetime`] says otherwise, and die when
//!   [`FakeTokenServer::revoke_user_consent`] is called; every failure is `invalid_grant`.
//! - **Credentials:** [`AdobeClient`] (up to two secrets, allowed scopes, token lifetime,
//!   optionally a [`ServiceAccount`] with its RSA public key and metascopes), Akeneo clients and
//!   users, secret and key rotation, Akeneo refresh token revocation.
//! - **I/O Management API:** `GET`/`POST /console/organizations/{org}/credentials/{credential}/
//!   secrets` and `DELETE …/secrets/{uuid}` for clients registered
//!   [`with_management`](AdobeClient::with_management), tied to the fake IMS: a secret added
//!   there is accepted by IMS (after an optional activation delay), a deleted one is refused,
//!   each successful token request updates its `last_used_at`, at most two secrets; 401/403/404
//!   like Adobe's gateway (see the `adobe::management` module).
//! - **Faults:** [`Fault`] makes matching requests fail (status and body, `Retry-After`, delay,
//!   hang, malformed JSON, missing fields, dropped connection) or holds them (hang, or hang after
//!   doing what they asked), globally or per client, endpoint or requested scope, until cleared
//!   or for the next N requests.
//! - **Observation:** a request log ([`RequestRecord`]), mint counts, the issued access tokens,
//!   and `wait_for_*` helpers with deadlines. Neither the log, nor `Debug` output, nor the
//!   tracing events (targets under `fake_token_server`) contain secrets, passwords, JWTs or
//!   tokens.
//!
//! ```no_run
//! use std::time::Duration;
//! use fake_token_server::{AdobeClient, FakeTokenServer, Fault, RetryAfter};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let ims = FakeTokenServer::start().await?;
//! ims.register_adobe_client(
//!     AdobeClient::new("my-client", "secret-1")
//!         .with_scopes(["openid", "AdobeID", "firefly_api"])
//!         .with_token_lifetime(Duration::from_secs(3)),
//! )?;
//! // Throttle the first attempt, then let the client through.
//! ims.inject_fault(Fault::too_many_requests(RetryAfter::Seconds(1)).times(1));
//!
//! // ... point the code under test at `ims.url()` + "/ims/token/v3" ...
//!
//! ims.wait_for_mints("my-client", 1, Duration::from_secs(30)).await?;
//! let token = ims.issued_tokens("my-client").pop();
//! # let _ = token;
//! # Ok(())
//! # }
//! ```

mod adobe;
mod akeneo;
mod controls;
mod error;
mod expiry;
mod faults;
mod log;
mod pipeline;
mod server;
mod state;
pub mod test_keys;
mod tls;

pub use adobe::{AdobeClient, ClientSecretInfo, ServiceAccount};
/// The status type of faults and the request log; the same type as `reqwest::StatusCode`.
pub use axum::http::StatusCode;
pub use error::Error;
pub use faults::{Fault, FaultId, FaultKind, RetryAfter};
pub use log::{EndpointKind, Outcome, RequestRecord};
pub use server::FakeTokenServer;
