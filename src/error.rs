//! Every failure the reconciler can meet, with the status reason, Event reason and metric label
//! it maps to. No variant carries secret material: messages name Secrets and keys, never values.

use std::time::Duration;

/// Whether retrying without a change of inputs can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Network trouble, 5xx, throttling: retry with exponential backoff.
    Transient,
    /// Bad input or rejected credentials: retry slowly; a change of inputs retries at once.
    Permanent,
    /// Only a person can help, by changing the inputs (a dead refresh-token chain: IMS refuses
    /// every further refresh). Retried rarely, in case IMS erred; and Ready turns False at once
    /// rather than when the token in place expires, so alerts fire while there is time to act.
    AfterInputChange,
}

#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum Error {
    #[error("source Secret {name:?} not found in the resource's namespace")]
    SourceSecretNotFound { name: String },

    #[error("source Secret {secret:?} has no key {key:?}")]
    SourceKeyMissing { secret: String, key: String },

    #[error("source Secret {secret:?} key {key:?} is empty or not valid UTF-8")]
    SourceValueInvalid { secret: String, key: String },

    #[error(
        "check does not mint for {flow}: the token request would spend the refresh token in the Secret (the server rotates it on use), which the operator needs"
    )]
    CheckWouldSpendInputs { flow: &'static str },

    #[error("the spec sets no flow block")]
    NoFlow,

    #[error("private key {location} cannot be used: {detail}")]
    InvalidPrivateKey { location: String, detail: String },

    #[error("token endpoint rejected the JWT signature; the private key does not match a certificate of the credential: {description}{debug}", debug = debug_suffix(.debug_id))]
    InvalidSignature { description: String, debug_id: Option<String> },

    #[error("token endpoint rejected the JWT: {description}{debug}", debug = debug_suffix(.debug_id))]
    InvalidJwt { description: String, debug_id: Option<String> },

    #[error("token endpoint rejected the username or password: {description}{debug}", debug = debug_suffix(.debug_id))]
    InvalidUserCredentials { description: String, debug_id: Option<String> },

    #[error("token endpoint rejected the refresh token: {description}{debug}", debug = debug_suffix(.debug_id))]
    RefreshTokenRejected { description: String, debug_id: Option<String> },

    /// The user's refresh token chain is dead (expired, revoked consent, already used): only the
    /// user can start a new one.
    #[error("the refresh token was refused ({description}){debug}: sign in as the user again with `{login}`, which puts a new refresh token into the Secret {secret}, key {key}", debug = debug_suffix(.debug_id))]
    ReauthorizationRequired {
        description: String,
        debug_id: Option<String>,
        secret: String,
        key: String,
        login: String,
    },

    #[error("token endpoint {url:?} is not valid: {reason}")]
    InvalidTokenEndpoint { url: String, reason: String },

    #[error("token host {host:?} is not on the operator's allowlist (--allowed-token-hosts)")]
    TokenHostNotAllowed { host: String },

    #[error("token endpoint rejected the client credentials: {description}{debug}", debug = debug_suffix(.debug_id))]
    InvalidClient { description: String, debug_id: Option<String> },

    #[error("token endpoint rejected the requested scopes: {description}{debug}", debug = debug_suffix(.debug_id))]
    InvalidScope { description: String, debug_id: Option<String> },

    #[error("token endpoint refused the request ({code}): {description}{debug}", debug = debug_suffix(.debug_id))]
    TokenRequestRejected { code: String, description: String, debug_id: Option<String> },

    #[error("token endpoint throttled the request (HTTP {status}){after}{debug}", after = retry_after_suffix(.retry_after), debug = debug_suffix(.debug_id))]
    Throttled { status: u16, retry_after: Option<Duration>, debug_id: Option<String> },

    #[error("token endpoint unavailable: {detail}{debug}", debug = debug_suffix(.debug_id))]
    TokenEndpointUnavailable { detail: String, retry_after: Option<Duration>, debug_id: Option<String> },

    #[error("token endpoint answered with an unusable response: {detail}{debug}", debug = debug_suffix(.debug_id))]
    MalformedTokenResponse { detail: String, debug_id: Option<String> },

    #[error(
        "target Secret {name:?} exists and is not managed by this AdobeCredential; set target.creationPolicy: Merge to add the token keys to it, or choose another target name"
    )]
    TargetConflict { name: String },

    #[strum(serialize = "TargetConflict")]
    #[error(
        "target Secret {name:?} key {key:?} belongs to {manager:?}; the operator does not take over keys others wrote: use target.keyPrefix or another key name"
    )]
    TargetKeyConflict { name: String, key: String, manager: String },

    #[strum(serialize = "TargetConflict")]
    #[error(
        "target Secret {name:?} is the copy of ClusterAdobeCredential {cluster_credential:?} in this namespace; no AdobeCredential writes into it, whatever its creationPolicy: use the copy as it is, or choose another target name"
    )]
    TargetIsClusterCopy { name: String, cluster_credential: String },

    #[strum(serialize = "TargetConflict")]
    #[error("target Secret {name:?} has type {type_:?}; the operator merges its keys only into Opaque Secrets")]
    TargetNotOpaque { name: String, type_: String },

    #[error(
        "Secret {name:?} (the refresh-token state of this credential) exists and was not created by the operator; delete or rename it"
    )]
    RefreshStateConflict { name: String },

    #[error(
        "AdobeCredential {name:?} in namespace {namespace:?} exists and was not created for this ClusterAdobeCredential; delete or rename it"
    )]
    MinterConflict { namespace: String, name: String },

    #[error(
        "Secret {name:?} in namespace {namespace:?} exists and was not written by this ClusterAdobeCredential; the namespace keeps it and gets no token"
    )]
    NamespaceConflict { namespace: String, name: String },

    #[error("target template key {key:?} cannot be rendered: {detail}")]
    InvalidTemplate { key: String, detail: String },

    #[error("{}", mint_refusal(.retry_at, .spent))]
    MintRateLimited { retry_at: jiff::Timestamp, spent: Option<MintBudget>, wait: Duration },

    #[error("the operator is still listing namespaces and copies; it acts once it has seen them all")]
    CachesNotSynced,

    #[error(
        "the operator has no complete list of {watch} ({detail}); no copy is written or removed until it has one, next try in {retry_in}s"
    )]
    WatchNotListed { watch: &'static str, detail: String, retry_in: u64 },

    #[error(
        "this replica could not confirm its leader Lease within the renew deadline; it neither mints nor writes until it leads again"
    )]
    LeadershipLost,

    #[error(
        "client secret rotation is not enabled in this operator: run it with --client-secret-rotation (chart: clientSecretRotation.enabled=true), which also grants it the right to update source Secrets"
    )]
    ClientSecretRotationDisabled,

    #[error("clientSecretRotation.{field} {reason}")]
    InvalidRotationSpec { field: &'static str, reason: String },

    #[error(
        "the I/O Management API refused access (HTTP 403: {description}); add the I/O Management API to the credential's project in the Adobe Developer Console"
    )]
    ManagementApiNotInProject { description: String },

    #[error(
        "the I/O Management API knows no credential {credential_id} in organization {org_id} (HTTP 404): check clientSecretRotation.orgId and credentialId, the numbers in the Developer Console URL …/console/projects/<orgId>/<projectId>/credentials/<credentialId>/details"
    )]
    ManagementCredentialNotFound { org_id: String, credential_id: String },

    #[error(
        "credential {credential_id} in organization {org_id} belongs to client ID {listed_client_id}, not to this credential's client ID {client_id}: clientSecretRotation.credentialId names another credential, so nothing was added or deleted; copy the number from this credential's Developer Console URL"
    )]
    CredentialMismatch { org_id: String, credential_id: String, client_id: String, listed_client_id: String },

    #[error("the I/O Management API rejected the access token (HTTP 401: {description})")]
    ManagementUnauthorized { description: String },

    #[error("the I/O Management API throttled the request (HTTP {status}){after}", after = retry_after_suffix(.retry_after))]
    ManagementApiThrottled { status: u16, retry_after: Option<Duration> },

    #[error("the I/O Management API is unavailable: {detail}")]
    ManagementApiUnavailable { detail: String, retry_after: Option<Duration> },

    #[error("the I/O Management API refused the request (HTTP {status}: {description})")]
    ManagementRequestRejected { status: u16, description: String },

    #[error("the I/O Management API answered with an unusable response: {detail}")]
    MalformedManagementResponse { detail: String },

    #[error(
        "the credential already has two client secrets ({detail}); Adobe allows two at a time, so no new one can be added: delete the unused one in the Developer Console, or set clientSecretRotation.deleteOtherSecret: true"
    )]
    TwoClientSecretsExist { detail: String },

    #[error(
        "IMS did not accept the new client secret {uuid} within {timeout_secs}s ({last_error}); the new secret is deleted and the current one stays in use"
    )]
    NewSecretVerificationFailed { uuid: String, timeout_secs: u64, last_error: String },

    #[error(
        "the operator may not update Secret {name:?}, into which a rotation writes the new client secret: grant it update on Secrets (chart: clientSecretRotation.enabled=true); nothing was changed at Adobe"
    )]
    SourceSecretNotWritable { name: String },

    #[error(
        "source Secret {name:?} is immutable, so a rotation could not write the new client secret into it; recreate it without immutable: true"
    )]
    SourceSecretImmutable { name: String },

    #[error(
        "the new client secret {uuid} is no longer listed by the I/O Management API (deleted in the Developer Console?); the previous client secret is not deleted"
    )]
    NewSecretMissing { uuid: String },

    #[error(
        "source Secret {name:?} no longer holds the new client secret under key {key:?} (did something rewrite it, such as GitOps or External Secrets?); the previous client secret is not deleted"
    )]
    SourceSecretReverted { name: String, key: String },

    #[error(
        "Secret {name:?} (the client secret rotation state of this credential) exists and was not created by the operator; delete or rename it"
    )]
    RotationStateConflict { name: String },

    #[error(
        "Secret {name:?} (the client secret rotation state) is unusable: {detail}; the rotation holds: fix or delete that Secret (deleting it forgets a rotation in progress)"
    )]
    RotationStateInvalid { name: String, detail: String },

    #[strum(serialize = "KubernetesApiError")]
    #[error("Kubernetes API error while {action}: {}", kube_summary(.source))]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

