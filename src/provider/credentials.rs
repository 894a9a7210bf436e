//! Credentials: read once at build time from the environment variable a channel setting names, kept out of
//! `Debug`, and scrubbed from every error detail an adapter returns (a provider may echo a key back in an
//! error body), with the message's recipient (event details are readable by producers).

use std::fmt;

use serde_json::Value;

use super::SendError;
use crate::config::ChannelConfig;
use crate::error::{Error, Result};
use crate::lazy_json::LazyJson;

/// Looks up an environment variable. [`super::build`] passes the process environment; tests pass a map.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A credential. Its `Debug` never shows the value.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps a value (tests, derived tokens).
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that puts it in a request.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `{prefix}{value}` as a header value marked sensitive (kept out of HTTP/2 header tables and debug output).
    pub(crate) fn header(&self, prefix: &str) -> reqwest::header::HeaderValue {
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
pub(crate) fn from_env(name: &str, channel: &ChannelConfig, key: &str, env: Env) -> Result<Secret> {
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

/// Replaces every occurrence of the secrets in the error's detail with `***`: in strings and object keys, as
/// given and in the forms a provider may echo them in (base64, standard and URL-safe, padded or not, also inside
/// a longer base64 text such as a Basic `user:secret` header; URL-encoded).
pub(crate) fn redact(mut error: SendError, secrets: &[&Secret]) -> SendError {
    let mut needles = Vec::new();
    for secret in secrets {
        // Very short values would shred unrelated text; credentials are never that short.
        if secret.0.len() >= MIN_NEEDLE {
            needles.extend(secret_forms(&secret.0));
        }
    }
    scrub_all(error.detail_mut(), &mut needles);
    error
}

/// Replaces the recipient's identifiers (every string or number in it: phone, email, ids) in the error's detail
/// with `***`, as given and URL-encoded, and a phone number also without its `+`. A provider may echo them in
/// its answer, and the detail is readable by producers through `tidings.events`.
pub(crate) fn scrub_recipient(mut error: SendError, recipient: &LazyJson) -> SendError {
    let mut needles = Vec::new();
    if let Ok(value) = recipient.value() {
        recipient_needles(value, &mut needles);
    }
    scrub_all(error.detail_mut(), &mut needles);
    error
}

/// Needles shorter than this are not scrubbed (they would shred unrelated text).
const MIN_NEEDLE: usize = 4;

/// Every form of a secret worth looking for.
fn secret_forms(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes = secret.as_bytes();
    let mut forms = vec![secret.to_owned()];
    forms.extend(url_encoded(secret));
    for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        forms.push(engine.encode(bytes));
    }
    // Inside a longer base64 text the secret's encoding depends on where it starts (its offset modulo 3): encode
    // it behind 0, 1 and 2 filler bytes and keep the characters that depend on the secret's bits only.
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(bytes);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&padded);
            let (from, to) = (8 * offset, 8 * (offset + bytes.len()));
            let pure: String = encoded
                .chars()
                .enumerate()
                .filter(|(i, _)| 6 * i >= from && 6 * i + 6 <= to)
                .map(|(_, c)| c)
                .collect();
            forms.push(pure);
        }
    }
    forms
}

/// `text` percent-encoded as a URL query or form would carry it (`%XX` in either case, space as `+` or `%20`,
/// `~` encoded or not); nothing when encoding changes nothing.
fn url_encoded(text: &str) -> Vec<String> {
    let form: String = url::form_urlencoded::byte_serialize(text.as_bytes()).collect();
    if form == text {
        return Vec::new();
    }
    let mut forms = vec![form.replace('+', "%20"), form];
    let tilde: Vec<String> = forms.iter().map(|f| f.replace("%7E", "~")).collect();
    forms.extend(tilde);
    let lower: Vec<String> = forms.iter().map(|f| lower_hex(f)).collect();
    forms.extend(lower);
    forms.retain(|f| f != text);
    forms
}

/// Lower-cases the two hex digits after each `%`.
fn lower_hex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut hex_left = 0;
    for c in s.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            if c == '%' {
                hex_left = 2;
            }
            out.push(c);
        }
    }
    out
}

fn recipient_needles(value: &Value, needles: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            needles.push(s.clone());
            needles.extend(url_encoded(s));
            if let Some(digits) = s.strip_prefix('+')
                && digits.bytes().all(|b| b.is_ascii_digit())
            {
                needles.push(digits.to_owned());
            }
        }
        Value::Number(n) => needles.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| recipient_needles(v, needles)),
        Value::Object(map) => map.values().for_each(|v| recipient_needles(v, needles)),
        Value::Bool(_) | Value::Null => {}
    }
}

/// Scrubs every needle (longest first, so a padded encoding goes before its unpadded prefix) from `value`.
fn scrub_all(value: &mut Value, needles: &mut Vec<String>) {
    needles.retain(|n| n.len() >= MIN_NEEDLE);
    needles.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    needles.dedup();
    if !needles.is_empty() {
        scrub(value, needles);
    }
}

