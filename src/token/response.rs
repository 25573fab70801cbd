//! Reading token-endpoint responses: both error shapes (RFC 6749 `{error, error_description}`
//! and Akeneo's `{code, message}`), `Retry-After` in both forms, `expires_in` in either unit.

use std::time::Duration;

use jiff::Timestamp;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::MintedToken;
use crate::error::{Error, Result};
use crate::secret_value::SecretValue;

/// Server-provided text is cut to this length before it reaches a status message.
const MAX_DESCRIPTION: usize = 200;
/// Largest token-endpoint response body read; real ones are a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiresInUnit {
    Seconds,
    Milliseconds,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    error: Option<String>,
    error_description: Option<String>,
    message: Option<String>,
}

pub fn transport_error(err: reqwest::Error) -> Error {
    Error::TokenEndpointUnavailable { detail: transport_detail(&err), retry_after: None, debug_id: None }
}

/// What went wrong with a request that got no response, in one short line.
pub fn transport_detail(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "request timed out".to_owned()
    } else if err.is_connect() {
        format!("cannot connect: {}", root_cause(err))
    } else {
        format!("request failed: {}", root_cause(err))
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    truncate(&current.to_string())
}

/// `text` cut at the length server-provided text may take in a message.
pub fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_DESCRIPTION) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn debug_id(headers: &HeaderMap) -> Option<String> {
    headers.get("x-debug-id").and_then(|v| v.to_str().ok()).map(truncate)
}

/// Returns the body of a 2xx response, or the error the response stands for.
pub async fn success_body(response: reqwest::Response) -> Result<(String, Option<String>)> {
    let status = response.status();
    let headers = response.headers().clone();
    let debug_id = debug_id(&headers);
    let body = read_capped(response, &debug_id).await?;
    if status.is_success() {
        return Ok((body, debug_id));
    }
    Err(classify_error(status, &headers, &body, debug_id))
}

/// The body as text, refused past [`MAX_BODY_BYTES`] without reading further: a hostile or broken
/// endpoint cannot make the operator buffer an unbounded answer.
async fn read_capped(mut response: reqwest::Response, debug_id: &Option<String>) -> Result<String> {
    let too_large = || Error::MalformedTokenResponse {
        detail: format!("the response body is larger than {} KiB", MAX_BODY_BYTES / 1024),
        debug_id: debug_id.clone(),
    };
    if response.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

pub fn classify_error(status: StatusCode, headers: &HeaderMap, body: &str, debug_id: Option<String>) -> Error {
    let retry_after =
        headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, Timestamp::now()));
    let parsed: ErrorBody = serde_json::from_str(body).unwrap_or_default();
    let code = parsed.error.clone().unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    let description = truncate(
        parsed
            .error_description
            .or(parsed.message)
            .or(parsed.error)
            .as_deref()
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("no description")),
    );
    let status_code = status.as_u16();
    match status_code {
        429 => Error::Throttled { status: status_code, retry_after, debug_id },
        503 if retry_after.is_some() => Error::Throttled { status: status_code, retry_after, debug_id },
        500..=599 => Error::TokenEndpointUnavailable {
            detail: format!("HTTP {status_code} {code}: {description}"),
            retry_after,
            debug_id,
        },
        _ => match (code.as_str(), description.as_str()) {
            ("invalid_client" | "unauthorized_client", _) => Error::InvalidClient { description, debug_id },
            ("invalid_scope", _) => Error::InvalidScope { description, debug_id },
            ("invalid_signature", _) => Error::InvalidSignature { description, debug_id },
            ("invalid_token", _) => Error::InvalidJwt { description, debug_id },
            // Akeneo names the problem only in its message.
            (_, d) if d.contains("does not match any client") => Error::InvalidClient { description, debug_id },
            (_, d) if d.contains("No user found") => Error::InvalidUserCredentials { description, debug_id },
            (_, d) if d.contains("Refresh token is invalid") => Error::RefreshTokenRejected { description, debug_id },
            _ => Error::TokenRequestRejected { code, description, debug_id },
        },
    }
}

/// Longest wait a `Retry-After` can impose: a broken or hostile header must not park a
/// credential for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` is either delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
            Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

pub fn parse_json<T: DeserializeOwned>(body: &str, debug_id: &Option<String>) -> Result<T> {
    serde_json::from_str(body).map_err(|e| Error::MalformedTokenResponse {
        // serde's message names the field and position, never echoes the (secret) content.
        detail: format!("invalid token response JSON: {}", serde_error_without_values(&e)),
        debug_id: debug_id.clone(),
    })
}

fn serde_error_without_values(err: &serde_json::Error) -> String {
    match err.classify() {
        serde_json::error::Category::Data => {
            let text = err.to_string();
            // "missing field `x` at line ..": keep the field name, which is not secret.
            match text.split_once(" at line") {
                Some((head, _)) if head.starts_with("missing field") => head.to_owned(),
                _ => "a field has the wrong type".to_owned(),
            }
        }
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not JSON".to_owned(),
        serde_json::error::Category::Io => "read error".to_owned(),
    }
}

/// `expires_in` as a positive number (or numeric string) in the flow's unit.
pub fn expires_in(value: &serde_json::Value, unit: ExpiresInUnit, debug_id: &Option<String>) -> Result<Duration> {
    let number = match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let malformed = || Error::MalformedTokenResponse {
        detail: "expires_in is missing or not a positive number; the token lifetime cannot be determined".into(),
        debug_id: debug_id.clone(),
    };
    let number = number.filter(|n| n.is_finite() && *n > 0.0).ok_or_else(malformed)?;
    let seconds = match unit {
        ExpiresInUnit::Seconds => number,
        ExpiresInUnit::Milliseconds => number / 1000.0,
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| malformed())
}