fn mint_refusal(retry_at: &jiff::Timestamp, spent: &Option<MintBudget>) -> String {
    let at = crate::time_format::rfc3339(*retry_at);
    match spent {
        Some(budget) => format!(
            "more than {} tokens were minted for this credential within {} minutes; the next mint waits until {at} (check what keeps changing the source Secret or the spec)",
            budget.mints,
            budget.window.as_secs() / 60
        ),
        None => format!("a token for the same inputs was minted moments ago; the next mint waits until {at}"),
    }
}

/// A per-credential mint budget: at most `mints` token requests within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MintBudget {
    pub mints: usize,
    pub window: Duration,
}

/// One human line for a Kubernetes API error: the server's own message and code, never the
/// debug dump of the whole response.
pub fn kube_summary(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            let reason = if status.reason.is_empty() { String::new() } else { format!(" {}", status.reason) };
            one_line(&format!("{} (HTTP {}{reason})", status.message, status.code), MAX_MESSAGE)
        }
        other => one_line(&other.to_string(), MAX_MESSAGE),
    }
}

/// Longest text a status message, Event note or log field takes from an error.
pub const MAX_MESSAGE: usize = 512;

/// `text` on one line (control characters folded into spaces), cut at `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut last_space = false;
    for (count, c) in text.chars().enumerate() {
        if count >= max {
            out.push('…');
            break;
        }
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
    }
    out.trim_end().to_owned()
}

