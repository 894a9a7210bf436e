//! Credentials: read once at build time from the environment variable a channel setting names, kept out of
//! `Debug`, and scrubbed from every error detail an adapter returns (a provider may echo a key back in an
//! error body).

use std::fmt;

use serde_json::Value;

use super::SendError;
use crate::config::ChannelConfig;
use crate::error::{Error, Result};

/// Looks up an environment variable. [`super::build`] passes the process environment; tests pass a map.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A credential. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (tests, derived tokens).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that puts it in a request.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `{prefix}{value}` as a header value marked sensitive (kept out of HTTP/2 header tables and debug output).
    pub fn header(&self, prefix: &str) -> reqwest::header::HeaderValue {
        // from_env only admits visible ASCII, so this cannot fail for a secret read there.
        let mut value = reqwest::header::HeaderValue::from_str(&format!("{prefix}{}", self.0))
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
        value.set_sensitive(true);
        value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Reads the secret held by the environment variable named by setting `key` of channel `name`. A missing
/// setting, a missing variable or an empty one is a config error naming the setting and the variable (never
/// the value).
pub fn from_env(name: &str, channel: &ChannelConfig, key: &str, env: Env) -> Result<Secret> {
    let var = channel.setting_str(name, key)?;
    match env(var) {
        Some(value) if !value.trim().is_empty() => {
            let value = value.trim();
            if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(Error::Config(format!(
                    "channels.{name}.{key}: environment variable {var} holds characters an HTTP header cannot carry"
                )));
            }
            Ok(Secret(value.to_owned()))
        }
        Some(_) => Err(Error::Config(format!(
            "channels.{name}.{key}: environment variable {var} is empty"
        ))),
        None => Err(Error::Config(format!(
            "channels.{name}.{key}: environment variable {var} is not set"
        ))),
    }
}

/// Replaces every occurrence of the secrets in the error's detail with `***`.
pub fn redact(mut error: SendError, secrets: &[&Secret]) -> SendError {
    let detail = error.detail_mut();
    for secret in secrets {
        // Very short values would shred unrelated text; credentials are never that short.
        if secret.0.len() >= 4 {
            scrub(detail, &secret.0);
        }
    }
    error
}

fn scrub(value: &mut Value, secret: &str) {
    match value {
        Value::String(s) if s.contains(secret) => *s = s.replace(secret, "***"),
        Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, secret)),
        Value::Object(map) => map.values_mut().for_each(|v| scrub(v, secret)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn debug_hides_and_redact_scrubs() {
        let s = Secret::new("sk_live_123");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let e = SendError::Permanent {
            reason: "http_401".into(),
            detail: json!({ "response": { "error": "bad key sk_live_123", "list": ["sk_live_123"] } }),
        };
        let e = redact(e, &[&s]);
        assert!(!format!("{e:?}").contains("sk_live_123"));
    }
}