pub fn minted(
    access_token: String,
    token_type: Option<String>,
    issued_at: Timestamp,
    lifetime: Duration,
    refresh_token: Option<SecretValue>,
    debug_id: &Option<String>,
) -> Result<MintedToken> {
    if access_token.trim().is_empty() {
        return Err(Error::MalformedTokenResponse {
            detail: "access_token is empty".into(),
            debug_id: debug_id.clone(),
        });
    }
    let expires_at = issued_at
        .checked_add(jiff::SignedDuration::try_from(lifetime).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    Ok(MintedToken {
        access_token: SecretValue::new(access_token),
        token_type: token_type.filter(|t| !t.is_empty()).unwrap_or_else(|| "bearer".to_owned()),
        issued_at,
        expires_at,
        refresh_token,
        // Filled in by the caller, which knows which secret it sent.
        client_secret_key: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn classify(status: u16, body: &str, retry_after: Option<&str>) -> Error {
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_str(v).expect("header"));
        }
        classify_error(StatusCode::from_u16(status).expect("status"), &headers, body, Some("dbg-1".into()))
    }

    #[test]
    fn ims_errors_map_to_reasons() {
        let e =
            classify(400, r#"{"error":"invalid_client","error_description":"invalid client_secret parameter"}"#, None);
        assert_eq!(e.reason(), "InvalidClient");
        assert!(e.to_string().contains("invalid client_secret parameter"));
        assert!(e.to_string().contains("dbg-1"));
        assert_eq!(classify(400, r#"{"error":"invalid_scope"}"#, None).reason(), "InvalidScope");
        assert_eq!(classify(400, r#"{"error":"unsupported_grant_type"}"#, None).reason(), "TokenRequestRejected");
        assert_eq!(classify(400, r#"{"error":"invalid_signature"}"#, None).reason(), "InvalidSignature");
        assert_eq!(
            classify(400, r#"{"error":"invalid_token","error_description":"expired"}"#, None).reason(),
            "InvalidJwt"
        );
        assert_eq!(
            classify(500, r#"{"error":"internal_error","error_description":"Please try again later"}"#, None).reason(),
            "TokenEndpointUnavailable"
        );
        assert_eq!(classify(502, "<html>bad gateway</html>", None).reason(), "TokenEndpointUnavailable");
    }

    #[test]
    fn akeneo_error_shape_is_understood() {
        let e = classify(422, r#"{"code":422,"message":"Refresh token is invalid or has expired"}"#, None);
        assert_eq!(e.reason(), "RefreshTokenRejected");
        assert!(e.to_string().contains("Refresh token is invalid or has expired"));
        let client = r#"{"code":422,"message":"Parameter \"client_id\" is missing or does not match any client, or secret is invalid"}"#;
        assert_eq!(classify(422, client, None).reason(), "InvalidClient");
        let user = r#"{"code":422,"message":"No user found for the given username and password"}"#;
        assert_eq!(classify(422, user, None).reason(), "InvalidUserCredentials");
        assert_eq!(
            classify(400, r#"{"code":400,"message":"Invalid json message received"}"#, None).reason(),
            "TokenRequestRejected"
        );
    }

    #[test]
    fn throttling_honours_retry_after_in_both_forms() {
        let e = classify(429, "", Some("12"));
        assert_eq!(e.reason(), "Throttled");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(12)));
        let e = classify(503, "", Some("3"));
        assert_eq!(e.reason(), "Throttled");
        assert_eq!(classify(503, "", None).reason(), "TokenEndpointUnavailable");
        let now: Timestamp = "2026-11-24T10:00:00Z".parse().expect("ts");
        assert_eq!(parse_retry_after("Tue, 24 Nov 2026 10:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Tue, 24 Nov 2026 09:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("18446744073709551615", now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn expires_in_units() {
        let s = expires_in(&serde_json::json!(86399), ExpiresInUnit::Seconds, &None).expect("s");
        assert_eq!(s, Duration::from_secs(86399));
        let ms = expires_in(&serde_json::json!(86399998), ExpiresInUnit::Milliseconds, &None).expect("ms");
        assert_eq!(ms, Duration::from_millis(86399998));
        let from_string = expires_in(&serde_json::json!("3600"), ExpiresInUnit::Seconds, &None).expect("str");
        assert_eq!(from_string, Duration::from_secs(3600));
        for bad in [serde_json::json!(null), serde_json::json!(0), serde_json::json!(-5), serde_json::json!("x")] {
            assert_eq!(expires_in(&bad, ExpiresInUnit::Seconds, &None).unwrap_err().reason(), "MalformedTokenResponse");
        }
    }

    #[test]
    fn malformed_json_errors_do_not_echo_content() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            access_token: String,
        }
        let err = parse_json::<T>(r#"{"access_token": 12345678}"#, &None).unwrap_err();
        assert!(!err.to_string().contains("12345678"), "{err}");
        let err = parse_json::<T>(r#"{"token":"eyJsecret"}"#, &None).unwrap_err();
        assert!(err.to_string().contains("missing field `access_token`"), "{err}");
        assert!(!err.to_string().contains("eyJsecret"));
    }
}