fn debug_suffix(debug_id: &Option<String>) -> String {
    debug_id.as_ref().map(|id| format!(" (x-debug-id {id})")).unwrap_or_default()
}

fn retry_after_suffix(retry_after: &Option<Duration>) -> String {
    retry_after.map(|d| format!(", Retry-After {}s", d.as_secs())).unwrap_or_default()
}

impl Error {
    pub fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { action, source }
    }

    /// PascalCase reason used in the Ready condition, in Events and as a metric label: the
    /// variant's name unless it says otherwise.
    pub fn reason(&self) -> &'static str {
        self.into()
    }

    pub fn retry(&self) -> Retry {
        match self {
            Error::Throttled { .. }
            | Error::TokenEndpointUnavailable { .. }
            | Error::MalformedTokenResponse { .. }
            | Error::MintRateLimited { .. }
            | Error::LeadershipLost
            | Error::CachesNotSynced
            | Error::WatchNotListed { .. }
            | Error::ManagementApiThrottled { .. }
            | Error::ManagementApiUnavailable { .. }
            | Error::MalformedManagementResponse { .. }
            | Error::Kube { .. } => Retry::Transient,
            Error::ReauthorizationRequired { .. } => Retry::AfterInputChange,
            _ => Retry::Permanent,
        }
    }

    /// The least time the server asked us to wait before the next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Throttled { retry_after, .. }
            | Error::TokenEndpointUnavailable { retry_after, .. }
            | Error::ManagementApiThrottled { retry_after, .. }
            | Error::ManagementApiUnavailable { retry_after, .. } => *retry_after,
            Error::MintRateLimited { wait, .. } => Some(*wait),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_debug_id_and_retry_after() {
        let err =
            Error::Throttled { status: 429, retry_after: Some(Duration::from_secs(7)), debug_id: Some("abc".into()) };
        assert_eq!(err.to_string(), "token endpoint throttled the request (HTTP 429), Retry-After 7s (x-debug-id abc)");
        assert_eq!(err.reason(), "Throttled");
        assert_eq!(err.retry(), Retry::Transient);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn kube_errors_are_one_human_line() {
        let status = kube::core::Status::failure("Request entity too large: limit is 3145728", "RequestEntityTooLarge")
            .with_code(413);
        let err = Error::Kube { action: "writing the target Secret", source: kube::Error::Api(Box::new(status)) };
        assert_eq!(
            err.to_string(),
            "Kubernetes API error while writing the target Secret: Request entity too large: limit is 3145728 (HTTP 413 RequestEntityTooLarge)"
        );
        assert_eq!(one_line("a\n\r\nb\tc", 100), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }

    #[test]
    fn reasons_are_variant_names_except_where_grouped() {
        let kube = Error::kube("reading")(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(kube.reason(), "KubernetesApiError");
        let key = Error::TargetKeyConflict { name: "t".into(), key: "k".into(), manager: "m".into() };
        assert_eq!(key.reason(), "TargetConflict");
        assert_eq!(Error::TargetNotOpaque { name: "t".into(), type_: "x".into() }.reason(), "TargetConflict");
        assert_eq!(Error::SourceSecretNotFound { name: "s".into() }.reason(), "SourceSecretNotFound");
    }

    #[test]
    fn rejected_credentials_are_permanent() {
        let err = Error::InvalidClient { description: "invalid client_secret parameter".into(), debug_id: None };
        assert_eq!(err.retry(), Retry::Permanent);
        assert_eq!(err.to_string(), "token endpoint rejected the client credentials: invalid client_secret parameter");
    }
}