fn scrub(value: &mut Value, needles: &[String]) {
    match value {
        Value::String(s) => {
            if let Some(clean) = scrubbed(s, needles) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, needles)),
        Value::Object(map) => {
            if map.keys().any(|k| scrubbed(k, needles).is_some()) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (scrubbed(&k, needles).unwrap_or(k), v))
                    .collect();
            }
            map.values_mut().for_each(|v| scrub(v, needles));
        }
        _ => {}
    }
}

/// `text` with every needle replaced by `***`, and a needle's beginning cut off at the end of the text (an
/// excerpt may end inside one) also replaced; `None` when nothing changed.
fn scrubbed(text: &str, needles: &[String]) -> Option<String> {
    let mut out = std::borrow::Cow::Borrowed(text);
    for needle in needles {
        if out.contains(needle.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(needle.as_str(), "***"));
        }
    }
    for needle in needles {
        let tail = (MIN_NEEDLE..needle.len())
            .rev()
            .filter(|&n| needle.is_char_boundary(n))
            .find(|&n| out.ends_with(&needle[..n]));
        if let Some(n) = tail {
            let keep = out.len() - n;
            out = std::borrow::Cow::Owned(format!("{}***", &out[..keep]));
        }
    }
    match out {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(s) => Some(s),
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

    fn scrubbed_detail(detail: Value, secret: &str) -> String {
        let e = SendError::Permanent {
            reason: "http_401".into(),
            detail,
        };
        redact(e, &[&Secret::new(secret)]).detail().to_string()
    }

    #[test]
    fn secrets_are_scrubbed_in_keys_and_encoded_forms() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        // Bytes that differ between the standard and URL-safe alphabets, and a length that needs padding.
        let secret = "???k>~?y/ s3cr3t+=?";
        let encodings = [
            STANDARD.encode(secret),
            STANDARD_NO_PAD.encode(secret),
            URL_SAFE.encode(secret),
            URL_SAFE_NO_PAD.encode(secret),
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>(),
            "%3F%3F%3Fk%3E~%3Fy%2F%20s3cr3t%2B%3D%3F".to_owned(),
            "%3f%3f%3fk%3e%7e%3fy%2f+s3cr3t%2b%3d%3f".to_owned(),
        ];
        assert!(
            encodings.iter().any(|e| e.contains('=')) && encodings.iter().any(|e| e.contains('_'))
        );
        for form in &encodings {
            let text = scrubbed_detail(json!({ "response": format!("got [{form}] back") }), secret);
            assert!(!text.contains(form.as_str()), "{form}: {text}");
            assert!(text.contains("got [***] back"), "{form}: {text}");
        }
        // In a key, as given and encoded.
        let text = scrubbed_detail(
            json!({ "response": { secret: 1, encodings[0].clone(): { "nested": secret } } }),
            secret,
        );
        assert!(
            !text.contains("s3cr3t") && !text.contains(&encodings[0]),
            "{text}"
        );
        // Inside a longer base64 text (a Basic header echoed back), at every offset modulo 3.
        for user in ["u", "us", "usr"] {
            let basic = STANDARD.encode(format!("{user}:{secret}"));
            let text =
                scrubbed_detail(json!({ "authorization": format!("Basic {basic}") }), secret);
            assert!(!text.contains(&basic[basic.len() / 2..]), "{user}: {text}");
            assert!(text.contains("***"), "{user}: {text}");
        }
        // An excerpt cut inside the secret loses the start of it too.
        let text = scrubbed_detail(json!({ "excerpt": "token is ???k>~?y/ s3" }), secret);
        assert_eq!(text, r#"{"excerpt":"token is ***"}"#);
        // Unrelated text and short values are left alone.
        let text = scrubbed_detail(json!({ "error": "bad request", "code": 7 }), secret);
        assert_eq!(text, r#"{"code":7,"error":"bad request"}"#);
    }

    #[test]
    fn the_recipient_is_scrubbed_in_every_form() {
        let recipient = LazyJson::from(json!({
            "phone": "+31612345678", "email": "jo@example.com", "ids": ["a-1234"], "n": 7,
        }));
        let e = SendError::Permanent {
            reason: "http_422".into(),
            detail: json!({
                "http_status": 422,
                "excerpt": "to +31612345678 (31612345678, %2B31612345678), jo%40example.com; a-1234; 7 items",
                "+31612345678": "jo@example.com",
            }),
        };
        let text = scrub_recipient(e, &recipient).detail().to_string();
        for gone in [
            "31612345678",
            "jo@example.com",
            "jo%40example.com",
            "a-1234",
        ] {
            assert!(!text.contains(gone), "{gone}: {text}");
        }
        assert!(text.contains("7 items"), "short values are left: {text}");
        assert!(text.contains(r#""http_status":422"#), "{text}");
    }
}
