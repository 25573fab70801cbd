//! Fault injection: make the next requests (or all of them) fail the way real servers fail.

use std::time::{Duration, SystemTime};

use axum::http::StatusCode;

use crate::log::EndpointKind;

/// A `Retry-After` header value, in either of the two forms RFC 9110 allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: 120`
    Seconds(u64),
    /// `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`
    At(SystemTime),
}

impl RetryAfter {
    pub(crate) fn header_value(self) -> String {
        match self {
            Self::Seconds(seconds) => seconds.to_string(),
            Self::At(when) => httpdate::fmt_http_date(when),
        }
    }
}

/// What an injected fault does to a request it applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer with this status and JSON body instead of processing the request.
    Respond {
        /// The status to send.
        status: StatusCode,
        /// The body, sent as `application/json`.
        body: String,
        /// An optional `Retry-After` header.
        retry_after: Option<RetryAfter>,
    },
    /// Wait this long, then process the request normally.
    Delay(Duration),
    /// Never answer; the connection stays open until the client gives up.
    Hang,
    /// Answer 200 with a body that is not valid JSON, without processing the request.
    MalformedJson,
    /// Process the request normally, but remove these top-level fields from a successful
    /// response body (e.g. `expires_in`).
    MissingFields(Vec<String>),
    /// Close the connection without sending any response.
    DropConnection,
    /// Process the request normally (a token is issued, a secret created or deleted), then never
    /// answer: the client cannot know that it happened, as when it dies waiting for the answer.
    HangAfterProcessing,
}

/// Identifies an injected fault so that a test can clear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(u64);

/// A fault to inject, built from one of the constructors and narrowed with
/// [`for_client`](Self::for_client), [`for_endpoint`](Self::for_endpoint) and
/// [`times`](Self::times).
///
/// ```
/// use std::time::Duration;
/// use fake_token_server::{Fault, RetryAfter};
///
/// let throttled_twice = Fault::too_many_requests(RetryAfter::Seconds(1))
///     .for_client("my-client")
///     .times(2);
/// let slow = Fault::delay(Duration::from_millis(200));
/// # let _ = (throttled_twice, slow);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    kind: FaultKind,
    client_id: Option<String>,
    endpoint: Option<EndpointKind>,
    scope: Option<String>,
    remaining: Option<u32>,
}

impl Fault {
    /// A fault of any kind, applying to every request until cleared.
    pub fn new(kind: FaultKind) -> Self {
        Self { kind, client_id: None, endpoint: None, scope: None, remaining: None }
    }

    /// Answer with `status` and a JSON `body`.
    pub fn respond(status: StatusCode, body: impl Into<String>) -> Self {
        Self::new(FaultKind::Respond { status, body: body.into(), retry_after: None })
    }

    /// Adobe's answer when IMS is in trouble: 500 `internal_error` / `Please try again later`.
    pub fn internal_error() -> Self {
        Self::respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"internal_error","error_description":"Please try again later"}"#,
        )
    }

    /// 429 with a `Retry-After` header.
    pub fn too_many_requests(retry_after: RetryAfter) -> Self {
        Self::new(FaultKind::Respond {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: r#"{"error":"too_many_requests","error_description":"Too many requests"}"#.into(),
            retry_after: Some(retry_after),
        })
    }

    /// 503 with a `Retry-After` header.
    pub fn service_unavailable(retry_after: RetryAfter) -> Self {
        Self::new(FaultKind::Respond {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: r#"{"error":"service_unavailable","error_description":"Service temporarily unavailable"}"#.into(),
            retry_after: Some(retry_after),
        })
    }

    /// Wait `delay`, then answer normally.
    pub fn delay(delay: Duration) -> Self {
        Self::new(FaultKind::Delay(delay))
    }

    /// Never answer.
    pub fn hang() -> Self {
        Self::new(FaultKind::Hang)
    }

    /// Answer 200 with a truncated JSON body.
    pub fn malformed_json() -> Self {
        Self::new(FaultKind::MalformedJson)
    }

    /// Issue a token but leave `fields` out of the 200 body.
    pub fn missing_fields<I>(fields: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self::new(FaultKind::MissingFields(fields.into_iter().map(Into::into).collect()))
    }

    /// Close the connection without answering.
    pub fn drop_connection() -> Self {
        Self::new(FaultKind::DropConnection)
    }

    /// Do what the request asks, then never answer (a request hold for crash tests: the server
    /// has acted, the client never learns it).
    pub fn hang_after_processing() -> Self {
        Self::new(FaultKind::HangAfterProcessing)
    }

    /// Apply only to token requests whose comma-separated `scope` includes `scope` (e.g.
    /// `manage_client_secrets` for management tokens, `firefly_api` for a workload's tokens).
    pub fn for_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Apply only to requests that claim this client id.
    pub fn for_client(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Apply only to requests for this endpoint.
    pub fn for_endpoint(mut self, endpoint: EndpointKind) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// Apply to the next `count` matching requests only, then clear itself. `times(0)` never
    /// applies.
    pub fn times(mut self, count: u32) -> Self {
        self.remaining = Some(count);
        self
    }

    fn matches(&self, endpoint: EndpointKind, client_id: Option<&str>, scope: Option<&str>) -> bool {
        let scope_matches = self
            .scope
            .as_deref()
            .is_none_or(|wanted| scope.is_some_and(|requested| requested.split(',').any(|item| item.trim() == wanted)));
        self.remaining != Some(0)
            && self.endpoint.is_none_or(|wanted| wanted == endpoint)
            && self.client_id.as_deref().is_none_or(|wanted| Some(wanted) == client_id)
            && scope_matches
    }
}

