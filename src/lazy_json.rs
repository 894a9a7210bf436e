//! [`LazyJson`]: a JSON document read from the database and parsed on first use.
//!
//! A claim hands the worker thousands of messages per second, and building a `serde_json::Value` tree for each
//! message's recipient and content (then dropping it) dominated the worker's CPU in the no-op benchmark (the
//! profile is in the README's Performance section). Decoding only checks and copies the JSON text; the tree is
//! built the first time policy or an adapter reads the document, once.

use std::collections::BTreeMap;
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
/// The text as stored is kept next to the tree and is what [`Serialize`] and [`LazyJson::fields`] hand on, so
/// what a producer enqueued reaches a provider byte for byte (numbers included: `serde_json` would turn
/// `123456789012345678901234567890` into `1.2345678901234568e+29`). Writing through `DerefMut` (tests build
/// messages that way) parses it and replaces the text.
#[derive(Clone)]
pub struct LazyJson {
    /// The text as stored, or (when built from or changed through a value) the value's serialisation, made on
    /// first use. At least one of `raw` and `value` is always set.
    raw: OnceLock<Box<RawValue>>,
    value: OnceLock<Result<Value, Unreadable>>,
}

/// The stored text does not parse into a [`Value`]: nested deeper than `serde_json`'s recursion limit (128), or
/// a number outside `f64`'s range. PostgreSQL's `jsonb` accepts both. `Display` names the error, never the
/// content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// What went wrong, as `serde_json` words it without the position (`recursion limit exceeded`, `number out
    /// of range`).
    pub(crate) error: String,
    /// Where, 1-based.
    pub(crate) line: usize,
    /// Where, 1-based.
    pub(crate) column: usize,
}

impl Unreadable {
    fn from_serde(e: &serde_json::Error) -> Self {
        let text = e.to_string();
        // serde_json words every error "{what} at line {l} column {c}"; the position is kept apart.
        let what = text
            .rfind(" at line ")
            .map_or(text.as_str(), |i| &text[..i]);
        Unreadable {
            error: what.to_owned(),
            line: e.line(),
            column: e.column(),
        }
    }
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.error, self.line, self.column
        )
    }
}

impl std::error::Error for Unreadable {}

static NULL: Value = Value::Null;

impl LazyJson {
    /// The document as a tree, parsed on first use, or why it cannot be one. Code that decides from a document
    /// reads it here, so an unreadable document is an outcome, never a silent `null`.
    pub(crate) fn value(&self) -> Result<&Value, &Unreadable> {
        self.value
            .get_or_init(|| {
                let raw = self
                    .raw
                    .get()
                    .expect("a LazyJson holds its text or its value");
                serde_json::from_str(raw.get()).map_err(|e| {
                    let unreadable = Unreadable::from_serde(&e);
                    // Deref readers (policy) see null; say so once, without the content.
                    tracing::warn!(error = %unreadable, "a stored JSON document does not parse");
                    unreadable
                })
            })
            .as_ref()
    }

    /// The document's text: as stored (as `jsonb` returns it), or the value's serialisation.
    pub(crate) fn raw(&self) -> &RawValue {
        self.raw.get_or_init(|| {
            let value = match self.value.get() {
                Some(Ok(value)) => value,
                // Unreachable: an unreadable value comes only from a stored text, which is kept.
                _ => &Value::Null,
            };
            serde_json::value::to_raw_value(value).expect("a Value always serialises")
        })
    }

    /// The top-level members of an object document, each as its text, without parsing the members (no depth
    /// limit, no number conversion): what adapters copy into a request, so it goes out exactly as stored. A
    /// document that is not an object has no members.
    pub(crate) fn fields(&self) -> Result<Fields<'_>, Unreadable> {
        let raw = self.raw().get();
        if !raw.trim_start().starts_with('{') {
            return Ok(Fields(BTreeMap::new()));
        }
        serde_json::from_str(raw)
            .map(Fields)
            .map_err(|e| Unreadable::from_serde(&e))
    }
}

/// The top-level members of an object document, as text (see [`LazyJson::fields`]).
#[derive(Debug, Default)]
pub(crate) struct Fields<'a>(BTreeMap<String, &'a RawValue>);

