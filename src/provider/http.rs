//! The HTTP side every adapter shares: one pooled client, and the mapping of HTTP answers and transport
//! failures to [`SendError`] through the single retry table in [`super::retry`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::{Value, json};

use super::SendError;
use super::retry::{self, Class};
use crate::error::{Error, Result};

/// Longest body excerpt kept in an event's detail (which producers can read through `tidings.events`).
pub(crate) const BODY_EXCERPT: usize = 512;

/// Most bytes of an answer read. A provider answers a send with a few hundred bytes; a larger answer is read no
/// further (the connection is dropped, not reused) and classified by its status, so a misbehaving provider
/// cannot make a worker buffer without bound.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// The one HTTP client of a worker process (connection pooling is per client). Timeouts are per request.
pub fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .user_agent(concat!("tidings/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Other(format!("http client: {e}")))
}

/// A response body, read up to [`MAX_BODY`].
#[derive(Debug)]
pub(crate) struct Response {
    /// HTTP status code.
    pub(crate) status: u16,
    /// The body parsed as JSON, or `Value::Null` when it is not JSON or larger than [`MAX_BODY`].
    pub(crate) json: Value,
}

/// The instant `timeout` from now; a timeout past the clock's range (which `Instant + Duration` would panic on)
/// is as good as none.
pub(crate) fn deadline(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// Reads at most [`MAX_BODY`] bytes of `response`; `true` when there was more (left unread).
async fn read_bounded(response: &mut reqwest::Response) -> reqwest::Result<(Vec<u8>, bool)> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY {
            body.extend_from_slice(&chunk[..MAX_BODY - body.len()]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// Sends a request with the channel's timeout; 2xx comes back as a [`Response`], anything else is classified.
/// A `Retry-After` counts from the moment the answer arrived (RFC 9110), not from the start of the attempt.
pub(crate) async fn execute(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<Response, SendError> {
    let mut response = request
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| from_transport(&e))?;
    let answered_at = Utc::now();
    let status = response.status().as_u16();
    let (body, truncated) = read_bounded(&mut response)
        .await
        .map_err(|e| from_transport(&e))?;
    if (200..300).contains(&status) {
        if truncated {
            // Accepted by its status (sending again could duplicate the message); its body, and with it the
            // provider's id, is not read.
            tracing::warn!(
                http_status = status,
                limit = MAX_BODY,
                "provider answer larger than the limit: classified by its status, body not read"
            );
            return Ok(Response {
                status,
                json: Value::Null,
            });
        }
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return Ok(Response { status, json });
    }
    let mut error = classify(status, response.headers(), &body, answered_at);
    if truncated {
        error.detail_mut()["truncated"] = json!(true);
    }
    Err(error)
}

/// Like [`execute`], with whatever is left of an attempt's time budget: an adapter that makes several requests
/// in one attempt (a lookup, a send, a follow-up) keeps the whole attempt within the channel's `timeout`, so a
/// send never outlives the lease. Nothing left is a `timeout` before any request is made.
pub(crate) async fn execute_until(
    request: reqwest::RequestBuilder,
    deadline: tokio::time::Instant,
) -> Result<Response, SendError> {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if left.is_zero() {
        return Err(SendError::Transient {
            reason: "timeout".to_owned(),
            detail: json!({ "error": "the attempt's time budget ran out before this request" }),
        });
    }
    execute(request, left).await
}

/// The channel's `base_url` without a trailing slash, or the provider's public default.
pub(crate) fn base_url(channel: &crate::config::ChannelConfig, default: &str) -> String {
    channel
        .base_url
        .as_deref()
        .unwrap_or(default)
        .trim_end_matches('/')
        .to_owned()
}

/// Parses a channel's endpoint once, when the adapter is built: a bad `base_url` stops the worker at start with
/// the setting named, instead of failing every message, and no request parses its URL again. The URL itself is
/// not echoed: it may carry credentials.
pub(crate) fn endpoint(name: &str, url: &str) -> Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::Config(format!("channels.{name}.base_url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::Config(format!(
            "channels.{name}.base_url: must be an http or https URL"
        )));
    }
    Ok(parsed)
}

/// Maps a non-2xx answer to a [`SendError`] with the status and a body excerpt in the detail: only what was
/// classified and at most [`BODY_EXCERPT`] bytes of the body, never the whole answer (adapters then scrub the
/// recipient and credentials from it, see [`super::credentials`]).
pub(crate) fn classify(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> SendError {
    let mut detail = json!({ "http_status": status });
    if !body.is_empty() {
        detail["excerpt"] = json!(excerpt(body));
    }
    match retry::classify_status(status) {
        Class::RateLimited => {
            let header = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok());
            if let Some(h) = header {
                detail["retry_after"] = json!(h);
            }
            SendError::RateLimited {
                retry_after: header.and_then(|h| retry::parse_retry_after(h, now)),
                detail,
            }
        }
        Class::Transient => SendError::Transient {
            reason: format!("http_{status}"),
            detail,
        },
        Class::Permanent => SendError::Permanent {
            reason: format!("http_{status}"),
            detail,
        },
    }
}

/// The first [`BODY_EXCERPT`] bytes of `body` as text (invalid UTF-8 and a character cut at the end shown as
/// U+FFFD).
pub(crate) fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)]).into_owned()
}