/// The active faults, in the order they were injected.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    next_id: u64,
    active: Vec<(FaultId, Fault)>,
}

impl FaultQueue {
    pub(crate) fn insert(&mut self, fault: Fault) -> FaultId {
        let id = FaultId(self.next_id);
        self.next_id += 1;
        self.active.push((id, fault));
        id
    }

    pub(crate) fn remove(&mut self, id: FaultId) -> bool {
        let before = self.active.len();
        self.active.retain(|(active_id, _)| *active_id != id);
        self.active.len() != before
    }

    pub(crate) fn clear(&mut self) {
        self.active.clear();
    }

    /// The first fault (in injection order) that applies to this request; counts it against the
    /// fault's remaining uses and drops the fault once they are used up.
    pub(crate) fn take(
        &mut self,
        endpoint: EndpointKind,
        client_id: Option<&str>,
        scope: Option<&str>,
    ) -> Option<FaultKind> {
        let index = self.active.iter().position(|(_, fault)| fault.matches(endpoint, client_id, scope))?;
        let fault = &mut self.active[index].1;
        let kind = fault.kind.clone();
        if let Some(remaining) = fault.remaining.as_mut() {
            *remaining -= 1;
            if *remaining == 0 {
                self.active.remove(index);
            }
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_fault_clears_itself() {
        let mut queue = FaultQueue::default();
        queue.insert(Fault::hang().times(2));
        assert_eq!(queue.take(EndpointKind::ClientCredentials, None, None), Some(FaultKind::Hang));
        assert_eq!(queue.take(EndpointKind::JwtExchange, Some("c"), None), Some(FaultKind::Hang));
        assert_eq!(queue.take(EndpointKind::ClientCredentials, None, None), None);
    }

    #[test]
    fn zero_times_never_applies() {
        let mut queue = FaultQueue::default();
        queue.insert(Fault::hang().times(0));
        assert_eq!(queue.take(EndpointKind::ClientCredentials, None, None), None);
    }

    #[test]
    fn narrowed_fault_only_matches_its_client_and_endpoint() {
        let mut queue = FaultQueue::default();
        queue.insert(Fault::malformed_json().for_client("a").for_endpoint(EndpointKind::AkeneoRefresh));
        assert_eq!(queue.take(EndpointKind::AkeneoRefresh, Some("b"), None), None);
        assert_eq!(queue.take(EndpointKind::AkeneoRefresh, None, None), None);
        assert_eq!(queue.take(EndpointKind::AkeneoPassword, Some("a"), None), None);
        assert_eq!(queue.take(EndpointKind::AkeneoRefresh, Some("a"), None), Some(FaultKind::MalformedJson));
        // Not counted: applies until cleared.
        assert!(queue.take(EndpointKind::AkeneoRefresh, Some("a"), None).is_some());
    }

    #[test]
    fn earliest_matching_fault_wins_and_removal_works() {
        let mut queue = FaultQueue::default();
        let first = queue.insert(Fault::hang().for_client("a"));
        queue.insert(Fault::drop_connection());
        assert_eq!(queue.take(EndpointKind::JwtExchange, Some("a"), None), Some(FaultKind::Hang));
        assert_eq!(queue.take(EndpointKind::JwtExchange, Some("b"), None), Some(FaultKind::DropConnection));
        assert!(queue.remove(first));
        assert!(!queue.remove(first));
        assert_eq!(queue.take(EndpointKind::JwtExchange, Some("a"), None), Some(FaultKind::DropConnection));
        queue.clear();
        assert_eq!(queue.take(EndpointKind::JwtExchange, Some("a"), None), None);
    }

    #[test]
    fn scope_filter_matches_one_item_of_the_requested_scopes() {
        let mut queue = FaultQueue::default();
        queue.insert(Fault::hang().for_scope("manage_client_secrets"));
        let cc = EndpointKind::ClientCredentials;
        assert_eq!(queue.take(cc, Some("c"), Some("openid,firefly_api")), None);
        assert_eq!(queue.take(cc, Some("c"), None), None);
        assert_eq!(queue.take(cc, Some("c"), Some("manage_client_secrets_x")), None);
        assert_eq!(queue.take(cc, Some("c"), Some("openid,manage_client_secrets")), Some(FaultKind::Hang));
    }

    #[test]
    fn retry_after_renders_both_forms() {
        assert_eq!(RetryAfter::Seconds(7).header_value(), "7");
        let epoch_plus_day = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400);
        assert_eq!(RetryAfter::At(epoch_plus_day).header_value(), "Fri, 02 Jan 1970 00:00:00 GMT");
    }
}
