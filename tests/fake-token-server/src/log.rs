//! The request log that tests query.
//!
//! Entries describe requests without their credentials: they hold client ids, grant types and
//! scopes, never client secrets, passwords, JWTs or tokens.

use std::time::SystemTime;

use axum::http::StatusCode;

use crate::faults::FaultKind;

/// Which token endpoint a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    /// Adobe IMS OAuth Server-to-Server: `POST /ims/token/v2|v3|v4`.
    ClientCredentials,
    /// Adobe IMS service account JWT exchange: `POST /ims/exchange/jwt` and its aliases.
    JwtExchange,
    /// Adobe IMS user authentication: `POST /ims/token/v1|v2|v3` with
    /// `grant_type=authorization_code` (the code exchange after `/ims/authorize/v2`).
    AuthorizationCode,
    /// Adobe IMS user authentication: `POST /ims/token/v1|v2|v3` with `grant_type=refresh_token`.
    UserRefresh,
    /// Akeneo `POST /api/oauth/v1/token` with any grant other than `refresh_token` (including a
    /// missing or unsupported one, which Akeneo rejects).
    AkeneoPassword,
    /// Akeneo `POST /api/oauth/v1/token` with `grant_type=refresh_token`.
    AkeneoRefresh,
    /// I/O Management API: `GET /console/organizations/{org}/credentials/{credential}/secrets`.
    ManagementList,
    /// I/O Management API: `POST /console/organizations/{org}/credentials/{credential}/secrets`.
    ManagementAdd,
    /// I/O Management API: `DELETE …/secrets/{uuid}`.
    ManagementDelete,
}

impl EndpointKind {
    /// Adobe's endpoints share conventions (RFC 6749 error bodies, an `x-debug-id` header).
    pub(crate) fn is_adobe(self) -> bool {
        matches!(self, Self::ClientCredentials | Self::JwtExchange | Self::AuthorizationCode | Self::UserRefresh)
    }
}

/// How the server answered a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An access token was issued (even if a [`FaultKind::MissingFields`] fault then mangled the
    /// response body).
    Issued,
    /// The request was refused with this error code: the RFC 6749 `error` value for Adobe
    /// (`invalid_client`, `invalid_scope`, …); for Akeneo, whose bodies carry only a message, the
    /// equivalent code (`invalid_client`, `invalid_grant`, `invalid_request`,
    /// `unsupported_grant_type`, `invalid_json`, `unsupported_media_type`).
    Rejected(String),
    /// An injected fault answered instead of the endpoint (or kept it from answering at all).
    Faulted,
    /// An endpoint that issues no token answered successfully (the I/O Management API).
    Served,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// The endpoint family.
    pub endpoint: EndpointKind,
    /// The request path, e.g. `/ims/token/v3`.
    pub path: String,
    /// The client id the request claimed (form field for Adobe, Basic auth user for Akeneo,
    /// `x-api-key` header for the I/O Management API).
    pub client_id: Option<String>,
    /// The `grant_type` parameter as sent.
    pub grant_type: Option<String>,
    /// For client credentials the `scope` parameter as sent; for a successful JWT exchange the
    /// comma-separated metascopes of the JWT.
    pub scope: Option<String>,
    /// The status sent, or `None` when no response was sent (hang, dropped connection).
    pub status: Option<StatusCode>,
    /// What the request achieved.
    pub outcome: Outcome,
    /// The injected fault that applied to this request, if any.
    pub fault: Option<FaultKind>,
    /// The `x-debug-id` header sent (Adobe endpoints only).
    pub debug_id: Option<String>,
    /// When the request arrived.
    pub received_at: SystemTime,
    /// The client secret involved, by uuid (never its value): the one an Adobe token request
    /// presented, if the client has it (active or not), or the one the I/O Management API
    /// created or deleted.
    pub secret_uuid: Option<String>,
}
