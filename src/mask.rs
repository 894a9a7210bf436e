//! Masking: what the CLI, the demo, the HTTP API and the dashboard show of a recipient, in one place.

use serde_json::Value;

/// A recipient for display: phone numbers masked to their last 3 digits, other ids kept.
pub(crate) fn mask_recipient(recipient: &Value) -> String {
    match recipient.get("phone").and_then(Value::as_str) {
        Some(phone) => mask_phone(phone),
        None => {
            let mut r = recipient.clone();
            if let Some(o) = r.as_object_mut() {
                o.remove("timezone");
            }
            r.to_string()
        }
    }
}

/// `+31612345678` → `+••••••••678`: all but the last 3 digits hidden.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    let keep_head = usize::from(chars.first() == Some(&'+'));
    let keep_tail = 3.min(chars.len().saturating_sub(keep_head));
    let masked = chars.len() - keep_head - keep_tail;
    format!(
        "{}{}{}",
        chars[..keep_head].iter().collect::<String>(),
        "•".repeat(masked),
        chars[chars.len() - keep_tail..].iter().collect::<String>()
    )
}

/// The recipient as answered: every string but the time zone masked like the demo masks phone numbers (all but
/// the last 3 characters), unless the caller may and asked to see it.
pub(crate) fn mask_recipient_value(recipient: &Value, reveal: bool) -> Value {
    if reveal {
        return recipient.clone();
    }
    match recipient {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) if k != "timezone" => Value::String(mask_phone(s)),
                        Value::String(_) => v.clone(),
                        other => mask_recipient_value(other, false),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::String(s) => Value::String(mask_phone(s)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| mask_recipient_value(v, false))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Replaces the recipient's phone number (with and without `+`) in every string of `detail`: providers echo the
/// receiver in error bodies, which events keep.
pub(crate) fn mask_in(detail: &mut Value, recipient: &Value) {
    let Some(phone) = recipient.get("phone").and_then(Value::as_str) else {
        return;
    };
    match detail {
        Value::String(s) => {
            if let Some(masked) = mask_phone_in(s, phone) {
                *s = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mask_in(v, recipient)),
        Value::Object(map) => map.values_mut().for_each(|v| mask_in(v, recipient)),
        _ => {}
    }
}

/// `text` with `phone` (and its digits without `+`) masked wherever it stands; `None` when neither occurs (or
/// the number is too short to mask meaningfully). Providers echo the receiver in error bodies, which events keep.
pub(crate) fn mask_phone_in(text: &str, phone: &str) -> Option<String> {
    if phone.len() < 4 {
        return None;
    }
    let digits = phone.strip_prefix('+');
    if !text.contains(phone) && !digits.is_some_and(|d| text.contains(d)) {
        return None;
    }
    let text = text.replace(phone, &mask_phone(phone));
    Some(match digits {
        Some(d) => text.replace(d, &mask_phone(d)),
        None => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn phones_are_masked() {
        assert_eq!(mask_phone("+31612345678"), "+••••••••678");
        assert_eq!(mask_phone("+1"), "+1");
        assert_eq!(mask_phone("5551234567"), "•••••••567");
        assert_eq!(
            mask_recipient(&json!({"customerThreadId": "42"})),
            r#"{"customerThreadId":"42"}"#
        );
    }

    #[test]
    fn a_phone_is_masked_inside_text_with_and_without_its_plus() {
        let phone = "+31612345678";
        assert_eq!(
            mask_phone_in("to +31612345678 and 31612345678", phone).as_deref(),
            Some("to +••••••••678 and ••••••••678")
        );
        assert_eq!(mask_phone_in("nothing here", phone), None);
        assert_eq!(mask_phone_in("+123", "+12"), None);
        let mut detail = json!({ "response": ["echo 31612345678"] });
        mask_in(&mut detail, &json!({ "phone": phone }));
        assert_eq!(detail, json!({ "response": ["echo ••••••••678"] }));
    }
}
