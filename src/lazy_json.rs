//! [`LazyJson`]: a JSON document read from the database and parsed on first use.
//!
//! A claim hands the worker thousands of messages per second, and building a `serde_json::Value` tree for each
//! message's recipient and content (then dropping it) was a third of the worker's CPU in the no-op benchmark
//! (`perf`, 100,000-message drain). Decoding now only checks and copies the JSON text; the tree is built the first
//! time policy or an adapter reads the document, once.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::{Decode, Postgres, Type};

/// A JSON document that reads as a [`Value`] (through `Deref`) and is parsed only when read.
///
/// Writing through `DerefMut` (tests build messages that way) parses it and drops the original text.
#[derive(Clone)]
pub struct LazyJson {
    /// The text as stored; `None` once the value has been changed (or when built from a value).
    raw: Option<Box<RawValue>>,
    value: OnceLock<Value>,
}

impl LazyJson {
    fn parse(&self) -> &Value {
        self.value.get_or_init(|| {
            // The text came from a jsonb column (PostgreSQL wrote it) or from a value, so it always parses.
            self.raw.as_deref().map_or(Value::Null, |raw| {
                serde_json::from_str(raw.get()).unwrap_or(Value::Null)
            })
        })
    }
}

impl Deref for LazyJson {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.parse()
    }
}

impl DerefMut for LazyJson {
    fn deref_mut(&mut self) -> &mut Value {
        self.parse();
        self.raw = None;
        self.value.get_mut().expect("parsed just above")
    }
}

impl From<Value> for LazyJson {
    fn from(value: Value) -> Self {
        LazyJson {
            raw: None,
            value: OnceLock::from(value),
        }
    }
}

impl PartialEq for LazyJson {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl fmt::Debug for LazyJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.value.get(), &self.raw) {
            (Some(value), _) => fmt::Debug::fmt(value, f),
            (None, Some(raw)) => f.write_str(raw.get()),
            (None, None) => f.write_str("null"),
        }
    }
}

/// Serialises the stored text as is when it was never parsed (no tree is built to send it on).
impl Serialize for LazyJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self.value.get(), &self.raw) {
            (Some(value), _) => value.serialize(serializer),
            (None, Some(raw)) => raw.serialize(serializer),
            (None, None) => Value::Null.serialize(serializer),
        }
    }
}

impl Type<Postgres> for LazyJson {
    fn type_info() -> PgTypeInfo {
        <sqlx::types::Json<Box<RawValue>> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <sqlx::types::Json<Box<RawValue>> as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for LazyJson {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let raw = <sqlx::types::Json<Box<RawValue>> as Decode<'r, Postgres>>::decode(value)?.0;
        Ok(LazyJson {
            raw: Some(raw),
            value: OnceLock::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(text: &str) -> LazyJson {
        LazyJson {
            raw: Some(RawValue::from_string(text.to_owned()).unwrap()),
            value: OnceLock::new(),
        }
    }

    #[test]
    fn reads_parse_once_and_writes_replace_the_text() {
        let mut doc = stored(r#"{"phone":"+31612345678"}"#);
        assert!(doc.value.get().is_none(), "nothing parsed before a read");
        assert_eq!(doc["phone"], "+31612345678");
        assert!(doc.value.get().is_some());
        doc["phone"] = json!("+33612345678");
        assert_eq!(
            serde_json::to_value(&doc).unwrap(),
            json!({ "phone": "+33612345678" }),
            "a write is what gets serialised"
        );
    }

    #[test]
    fn serialises_unparsed_text_unchanged() {
        let doc = stored(r#"{"body":{"type":"text","text":{"text":"hi"}}}"#);
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"body":{"type":"text","text":{"text":"hi"}}}"#
        );
        assert!(doc.value.get().is_none(), "serialising does not parse");
        assert_eq!(LazyJson::from(json!([1])), stored("[1]"));
    }
}
