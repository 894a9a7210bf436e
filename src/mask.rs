//! Masking for display: what the CLI, the demo and the HTTP API show of a recipient.

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
}