impl<'a> Fields<'a> {
    /// A member's text, `null` included; `None` when absent.
    pub(crate) fn raw(&self, key: &str) -> Option<&'a RawValue> {
        self.0.get(key).copied()
    }

    /// A member's text, absent and `null` alike as `None`.
    pub(crate) fn present(&self, key: &str) -> Option<&'a RawValue> {
        self.raw(key).filter(|r| r.get() != "null")
    }

    /// A string member: `Ok(None)` when absent or `null`, an error when it is something else.
    pub(crate) fn string(&self, key: &str) -> serde_json::Result<Option<String>> {
        self.present(key)
            .map(|raw| serde_json::from_str::<String>(raw.get()))
            .transpose()
    }
}

/// Whether a member's text is a JSON object (`{…}`).
pub(crate) fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

impl Deref for LazyJson {
    type Target = Value;

    /// The tree, or `null` when the text does not parse (logged; [`LazyJson::value`] says why).
    fn deref(&self) -> &Value {
        self.value().unwrap_or(&NULL)
    }
}

impl DerefMut for LazyJson {
    fn deref_mut(&mut self) -> &mut Value {
        let _ = self.value();
        self.raw = OnceLock::new();
        let slot = self.value.get_mut().expect("parsed just above");
        if slot.is_err() {
            // Writing over an unreadable document starts from null, as reading it showed.
            *slot = Ok(Value::Null);
        }
        slot.as_mut().expect("made readable just above")
    }
}

impl From<Value> for LazyJson {
    fn from(value: Value) -> Self {
        LazyJson {
            raw: OnceLock::new(),
            value: OnceLock::from(Ok(value)),
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
        match (self.raw.get(), self.value.get()) {
            (Some(raw), _) => f.write_str(raw.get()),
            (None, Some(Ok(value))) => fmt::Debug::fmt(value, f),
            (None, _) => f.write_str("null"),
        }
    }
}

/// Serialises the text (as stored unless changed): no tree is built to send it on, and numbers keep their digits.
impl Serialize for LazyJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw().serialize(serializer)
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
            raw: OnceLock::from(raw),
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
            raw: OnceLock::from(RawValue::from_string(text.to_owned()).unwrap()),
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

    #[test]
    fn numbers_keep_their_digits_after_a_read() {
        let text =
            r#"{"n":123456789012345678901234567890,"f":0.1000000000000000055511151231257827}"#;
        let doc = stored(text);
        assert!(doc["n"].is_number(), "policy may read it");
        assert_eq!(serde_json::to_string(&doc).unwrap(), text);
        let fields = doc.fields().unwrap();
        assert_eq!(
            fields.raw("n").unwrap().get(),
            "123456789012345678901234567890"
        );
        assert_eq!(
            fields.raw("f").unwrap().get(),
            "0.1000000000000000055511151231257827"
        );
    }

    #[test]
    fn unreadable_documents_say_why_and_never_pass_for_null_silently() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        let huge = format!("{{\"phone\":\"+31612345678\",\"n\":1{}}}", "0".repeat(400));
        for (text, error) in [
            (deep.as_str(), "recursion limit exceeded"),
            (huge.as_str(), "number out of range"),
        ] {
            let doc = stored(text);
            let why = doc.value().unwrap_err();
            assert_eq!(why.error, error);
            assert!(!why.to_string().contains("31612345678"), "{why}");
            assert!(doc.is_null(), "Deref readers see null");
            // The text itself still goes out as stored, and its members can be read without a tree.
            assert_eq!(serde_json::to_string(&doc).unwrap(), text);
            assert!(doc.fields().unwrap().raw("phone").is_some() || error != "number out of range");
        }
    }

    #[test]
    fn fields_of_values_and_of_non_objects() {
        let doc = LazyJson::from(json!({ "text": "hi", "none": null, "n": 7 }));
        let fields = doc.fields().unwrap();
        assert_eq!(fields.string("text").unwrap().as_deref(), Some("hi"));
        assert_eq!(fields.string("none").unwrap(), None);
        assert!(fields.raw("none").is_some() && fields.present("none").is_none());
        assert!(fields.string("n").is_err());
        assert_eq!(fields.string("absent").unwrap(), None);
        assert!(stored("[1,2]").fields().unwrap().raw("0").is_none());
    }
}
