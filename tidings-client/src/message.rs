//! `NewMessage`: one typed builder per message kind, serialised to the JSON `tidings.enqueue_many` takes.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value, json};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::Error;

/// Why a message is sent; decides its default validity and whether quiet hours and frequency caps apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UseCase {
    /// Order updates, receipts, alerts. Exempt from quiet hours. Valid 36 h by default.
    #[default]
    Transactional,
    /// Promotions. Subject to quiet hours. Valid 36 h by default.
    Promotional,
    /// Replies in a conversation. Valid 36 h by default.
    Conversational,
    /// Marketing. Subject to quiet hours and, with `cap_frequency`, to the channel's frequency cap.
    Marketing,
    /// One-time codes. Exempt from quiet hours. Valid 10 min by default.
    #[serde(rename = "2fa")]
    TwoFactor,
}

/// A message to enqueue. Build it with the constructor for its channel kind, then the common setters.
#[derive(Debug, Clone, Serialize)]
pub struct NewMessage {
    channel: String,
    recipient: Value,
    content: Value,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "rfc3339")]
    scheduled_for: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    validity: Option<u32>,
    use_case: UseCase,
    #[serde(skip_serializing_if = "is_false")]
    ignore_quiet_hours: bool,
    #[serde(skip_serializing_if = "is_false")]
    cap_frequency: bool,
    #[serde(skip_serializing_if = "is_zero")]
    priority: u8,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fallback: Vec<Fallback>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracestate: Option<String>,
}

/// An outcome of a message that sends the next step of its fallback chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Refused by policy (closed window without a template, opt-out, frequency cap, …).
    Rejected,
    /// A permanent provider error, or every attempt spent.
    SendingFailed,
    /// Could not be sent in time (a deferral or retry would have landed after its validity).
    Expired,
    /// Sent, but no `delivered` receipt within [`Fallback::undelivered_after`] (channels with receipts only).
    Undelivered,
}

/// One step of a fallback chain: a message on another channel, sent when the previous message of the chain ends
/// with one of the step's [`Trigger`]s. It shares the first message's validity, use case, priority and tags.
#[derive(Debug, Clone, Serialize)]
pub struct Fallback {
    channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient: Option<Value>,
    content: Value,
    on: Vec<Trigger>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<u32>,
}

impl Fallback {
    /// A step sending `message`'s channel, recipient and content (its other settings are the chain's). Build it
    /// like any message: `Fallback::to(NewMessage::sms("sms", "+31612345678").text("…")).on([Trigger::Rejected])`.
    pub fn to(message: NewMessage) -> Self {
        let recipient = match &message.recipient {
            Value::Object(o) if o.is_empty() => None,
            r => Some(r.clone()),
        };
        Fallback {
            channel: message.channel,
            recipient,
            content: message.content,
            on: Vec::new(),
            after: None,
        }
    }

    /// Sends the step to the first message's recipient (which must have what the step's channel needs, e.g. a
    /// `phone` for SMS) instead of its own.
    pub fn first_recipient(mut self) -> Self {
        self.recipient = None;
        self
    }

    /// The outcomes of the previous message that send this step (added to any given before).
    pub fn on<I: IntoIterator<Item = Trigger>>(mut self, triggers: I) -> Self {
        for t in triggers {
            if !self.on.contains(&t) {
                self.on.push(t);
            }
        }
        self
    }

    /// Also sends this step when the previous message got no `delivered` receipt within `seconds` of being sent.
    pub fn undelivered_after(mut self, seconds: u32) -> Self {
        self.after = Some(seconds);
        self.on([Trigger::Undelivered])
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

fn rfc3339<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true)),
        None => s.serialize_none(),
    }
}

impl NewMessage {
    /// A message for any channel, with recipient and content as raw JSON (the shapes are in the README).
    pub fn raw(channel: impl Into<String>, recipient: Value, content: Value) -> Self {
        NewMessage {
            channel: channel.into(),
            recipient,
            content,
            scheduled_for: None,
            validity: None,
            use_case: UseCase::default(),
            ignore_quiet_hours: false,
            cap_frequency: false,
            priority: 0,
            tags: Vec::new(),
            reference: None,
            callback_url: None,
            fallback: Vec::new(),
            traceparent: None,
            tracestate: None,
        }
    }

    /// An SMS/MMS for a `bird_sms` or `sandbox` channel, to an E.164 number. Set its content with
    /// [`text`](Self::text), [`images`](Self::images), [`files`](Self::files) or [`template`](Self::template).
    pub fn sms(channel: impl Into<String>, phone: impl Into<String>) -> Self {
        Self::raw(channel, json!({ "phone": phone.into() }), json!({}))
    }