/// A value taken from a provider's answer into an event's detail, bounded: as is when its JSON text fits in
/// [`BODY_EXCERPT`] bytes, else an excerpt of that text.
pub(crate) fn bounded(value: Option<&Value>) -> Value {
    match value {
        None => Value::Null,
        Some(v) => {
            let text = v.to_string();
            if text.len() <= BODY_EXCERPT {
                v.clone()
            } else {
                Value::String(excerpt(text.as_bytes()))
            }
        }
    }
}

/// Maps a transport failure (timeout, refused connection, reset) to a retryable error. The request may have
/// reached the provider; the retry carries the same idempotency key.
pub(crate) fn from_transport(err: &reqwest::Error) -> SendError {
    let reason = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "transport"
    };
    // reqwest's Display includes the URL but never headers, so credentials in headers stay out of it.
    SendError::Transient {
        reason: reason.to_owned(),
        detail: json!({ "error": without_query(&err.to_string()) }),
    }
}

/// Drops query strings from an error text (some APIs take ids in them; keep events free of them).
fn without_query(text: &str) -> String {
    match text.find('?') {
        Some(i) => {
            let end = text[i..]
                .find([' ', ')'])
                .map(|j| i + j)
                .unwrap_or(text.len());
            format!("{}{}", &text[..i], &text[end..])
        }
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_through_the_shared_table() {
        let now = Utc::now();
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        match classify(429, &h, b"{}", now) {
            SendError::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(now + chrono::Duration::seconds(7)))
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(classify(503, &HeaderMap::new(), b"", now), SendError::Transient { reason, .. } if reason == "http_503")
        );
        assert!(
            matches!(classify(422, &HeaderMap::new(), br#"{"code":"x"}"#, now), SendError::Permanent { detail, .. } if detail["excerpt"] == r#"{"code":"x"}"#)
        );
    }

    #[test]
    fn endpoints_are_checked_once_with_the_setting_named() {
        let url = endpoint("sms", "http://127.0.0.1:9/a/b").unwrap();
        assert_eq!(url.path(), "/a/b");
        for bad in ["not a url", "ftp://host/x", "http://user:s3cret@[::1/"] {
            let err = endpoint("sms", bad).unwrap_err().to_string();
            assert!(err.contains("channels.sms.base_url: "), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn query_strings_are_dropped() {
        assert_eq!(
            without_query("error sending request for url (http://h/a?customerThreadId=9)"),
            "error sending request for url (http://h/a)"
        );
    }
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    /// RFC 9110: `Retry-After: 2` means two seconds after the answer, however long the answer took. (Counted
    /// from the start of the attempt, an answer that took 1 s would be retried 1 s after it.)
    #[tokio::test]
    async fn retry_after_counts_from_the_answer_not_from_the_request() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(429)
                    .insert_header("retry-after", "2")
                    .set_delay(Duration::from_millis(1200)),
            )
            .mount(&server)
            .await;
        let client = client().unwrap();
        let sent_at = Utc::now();
        let error = execute(client.post(server.uri()), Duration::from_secs(10))
            .await
            .unwrap_err();
        let returned_at = Utc::now();
        let SendError::RateLimited {
            retry_after: Some(at),
            ..
        } = error
        else {
            panic!("{error:?}");
        };
        // The answer came at least 1.2 s after the request: two seconds from it is at least 3.2 s from the send.
        assert!(
            at >= sent_at + chrono::Duration::milliseconds(3200),
            "retry at {at}, request at {sent_at}: counted from the request"
        );
        assert!(at <= returned_at + chrono::Duration::seconds(2));
    }
}