    /// Plain text body.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.content = json!({ "body": { "type": "text", "text": { "text": text.into() } } });
        self
    }

    /// An MMS with up to 10 images, with optional text.
    pub fn images<I, S>(mut self, urls: I, text: Option<&str>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let images: Vec<Value> = urls
            .into_iter()
            .map(|u| json!({ "mediaUrl": u.into() }))
            .collect();
        let mut image = json!({ "images": images });
        if let Some(text) = text {
            image["text"] = json!(text);
        }
        self.content = json!({ "body": { "type": "image", "image": image } });
        self
    }

    /// An MMS with up to 10 files given as `(url, content type)`, with optional text.
    pub fn files<I, S>(mut self, files: I, text: Option<&str>) -> Self
    where
        I: IntoIterator<Item = (S, S)>,
        S: Into<String>,
    {
        let files: Vec<Value> = files
            .into_iter()
            .map(|(u, t)| json!({ "mediaUrl": u.into(), "contentType": t.into() }))
            .collect();
        let mut file = json!({ "files": files });
        if let Some(text) = text {
            file["text"] = json!(text);
        }
        self.content = json!({ "body": { "type": "file", "file": file } });
        self
    }

    /// A provider-side template (`projectId`, `version`, `locale`) with `key = value` string parameters.
    pub fn template<I, K, V>(
        mut self,
        project_id: Uuid,
        version: &str,
        locale: &str,
        params: I,
    ) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let parameters: Vec<Value> = params
            .into_iter()
            .map(|(k, v)| json!({ "type": "string", "key": k.into(), "value": v.into() }))
            .collect();
        self.content = json!({ "template": {
            "projectId": project_id, "version": version, "locale": locale, "parameters": parameters
        }});
        self
    }

    /// A WhatsApp message to an Instaply customer thread (`instaply_whatsapp` channel). Give it
    /// [`whatsapp_text`](Self::whatsapp_text), a [`fallback_template`](Self::fallback_template), or both.
    pub fn whatsapp(channel: impl Into<String>, customer_thread_id: impl Into<String>) -> Self {
        Self::raw(
            channel,
            json!({ "customerThreadId": customer_thread_id.into() }),
            json!({}),
        )
        .use_case(UseCase::Conversational)
    }

    /// Free text, sent while the thread's messaging window is open.
    pub fn whatsapp_text(mut self, text: impl Into<String>) -> Self {
        self.content_object()
            .insert("text".into(), json!(text.into()));
        self
    }

    /// The approved template (`contentSid`) used when the messaging window is closed.
    pub fn fallback_template(mut self, content_sid: impl Into<String>) -> Self {
        self.content_object()
            .insert("contentSid".into(), json!(content_sid.into()));
        self
    }

    /// After sending, set the thread's status (`waiting`, `replied` or `resolved`).
    pub fn then_thread_status(mut self, status: impl Into<String>) -> Self {
        self.content_object()
            .insert("updateThreadStatus".into(), json!(status.into()));
        self
    }

    /// A push broadcast (`insider_push` channel) to a segment or table of devices of the given applications.
    /// Target it with [`segment`](Self::segment) or [`table`](Self::table), and give it
    /// [`push_content`](Self::push_content) or [`multi_lang_content`](Self::multi_lang_content).
    pub fn push<I, S>(channel: impl Into<String>, application_ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let ids: Vec<String> = application_ids.into_iter().map(Into::into).collect();
        Self::raw(channel, json!({ "applicationIds": ids }), json!({}))
    }

    /// Send to the devices of a segment.
    pub fn segment(mut self, segment_id: Uuid) -> Self {
        self.recipient["segmentId"] = json!(segment_id);
        self
    }

    /// Send to the devices of a table.
    pub fn table(mut self, table_id: Uuid) -> Self {
        self.recipient["tableId"] = json!(table_id);
        self
    }

    /// Single-language push content (title, message, …) as the provider defines it.
    pub fn push_content(mut self, content: Value) -> Self {
        self.content_object().insert("content".into(), content);
        self
    }

    /// Multi-language push content.
    pub fn multi_lang_content(mut self, content: Value) -> Self {
        self.content_object()
            .insert("multiLangContent".into(), content);
        self
    }

    /// Only to the devices that engaged last (open or click events).
    pub fn last_engaged_only(mut self) -> Self {
        self.content_object()
            .insert("onlyLastEngaged".into(), json!(true));
        self
    }

    /// An "instant app" link (`instant_app` channel) to a US number (10 digits or +1 and 10 digits).
    pub fn instant_app(
        channel: impl Into<String>,
        phone: impl Into<String>,
        schema_api_id: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::raw(
            channel,
            json!({ "phone": phone.into() }),
            json!({ "message": message.into(), "instantAppSchemaApiId": schema_api_id.into() }),
        )
    }

    /// Parameters the instant app reads (`{"topic": "voting rights"}`).
    pub fn instant_app_parameters(mut self, parameters: Map<String, Value>) -> Self {
        self.content_object()
            .insert("instantAppParameters".into(), Value::Object(parameters));
        self
    }

    /// Send at this instant (in the past or within 10 minutes: now; at most 35 days ahead).
    pub fn scheduled_for(mut self, at: DateTime<Utc>) -> Self {
        self.scheduled_for = Some(at);
        self
    }

    /// Seconds the message stays worth sending, counted from the later of now and `scheduled_for`.
    pub fn validity(mut self, seconds: u32) -> Self {
        self.validity = Some(seconds);
        self
    }

    /// Why the message is sent.
    pub fn use_case(mut self, use_case: UseCase) -> Self {
        self.use_case = use_case;
        self
    }

    /// Send even inside the channel's quiet hours.
    pub fn ignore_quiet_hours(mut self) -> Self {
        self.ignore_quiet_hours = true;
        self
    }

    /// Apply the channel's frequency cap (marketing only).
    pub fn cap_frequency(mut self) -> Self {
        self.cap_frequency = true;
        self
    }

    /// 0 (first) to 9 (last); default 0.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Up to 10 tags; stored lower-cased.
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Your idempotency key: enqueueing the same reference on the same channel again returns the first id.
    pub fn reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = Some(reference.into());
        self
    }

    /// POST status callbacks for this message to `url` (instead of its channel's `callback_url`): its host must
    /// be in the worker config's `[callbacks] allowed_hosts`, else enqueue refuses it (`callback_url: ...`).
    pub fn callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    /// Appends a step to this message's fallback chain (at most 3): tried when the previous message of the chain
    /// ends as the step says. Each step is its own message, linked to this one by `chain_id`.
    pub fn fallback(mut self, step: Fallback) -> Self {
        self.fallback.push(step);
        self
    }

    /// The producer's W3C trace context (`00-<trace id>-<parent id>-<flags>`, as in the `traceparent` header of
    /// the request being served): the worker's span of each attempt links to it. Checked at enqueue.
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// The W3C `tracestate` that goes with [`traceparent`](Self::traceparent) (vendor entries, at most 512
    /// characters).
    pub fn tracestate(mut self, tracestate: impl Into<String>) -> Self {
        self.tracestate = Some(tracestate.into());
        self
    }

    /// Enqueues this message (inside the executor's transaction, if it is one) and returns its id.
    pub async fn enqueue<'e>(&self, executor: impl PgExecutor<'e>) -> Result<Uuid, Error> {
        let ids = crate::enqueue_many(executor, std::slice::from_ref(self)).await?;
        Ok(ids[0])
    }

    /// The JSON object sent to `tidings.enqueue_many`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a message serializes to JSON")
    }

    fn content_object(&mut self) -> &mut Map<String, Value> {
        if !self.content.is_object() {
            self.content = json!({});
        }
        self.content.as_object_mut().expect("content is an object")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_serializes_to_the_sql_shape() {
        let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let m = NewMessage::sms("sms", "+31612345678")
            .text("hi")
            .scheduled_for(at)
            .use_case(UseCase::TwoFactor)
            .tags(["A"])
            .reference("r-1")
            .to_json();
        assert_eq!(
            m,
            json!({
                "channel": "sms", "recipient": {"phone": "+31612345678"},
                "content": {"body": {"type": "text", "text": {"text": "hi"}}},
                "scheduled_for": "2030-01-02T03:04:05.000000Z", "use_case": "2fa",
                "tags": ["A"], "reference": "r-1"
            })
        );
    }

    #[test]
    fn callback_url_is_sent_only_when_set() {
        let m = NewMessage::sms("sms", "+31612345678").text("hi");
        assert!(m.to_json().get("callback_url").is_none());
        let m = m
            .callback_url("https://hooks.example.com/tidings")
            .to_json();
        assert_eq!(
            m["callback_url"],
            json!("https://hooks.example.com/tidings")
        );
    }

    #[test]
    fn whatsapp_keeps_text_and_fallback_together() {
        let m = NewMessage::whatsapp("wa", "42")
            .whatsapp_text("hello")
            .fallback_template("HX1")
            .to_json();
        assert_eq!(m["content"], json!({"text": "hello", "contentSid": "HX1"}));
        assert_eq!(m["use_case"], json!("conversational"));
    }

    #[test]
    fn a_fallback_chain_serializes_to_the_sql_shape() {
        let m = NewMessage::whatsapp("wa", "42")
            .whatsapp_text("hello")
            .fallback(
                Fallback::to(NewMessage::sms("sms", "+31612345678").text("hello"))
                    .on([Trigger::Rejected])
                    .undelivered_after(600),
            )
            .to_json();
        assert_eq!(
            m["fallback"],
            json!([{
                "channel": "sms", "recipient": {"phone": "+31612345678"},
                "content": {"body": {"type": "text", "text": {"text": "hello"}}},
                "on": ["rejected", "undelivered"], "after": 600
            }])
        );
        let plain = NewMessage::sms("sms", "+31612345678").text("x").to_json();
        assert!(plain.get("fallback").is_none());
    }

    #[test]
    fn trace_context_is_sent_only_when_given() {
        let plain = NewMessage::sms("sms", "+31612345678").text("hi").to_json();
        assert!(plain.get("traceparent").is_none() && plain.get("tracestate").is_none());
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let m = NewMessage::sms("sms", "+31612345678")
            .text("hi")
            .traceparent(tp)
            .tracestate("congo=t61rcWkgMzE")
            .to_json();
        assert_eq!(m["traceparent"], json!(tp));
        assert_eq!(m["tracestate"], json!("congo=t61rcWkgMzE"));
    }
}
