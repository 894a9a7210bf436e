//! The SQL producer API: validation rules, stored state, transactions, idempotency, cancel, roles.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tidings::store::Store;
use tidings_client::{Error, NewMessage, Status, UseCase};

async fn channels(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO tidings.channels (name, kind, policy) VALUES
           ('sms', 'sandbox', '{\"max_attempts\": 7}'), ('bird', 'bird_sms', '{\"validity\": {\"marketing\": 3600}}'),
           ('wa', 'instaply_whatsapp', '{}'), ('push', 'insider_push', '{}'),
           ('app', 'instant_app', '{}'), ('hook', 'webhook', '{}')",
    )
    .execute(pool)
    .await
    .unwrap();
}

fn sms() -> Value {
    json!({"channel": "sms", "recipient": {"phone": "+31612345678"},
           "content": {"body": {"type": "text", "text": {"text": "hi"}}}})
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

async fn invalid(pool: &PgPool, msg: Value) -> (String, String) {
    match tidings_client::enqueue_json(pool, json!([msg])).await {
        Err(Error::Invalid { field, rule, index }) => {
            assert_eq!(index, None, "a one-message batch names no index");
            (field, rule)
        }
        other => panic!("expected a validation error for {msg}, got {other:?}"),
    }
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn every_validation_rule_names_its_field(pool: PgPool) {
    channels(&pool).await;
    let far = (Utc::now() + Duration::days(36)).to_rfc3339();
    let text = json!({"body": {"type": "text", "text": {"text": "hi"}}});
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with(sms(), "channel", json!("nope")),
            "channel",
            "unknown channel",
        ),
        (
            with(sms(), "content", json!({})),
            "content",
            "exactly one of body or template",
        ),
        (
            with(
                sms(),
                "content",
                json!({"body": text["body"], "template": {"projectId": "ce6a2fd6-b2fa-4f5a-a2cd-f3bd15883318", "version": "1"}}),
            ),
            "content",
            "exactly one of body or template",
        ),
        (
            with(
                sms(),
                "content",
                json!({"body": {"type": "text", "text": {"text": ""}}}),
            ),
            "content.body.text.text",
            "1 to 10000",
        ),
        (
            with(sms(), "content", json!({"body": {"type": "video"}})),
            "content.body.type",
            "one of text, image, file",
        ),
        (
            with(
                sms(),
                "content",
                json!({"body": {"type": "image", "image": {"images": (0..11).map(|i| json!({"mediaUrl": format!("https://x/{i}.png")})).collect::<Vec<_>>()}}}),
            ),
            "content.body.image.images",
            "1 to 10",
        ),
        (
            with(sms(), "recipient", json!({"phone": "0612345678"})),
            "recipient.phone",
            "E.164",
        ),
        (
            with(sms(), "recipient", json!("+31612345678")),
            "recipient",
            "JSON object",
        ),
        (
            with(
                sms(),
                "recipient",
                json!({"phone": "+31612345678", "timezone": "Mars/Olympus"}),
            ),
            "recipient.timezone",
            "IANA",
        ),
        (
            with(sms(), "scheduled_for", json!(far)),
            "scheduled_for",
            "at most 35 days ahead",
        ),
        (
            with(sms(), "scheduled_for", json!("tomorrow")),
            "scheduled_for",
            "RFC 3339",
        ),
        (with(sms(), "validity", json!(0)), "validity", "positive"),
        (with(sms(), "validity", json!(-5)), "validity", "positive"),
        (
            with(sms(), "validity", json!(1.5)),
            "validity",
            "whole number",
        ),
        (
            with(
                sms(),
                "tags",
                json!((0..11).map(|i| format!("t{i}")).collect::<Vec<_>>()),
            ),
            "tags",
            "at most 10",
        ),
        (
            with(sms(), "cap_frequency", json!(true)),
            "cap_frequency",
            "only allowed with use_case marketing",
        ),
        (
            with(sms(), "use_case", json!("weekly")),
            "use_case",
            "one of transactional",
        ),
        (
            with(sms(), "priority", json!(10)),
            "priority",
            "0 (first) to 9 (last)",
        ),
        (
            with(sms(), "colour", json!("red")),
            "colour",
            "unknown field",
        ),
        (
            json!({"channel": "push", "recipient": {"applicationIds": ["a"], "segmentId": "ce6a2fd6-b2fa-4f5a-a2cd-f3bd15883318"},
                   "content": {"content": {"title": "t"}, "multiLangContent": {"en": {}}}}),
            "content",
            "exactly one of content or multiLangContent",
        ),
        (
            json!({"channel": "push", "recipient": {"applicationIds": ["a"]}, "content": {"content": {}}}),
            "recipient",
            "exactly one of segmentId or tableId",
        ),
        (
            json!({"channel": "wa", "recipient": {"customerThreadId": "9"}, "content": {}}),
            "content",
            "text, contentSid",
        ),
        (
            json!({"channel": "app", "recipient": {"phone": "12345"}, "content": {"message": "m", "instantAppSchemaApiId": "x"}}),
            "recipient.phone",
            "10-digit US number",
        ),
    ];
    for (msg, field, rule) in cases {
        let (got_field, got_rule) = invalid(&pool, msg.clone()).await;
        assert_eq!(got_field, field, "field for {msg}");
        assert!(
            got_rule.contains(rule),
            "rule {got_rule:?} should mention {rule:?} for {msg}"
        );
    }
    // Nothing was written by any refused call.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tidings.messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn sql_errors_carry_sqlstate_column_and_detail(pool: PgPool) {
    channels(&pool).await;
    let err = sqlx::query("SELECT tidings.enqueue(channel => 'sms', recipient => '{\"phone\": \"+31612345678\"}', content => '{}')")
        .execute(&pool)
        .await
        .unwrap_err();
    let db = err.as_database_error().expect("database error");
    assert_eq!(db.code().as_deref(), Some("22023"));
    assert_eq!(
        db.message(),
        "content: must have exactly one of body or template"
    );
    let pg = db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .unwrap();
    assert_eq!(pg.column(), Some("content"));
    assert_eq!(
        pg.detail(),
        Some("must have exactly one of body or template")
    );
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_bad_message_fails_the_whole_batch_and_names_its_index(pool: PgPool) {
    channels(&pool).await;
    let batch = json!([sms(), sms(), with(sms(), "validity", json!(0))]);
    match tidings_client::enqueue_json(&pool, batch).await {
        Err(Error::Invalid { field, index, .. }) => {
            assert_eq!(field, "validity");
            assert_eq!(index, Some(2));
        }
        other => panic!("{other:?}"),
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tidings.messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "all or nothing");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn valid_messages_are_stored_with_status_times_and_an_event(pool: PgPool) {
    channels(&pool).await;
    let store = Store::from_pool(pool.clone());
    let before: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&pool)
        .await
        .unwrap();

    // Due now: accepted, runs now, valid 36 h, the channel's max_attempts, lower-cased tags.
    let now_id = NewMessage::sms("sms", "+31612345678")
        .text("hi")
        .tags(["Promo", "B"])
        .enqueue(&pool)
        .await
        .unwrap();
    let m = store.message_get(now_id).await.unwrap().unwrap();
    assert_eq!(m["status"], "accepted");
    assert_eq!(m["max_attempts"], 7);
    assert_eq!(m["tags"], json!(["promo", "b"]));
    let run_at: DateTime<Utc> = serde_json::from_value(m["run_at"].clone()).unwrap();
    let expires: DateTime<Utc> = serde_json::from_value(m["expires_at"].clone()).unwrap();
    assert!(run_at >= before && run_at < before + Duration::seconds(5));
    assert_eq!(expires - run_at, Duration::seconds(129_600));

    // Exactly 10 minutes ahead still counts as "now"; further ahead is scheduled until then.
    let soon = Utc::now() + Duration::minutes(10) - Duration::seconds(1);
    let id = NewMessage::sms("sms", "+31612345678")
        .text("hi")
        .scheduled_for(soon)
        .enqueue(&pool)
        .await
        .unwrap();
    assert_eq!(
        store.message_get(id).await.unwrap().unwrap()["status"],
        "accepted"
    );
    let later = Utc::now() + Duration::hours(2);
    let id = NewMessage::sms("sms", "+31612345678")
        .text("hi")
        .scheduled_for(later)
        .use_case(UseCase::TwoFactor)
        .enqueue(&pool)
        .await
        .unwrap();
    let m = store.message_get(id).await.unwrap().unwrap();
    assert_eq!(m["status"], "scheduled");
    let run_at: DateTime<Utc> = serde_json::from_value(m["run_at"].clone()).unwrap();
    let expires: DateTime<Utc> = serde_json::from_value(m["expires_at"].clone()).unwrap();
    assert!((run_at - later).num_milliseconds().abs() < 1);
    assert_eq!(
        expires - run_at,
        Duration::seconds(600),
        "2fa: 10 minutes after scheduled_for"
    );

    // Exactly 35 days ahead is allowed; the channel's validity per use case applies.
    let edge = Utc::now() + Duration::days(35) - Duration::seconds(5);
    let id = NewMessage::sms("bird", "+31612345678")
        .text("hi")
        .use_case(UseCase::Marketing)
        .scheduled_for(edge)
        .enqueue(&pool)
        .await
        .unwrap();
    let m = store.message_get(id).await.unwrap().unwrap();
    let run_at: DateTime<Utc> = serde_json::from_value(m["run_at"].clone()).unwrap();
    let expires: DateTime<Utc> = serde_json::from_value(m["expires_at"].clone()).unwrap();
    assert_eq!(expires - run_at, Duration::seconds(3600));

    // One event per message, with the status it was stored in.
    let events = store.message_events(id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].status, Status::Scheduled);
    assert_eq!(events[0].reason, "enqueued");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn ids_are_uuid_v7_ordered_within_a_call_and_unique_across_calls(pool: PgPool) {
    channels(&pool).await;
    let batch: Vec<NewMessage> = (0..300)
        .map(|i| NewMessage::sms("sms", format!("+316{i:08}")).text("hi"))
        .collect();
    let before = Utc::now();
    let first = tidings_client::enqueue_many(&pool, &batch).await.unwrap();
    let second = tidings_client::enqueue_many(&pool, &batch).await.unwrap();
    let after = Utc::now();
    for id in first.iter().chain(&second) {
        assert_eq!(id.get_version_num(), 7, "{id}");
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        let (secs, nanos) = id.get_timestamp().expect("v7 carries a time").to_unix();
        let at = DateTime::<Utc>::from_timestamp(secs as i64, nanos).unwrap();
        assert!(
            at >= before - Duration::milliseconds(1) && at <= after,
            "{id}: {at} outside {before}..{after}"
        );
    }
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "ids follow input order within a call"
    );
    let all: std::collections::HashSet<_> = first.iter().chain(&second).collect();
    assert_eq!(all.len(), 600, "no id repeats across calls");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn rollback_leaves_nothing(pool: PgPool) {
    channels(&pool).await;
    let mut tx = pool.begin().await.unwrap();
    let id = NewMessage::sms("sms", "+31612345678")
        .text("hi")
        .enqueue(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(tidings_client::status(&pool, id).await.unwrap().is_none());
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM tidings.message_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 0);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn reference_makes_enqueue_idempotent(pool: PgPool) {
    channels(&pool).await;
    let m = NewMessage::sms("sms", "+31612345678")
        .text("hi")
        .reference("order-1");
    let first = m.enqueue(&pool).await.unwrap();
    let second = m.clone().enqueue(&pool).await.unwrap();
    assert_eq!(first, second);
    // Within one batch too, and across channels the same reference is another message.
    let ids = tidings_client::enqueue_many(
        &pool,
        &[
            m.clone(),
            m.clone(),
            NewMessage::sms("bird", "+31612345678")
                .text("hi")
                .reference("order-1"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(ids[0], first);
    assert_eq!(ids[1], first);
    assert_ne!(ids[2], first);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tidings.messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM tidings.message_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 2, "no event for the duplicates");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn cancel_only_before_processing(pool: PgPool) {
    channels(&pool).await;
    let store = Store::from_pool(pool.clone());
    let waiting = NewMessage::sms("sms", "+31612345678")
        .text("hi")
        .scheduled_for(Utc::now() + Duration::days(1))
        .enqueue(&pool)
        .await
        .unwrap();
    assert!(tidings_client::cancel(&pool, waiting).await.unwrap());
    assert!(
        !tidings_client::cancel(&pool, waiting).await.unwrap(),
        "already canceled"
    );
    let events = tidings_client::events(&pool, waiting).await.unwrap();
    assert_eq!(events.last().unwrap().status, Status::Canceled);
    assert_eq!(events.last().unwrap().reason, "canceled_by_producer");

    let due = NewMessage::sms("sms", "+31612345678")
        .text("hi")
        .enqueue(&pool)
        .await
        .unwrap();
    let claimed = store
        .message_claim(&tidings::store::ClaimParams {
            limit: 10,
            lease_id: uuid::Uuid::now_v7(),
            lease: std::time::Duration::from_secs(60),
            channels: &["sms".to_owned()],
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        !tidings_client::cancel(&pool, due).await.unwrap(),
        "a processing message cannot be canceled"
    );
    assert_eq!(
        tidings_client::status(&pool, due)
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Processing
    );
    assert!(
        !tidings_client::cancel(&pool, uuid::Uuid::now_v7())
            .await
            .unwrap(),
        "unknown id"
    );
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_producer_role_can_only_use_the_functions(pool: PgPool) {
    channels(&pool).await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE tidings_producer")
        .execute(&mut *tx)
        .await
        .unwrap();
    let id = NewMessage::sms("sms", "+31612345678")
        .text("hi")
        .enqueue(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        tidings_client::status(&mut *tx, id)
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Accepted
    );
    assert!(tidings_client::cancel(&mut *tx, id).await.unwrap());
    sqlx::query("SAVEPOINT s").execute(&mut *tx).await.unwrap();
    let err = sqlx::query("SELECT recipient FROM tidings.messages")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some("42501"),
        "no direct read"
    );
    sqlx::query("ROLLBACK TO SAVEPOINT s")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query("UPDATE tidings.messages SET status = 'sent'")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some("42501"),
        "no direct write"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// The request rules of the seed documents (issue 13, item 2): one row per rule, the same ids as the table in
// docs/channels.md. Each row is a valid message of the rule's shape (accepted here, and sent by
// `provider_contract::every_seed_rule_shape_reaches_the_provider_as_the_seed_requires`) and the same message
// breaking the rule (refused here with 22023 naming the field).

/// One request rule of a seed document.
pub(crate) struct SeedRule {
    /// The rule's id in docs/channels.md ("What enqueue checks").
    pub id: &'static str,
    /// A message (the keys of `tidings.enqueue`) of the rule's shape that is accepted; its channel is one of
    /// `channels()` (`bird` bird_sms, `wa` instaply_whatsapp, `push` insider_push, `app` instant_app, `hook`
    /// webhook).
    pub valid: Value,
    /// The same message breaking the rule, as JSON text (serde_json cannot hold a number such as 1e400).
    pub refused: String,
    /// The field the error names.
    pub field: &'static str,
    /// Words of the rule the error states.
    pub rule: &'static str,
}

/// The channel kind of each channel of `channels()`.
pub(crate) fn kind_of(channel: &str) -> &'static str {
    match channel {
        "sms" => "sandbox",
        "bird" => "bird_sms",
        "wa" => "instaply_whatsapp",
        "push" => "insider_push",
        "app" => "instant_app",
        "hook" => "webhook",
        other => panic!("no channel {other}"),
    }
}

const PROJECT: &str = "ce6a2fd6-b2fa-4f5a-a2cd-f3bd15883318";
const SEGMENT: &str = "0b7c2f5e-8a7d-4f8e-9a38-2f6d1c1e5a10";
const TABLE: &str = "9e1d4c2b-1f0a-4b6c-8d7e-3a2b1c0d9e8f";

fn msg(channel: &str, recipient: Value, content: Value) -> Value {
    json!({"channel": channel, "recipient": recipient, "content": content})
}

/// `base` with the JSON pointer `at` set to `value` (created when missing), or removed when `value` is None.
pub(crate) fn set(mut base: Value, at: &str, value: Option<Value>) -> Value {
    let (parent, key) = at.rsplit_once('/').unwrap();
    let target = base
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent} in the message"));
    match value {
        Some(v) => target[key] = v,
        None => {
            target.as_object_mut().unwrap().remove(key);
        }
    }
    base
}

/// `content` nested `levels` deep: `{"a": {"a": … 1}}` (the innermost value sits at depth `levels`).
pub(crate) fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
}

pub(crate) fn seed_rules() -> Vec<SeedRule> {
    let bird = |content: Value| msg("bird", json!({"phone": "+31612345678"}), content);
    let text =
        bird(json!({"body": {"type": "text", "text": {"text": "Your parcel arrives today"}}}));
    let image = bird(json!({"body": {"type": "image", "image": {
        "images": [{"mediaUrl": "https://cdn.example.com/a.png"}, {"mediaUrl": "https://cdn.example.com/b.png"}],
        "text": "Two pictures", "metadata": {"subject": "Pictures"}}}}));
    let file = bird(json!({"body": {"type": "file", "file": {
        "files": [{"mediaUrl": "https://cdn.example.com/v.mp4", "contentType": "video/mp4"},
                  {"mediaUrl": "https://cdn.example.com/a.mp3", "contentType": "audio/mpeg"}],
        "text": "Two files"}}}));
    let template = bird(
        json!({"template": {"projectId": PROJECT, "version": "latest", "locale": "en",
        "parameters": [{"type": "string", "key": "name", "value": "Robert"}]}}),
    );
    let wa = |recipient: Value, content: Value| msg("wa", recipient, content);
    let thread = json!({"customerThreadId": "9999"});
    let push = |recipient: Value, content: Value| msg("push", recipient, content);
    let segment = json!({"applicationIds": ["app-ios", "app-android"], "segmentId": SEGMENT});
    let sale = json!({"content": {"title": "Sale", "message": "Today only"}});
    let app = |content: Value| msg("app", json!({"phone": "+12125550123"}), content);
    let instant = app(
        json!({"message": "Let's schedule a time to talk about voting rights!",
        "instantAppSchemaApiId": "schema-42", "instantAppParameters": {"topic": "voting rights"}}),
    );
    let in_an_hour = (Utc::now() + Duration::hours(1)).to_rfc3339();
    let far = (Utc::now() + Duration::days(36)).to_rfc3339();
    let rule = |id, valid: &Value, refused: Value, field, rule| SeedRule {
        id,
        valid: valid.clone(),
        refused: refused.to_string(),
        field,
        rule,
    };
    vec![
        // Bird (seed 002).
        rule(
            "bird.receiver.phone",
            &text,
            set(text.clone(), "/recipient/phone", Some(json!("0612345678"))),
            "recipient.phone",
            "E.164",
        ),
        rule(
            "bird.body_or_template",
            &text,
            set(
                template.clone(),
                "/content/body",
                Some(text["content"]["body"].clone()),
            ),
            "content",
            "exactly one of body or template",
        ),
        rule(
            "bird.content.fields",
            &text,
            set(text.clone(), "/content/meta", Some(json!({}))),
            "content",
            "only body or template",
        ),
        rule(
            "bird.body.type",
            &text,
            set(text.clone(), "/content/body/type", Some(json!("video"))),
            "content.body.type",
            "one of text, image, file",
        ),
        rule(
            "bird.body.fields",
            &text,
            set(
                text.clone(),
                "/content/body/image",
                Some(image["content"]["body"]["image"].clone()),
            ),
            "content.body.image",
            "not allowed in a text body",
        ),
        rule(
            "bird.text.text",
            &text,
            set(text.clone(), "/content/body/text/text", Some(json!(""))),
            "content.body.text.text",
            "1 to 10000",
        ),
        rule(
            "bird.part.fields",
            &text,
            set(text.clone(), "/content/body/text/subject", Some(json!("S"))),
            "content.body.text.subject",
            "unknown field",
        ),
        rule(
            "bird.part.metadata",
            &image,
            set(
                image.clone(),
                "/content/body/image/metadata",
                Some(json!("Pictures")),
            ),
            "content.body.image.metadata",
            "must be an object",
        ),
        rule(
            "bird.media.count",
            &image,
            set(
                image.clone(),
                "/content/body/image/images",
                Some(json!(
                    (0..11)
                        .map(|i| json!({"mediaUrl": format!("https://x.example/{i}.png")}))
                        .collect::<Vec<_>>()
                )),
            ),
            "content.body.image.images",
            "1 to 10",
        ),
        rule(
            "bird.media.url",
            &image,
            set(
                image.clone(),
                "/content/body/image/images/0/mediaUrl",
                Some(json!("ftp://x.example/a.png")),
            ),
            "content.body.image.images",
            "http(s) mediaUrl",
        ),
        rule(
            "bird.media.text",
            &image,
            set(image.clone(), "/content/body/image/text", Some(json!(""))),
            "content.body.image.text",
            "1 to 10000",
        ),
        rule(
            "bird.file.contentType",
            &file,
            set(file.clone(), "/content/body/file/files/1/contentType", None),
            "content.body.file.files",
            "needs a contentType",
        ),
        rule(
            "bird.file.mime",
            &file,
            set(
                file.clone(),
                "/content/body/file/files/1/contentType",
                Some(json!("mp3")),
            ),
            "content.body.file.files",
            "MIME type",
        ),
        rule(
            "bird.template.projectId",
            &template,
            set(
                template.clone(),
                "/content/template/projectId",
                Some(json!("p-1")),
            ),
            "content.template.projectId",
            "UUID",
        ),
        rule(
            "bird.template.version",
            &template,
            set(
                template.clone(),
                "/content/template/version",
                Some(json!("")),
            ),
            "content.template.version",
            "non-empty",
        ),
        rule(
            "bird.template.locale",
            &template,
            set(template.clone(), "/content/template/locale", None),
            "content.template.locale",
            "required",
        ),
        rule(
            "bird.template.fields",
            &template,
            set(template.clone(), "/content/template/name", Some(json!("x"))),
            "content.template.name",
            "unknown field",
        ),
        rule(
            "bird.template.parameters",
            &template,
            set(
                template.clone(),
                "/content/template/parameters",
                Some(json!({})),
            ),
            "content.template.parameters",
            "must be an array",
        ),
        rule(
            "bird.template.parameter.shape",
            &template,
            set(template.clone(), "/content/template/parameters/0/key", None),
            "content.template.parameters",
            "a type and a key",
        ),
        rule(
            "bird.template.parameter.string",
            &template,
            set(
                template.clone(),
                "/content/template/parameters/0/value",
                Some(json!(5)),
            ),
            "content.template.parameters",
            "string value",
        ),
        rule(
            "bird.scheduledFor",
            &set(text.clone(), "/scheduled_for", Some(json!(in_an_hour))),
            set(text.clone(), "/scheduled_for", Some(json!(far))),
            "scheduled_for",
            "at most 35 days ahead",
        ),
        rule(
            "bird.validity",
            &set(text.clone(), "/validity", Some(json!(600))),
            set(text.clone(), "/validity", Some(json!(1.5))),
            "validity",
            "whole number",
        ),
        rule(
            "bird.tags",
            &set(text.clone(), "/tags", Some(json!(["Order", "shipping"]))),
            set(
                text.clone(),
                "/tags",
                Some(json!((0..11).map(|i| format!("t{i}")).collect::<Vec<_>>())),
            ),
            "tags",
            "at most 10",
        ),
        rule(
            "bird.capFrequency",
            &set(
                set(text.clone(), "/use_case", Some(json!("marketing"))),
                "/cap_frequency",
                Some(json!(true)),
            ),
            set(text.clone(), "/cap_frequency", Some(json!(true))),
            "cap_frequency",
            "only allowed with use_case marketing",
        ),
        // Instaply (seed 001).
        rule(
            "instaply.customerThreadId",
            &wa(
                json!({"customerThreadId": 9999}),
                json!({"text": "Hello, I am a bot."}),
            ),
            wa(
                json!({"customerThreadId": 1.5}),
                json!({"text": "Hello, I am a bot."}),
            ),
            "recipient.customerThreadId",
            "thread id",
        ),
        rule(
            "instaply.text_or_contentSid",
            &wa(thread.clone(), json!({"text": "Hello, I am a bot."})),
            wa(thread.clone(), json!({})),
            "content",
            "text, contentSid",
        ),
        rule(
            "instaply.text",
            &wa(thread.clone(), json!({"text": "Hello, I am a bot."})),
            wa(thread.clone(), json!({"text": ""})),
            "content.text",
            "1 to 10000",
        ),
        rule(
            "instaply.contentSid",
            &wa(
                thread.clone(),
                json!({"contentSid": "HXdf71e8696fbd234e0115c69a542cb1"}),
            ),
            wa(thread.clone(), json!({"contentSid": 5})),
            "content.contentSid",
            "template id",
        ),
        rule(
            "instaply.updateThreadStatus",
            &wa(
                thread.clone(),
                json!({"text": "Done.", "updateThreadStatus": "resolved"}),
            ),
            wa(
                thread.clone(),
                json!({"text": "Done.", "updateThreadStatus": "closed"}),
            ),
            "content.updateThreadStatus",
            "one of waiting, replied, resolved",
        ),
        rule(
            "instaply.fields",
            &wa(thread.clone(), json!({"text": "Hello, I am a bot."})),
            wa(
                thread.clone(),
                json!({"text": "Hello, I am a bot.", "internal": true}),
            ),
            "content.internal",
            "unknown field",
        ),
        // Insider (seed 004).
        rule(
            "insider.applicationIds",
            &push(segment.clone(), sale.clone()),
            push(
                set(segment.clone(), "/applicationIds", Some(json!([]))),
                sale.clone(),
            ),
            "recipient.applicationIds",
            "non-empty array",
        ),
        rule(
            "insider.segment_or_table",
            &push(
                json!({"applicationIds": ["app-web"], "tableId": TABLE}),
                sale.clone(),
            ),
            push(
                set(segment.clone(), "/tableId", Some(json!(TABLE))),
                sale.clone(),
            ),
            "recipient",
            "exactly one of segmentId or tableId",
        ),
        rule(
            "insider.audience.uuid",
            &push(segment.clone(), sale.clone()),
            push(
                set(segment.clone(), "/segmentId", Some(json!("seg-1"))),
                sale.clone(),
            ),
            "recipient.segmentId",
            "UUID",
        ),
        rule(
            "insider.content_or_multiLangContent",
            &push(
                segment.clone(),
                json!({"multiLangContent": {"en": {"title": "Sale"}, "fr": {"title": "Soldes"}}}),
            ),
            push(
                segment.clone(),
                json!({"content": sale["content"], "multiLangContent": {"en": {"title": "Sale"}}}),
            ),
            "content",
            "exactly one of content or multiLangContent",
        ),
        rule(
            "insider.content.object",
            &push(segment.clone(), sale.clone()),
            push(segment.clone(), json!({"content": "Sale"})),
            "content.content",
            "must be an object",
        ),
        rule(
            "insider.content.empty",
            &push(segment.clone(), sale.clone()),
            push(segment.clone(), json!({"content": {}})),
            "content.content",
            "must not be empty",
        ),
        rule(
            "insider.templateId.alone",
            &push(
                segment.clone(),
                json!({"content": {"templateId": "tmpl-42"}}),
            ),
            push(
                segment.clone(),
                json!({"content": {"templateId": "tmpl-42", "title": "Sale"}}),
            ),
            "content.content.title",
            "not allowed with templateId",
        ),
        rule(
            "insider.templateId",
            &push(segment.clone(), json!({"content": {"templateId": 42}})),
            push(segment.clone(), json!({"content": {"templateId": ""}})),
            "content.content.templateId",
            "template id",
        ),
        rule(
            "insider.onlyLastEngaged",
            &push(
                segment.clone(),
                set(sale.clone(), "/onlyLastEngaged", Some(json!(true))),
            ),
            push(
                segment.clone(),
                set(sale.clone(), "/onlyLastEngaged", Some(json!("yes"))),
            ),
            "content.onlyLastEngaged",
            "true or false",
        ),
        rule(
            "insider.fields",
            &push(segment.clone(), sale.clone()),
            push(
                segment.clone(),
                set(
                    sale.clone(),
                    "/scheduleDate",
                    Some(json!("2030-01-01T00:00:00Z")),
                ),
            ),
            "content.scheduleDate",
            "unknown field",
        ),
        // Instant app (seed 000).
        rule(
            "instant.phone",
            &set(
                instant.clone(),
                "/recipient/phone",
                Some(json!("2125550123")),
            ),
            set(instant.clone(), "/recipient/phone", Some(json!("12345"))),
            "recipient.phone",
            "10-digit US number",
        ),
        rule(
            "instant.message",
            &instant,
            set(
                instant.clone(),
                "/content/message",
                Some(json!("x".repeat(1601))),
            ),
            "content.message",
            "1 to 1600",
        ),
        rule(
            "instant.instantAppSchemaApiId",
            &instant,
            set(
                instant.clone(),
                "/content/instantAppSchemaApiId",
                Some(json!("")),
            ),
            "content.instantAppSchemaApiId",
            "non-empty",
        ),
        rule(
            "instant.parameters",
            &set(instant.clone(), "/content/instantAppParameters", None),
            set(
                instant.clone(),
                "/content/instantAppParameters",
                Some(json!(["voting rights"])),
            ),
            "content.instantAppParameters",
            "must be an object",
        ),
        rule(
            "instant.parameters.values",
            &set(
                instant.clone(),
                "/content/instantAppParameters",
                Some(json!({"topic": "voting rights", "slots": 3, "urgent": true})),
            ),
            set(
                instant.clone(),
                "/content/instantAppParameters",
                Some(json!({"topic": {"name": "voting rights"}})),
            ),
            "content.instantAppParameters",
            "string, number or boolean",
        ),
        rule(
            "instant.fields",
            &instant,
            set(
                instant.clone(),
                "/content/orgChannelApiId",
                Some(json!("org-chan-2")),
            ),
            "content.orgChannelApiId",
            "unknown field",
        ),
        // Every kind: what the worker can read and use.
        rule(
            "any.timezone",
            &set(
                text.clone(),
                "/recipient/timezone",
                Some(json!("America/New_York")),
            ),
            set(text.clone(), "/recipient/timezone", Some(json!("CEST"))),
            "recipient.timezone",
            "must be an IANA time zone name",
        ),
        rule(
            "any.depth",
            &msg("hook", json!({"user": 7}), nested(32)),
            msg("hook", json!({"user": 7}), nested(33)),
            "content",
            "nested deeper than 32 levels",
        ),
        SeedRule {
            id: "any.number_range",
            valid: msg(
                "hook",
                json!({"user": 7}),
                json!({"big": 1e308, "small": -1e308}),
            ),
            refused: r#"{"channel": "hook", "recipient": {"user": 7}, "content": {"big": 1e400}}"#
                .to_owned(),
            field: "content",
            rule: "between -1e308 and 1e308",
        },
    ]
}

/// Sends one message given as JSON text; the error's field (COLUMN) and message when refused with 22023.
async fn refusal(pool: &PgPool, message: &str) -> Option<(String, String)> {
    let err = sqlx::query("SELECT tidings.enqueue_many(jsonb_build_array($1::text::jsonb))")
        .bind(message)
        .execute(pool)
        .await
        .err()?;
    let db = err.as_database_error().expect("a database error");
    assert_eq!(db.code().as_deref(), Some("22023"), "{message}: {db}");
    let pg = db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .unwrap();
    Some((
        pg.column().unwrap_or_default().to_owned(),
        pg.message().to_owned(),
    ))
}

/// Issue 13, item 2: every request rule of the seed documents that can be checked from the message alone is
/// checked at enqueue. A valid message of each rule's shape is accepted; the same message breaking the rule is
/// refused with 22023 and `<field>: <rule>`. All rows are checked before failing, so a failure lists every rule
/// that does not hold.
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn every_seed_rule_is_enforced_at_enqueue(pool: PgPool) {
    channels(&pool).await;
    let mut failures = Vec::new();
    for r in seed_rules() {
        if let Err(e) = tidings_client::enqueue_json(&pool, json!([r.valid])).await {
            failures.push(format!("{}: the valid message was refused: {e}", r.id));
        }
        match refusal(&pool, &r.refused).await {
            Some((field, message)) if field == r.field && message.contains(r.rule) => {}
            other => failures.push(format!(
                "{}: expected `{}: …{}…`, got {other:?}",
                r.id, r.field, r.rule
            )),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The rules table of docs/channels.md ("What enqueue checks") lists exactly the rules tested here (and, through
/// the same list, in `provider_contract`), once each.
#[test]
fn the_rules_table_in_the_docs_is_the_tested_list() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/channels.md")).unwrap();
    let section = doc
        .split("\n## What enqueue checks")
        .nth(1)
        .expect("docs/channels.md has a section `## What enqueue checks`")
        .split("\n## ")
        .next()
        .unwrap();
    let mut in_doc: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| l.split('`').next().unwrap())
        .collect();
    let mut tested: Vec<&str> = seed_rules().iter().map(|r| r.id).collect();
    in_doc.sort_unstable();
    tested.sort_unstable();
    let unique: std::collections::BTreeSet<_> = tested.iter().collect();
    assert_eq!(unique.len(), tested.len(), "rule ids repeat");
    assert_eq!(in_doc, tested);
}

/// Issue 13, item 3: `recipient.timezone` is exactly a zone name the worker knows. PostgreSQL's `AT TIME ZONE`
/// also takes abbreviations, POSIX rules, other letter cases and `localtime`; the worker ignored what it could not
/// parse, so quiet hours ran in a zone nobody asked for.
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn recipient_timezone_is_a_zone_the_worker_knows(pool: PgPool) {
    channels(&pool).await;
    let zone = |tz: &str| {
        json!({"channel": "sms", "recipient": {"phone": "+31612345678", "timezone": tz},
               "content": {"body": {"type": "text", "text": {"text": "hi"}}}})
    };
    for tz in [
        "CEST",
        "PST",
        "XYZ+3",
        "EST5EDT,M3.2.0,M11.1.0",
        "europe/paris",
        "EUROPE/PARIS",
        "localtime",
        "posixrules",
        "Europe/Paris ",
        "UTC+3",
        "posix/Europe/Paris",
        "right/UTC",
        "Factory",
    ] {
        assert_eq!(
            invalid(&pool, zone(tz)).await,
            (
                "recipient.timezone".to_owned(),
                "must be an IANA time zone name".to_owned()
            ),
            "{tz:?}"
        );
    }
    for tz in [
        "Europe/Paris",
        "UTC",
        "America/Argentina/Buenos_Aires",
        "US/Pacific",
        "Etc/GMT+3",
        "EST",
    ] {
        assert!(tz.parse::<chrono_tz::Tz>().is_ok(), "the worker reads {tz}");
        tidings_client::enqueue_json(&pool, json!([zone(tz)]))
            .await
            .unwrap_or_else(|e| panic!("{tz}: {e}"));
    }
}

/// Issue 13, item 4: content or recipient the worker's JSON parser cannot represent is refused at enqueue:
/// deeper than 32 levels (serde_json stops at 128), numbers beyond ±1e308 (serde_json: "number out of range" for
/// 1e400, and for f64::MAX as PostgreSQL prints it). What is accepted parses, as PostgreSQL hands it back.
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn json_the_worker_cannot_read_is_refused(pool: PgPool) {
    channels(&pool).await;
    let arrays = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
    let hook = |recipient: &str, content: &str| {
        format!(r#"{{"channel": "hook", "recipient": {recipient}, "content": {content}}}"#)
    };
    let deep = |levels: usize| nested(levels).to_string();
    let refused = [
        (hook(r#"{"u": 1}"#, &deep(33)), "content", "nested deeper than 32 levels"),
        (hook(r#"{"u": 1}"#, &deep(200)), "content", "nested deeper than 32 levels"),
        (hook(r#"{"u": 1}"#, &format!(r#"{{"a": {}}}"#, arrays(32))), "content", "nested deeper than 32 levels"),
        (hook(&deep(33), r#"{"a": 1}"#), "recipient", "nested deeper than 32 levels"),
        (hook(r#"{"u": 1}"#, r#"{"a": 1e400}"#), "content", "between -1e308 and 1e308"),
        (hook(r#"{"u": 1}"#, r#"{"a": [1, -1e400]}"#), "content", "between -1e308 and 1e308"),
        // f64::MAX: PostgreSQL prints it as 309 digits, which serde_json's default parse reads as out of range.
        (hook(r#"{"u": 1}"#, r#"{"a": 1.7976931348623157e308}"#), "content", "between -1e308 and 1e308"),
        (hook(r#"{"u": 1}"#, r#"{"a": -1.5e308}"#), "content", "between -1e308 and 1e308"),
        (hook(r#"{"u": 1e400}"#, r#"{"a": 1}"#), "recipient", "between -1e308 and 1e308"),
        (r#"{"channel": "sms", "recipient": {"phone": "+31612345678"}, "content": {"body": {"type": "text", "text": {"text": "hi", "n": 1e309}}}}"#.to_owned(),
         "content", "between -1e308 and 1e308"),
    ];
    for (message, field, rule) in refused {
        let (got_field, got_message) = refusal(&pool, &message)
            .await
            .unwrap_or_else(|| panic!("accepted: {message}"));
        assert_eq!(got_field, field, "{message}");
        assert_eq!(
            got_message,
            format!("{field}: {}", got_message.split_once(": ").unwrap().1)
        );
        assert!(got_message.contains(rule), "{got_message} for {message}");
    }
    let accepted = [
        hook(r#"{"u": 1}"#, &deep(32)),
        hook(&deep(32), r#"{"a": 1}"#),
        hook(r#"{"u": 1}"#, &format!(r#"{{"a": {}}}"#, arrays(31))),
        hook(
            r#"{"u": 1}"#,
            r#"{"max": 1e308, "min": -1e308, "near": 9.99e307, "tiny": 1e-400}"#,
        ),
        hook(
            r#"{"u": 1}"#,
            r#"{"big": 123456789012345678901234567890, "precise": 0.1000000000000000055511151231257827}"#,
        ),
    ];
    for message in accepted {
        assert_eq!(refusal(&pool, &message).await, None, "{message}");
    }
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT recipient::text, content::text FROM tidings.messages")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), 5);
    for (recipient, content) in stored {
        for text in [recipient, content] {
            serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        }
    }
}

/// Issue 13, item 7: the ids of one call must not reveal each other. 0005 drew the random bits once per call, so
/// the ids of a batch shared all but the last 5 hex digits (their position). Every id now carries its own 62
/// random bits (the rand_b field of UUIDv7), still version 7, time-ordered and in input order within a call.
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn ids_of_one_call_do_not_reveal_each_other(pool: PgPool) {
    channels(&pool).await;
    let batch: Vec<NewMessage> = (0..400)
        .map(|i| NewMessage::sms("sms", format!("+316{i:08}")).text("hi"))
        .collect();
    let ids: Vec<uuid::Uuid> = [
        tidings_client::enqueue_many(&pool, &batch).await.unwrap(),
        tidings_client::enqueue_many(&pool, &batch).await.unwrap(),
    ]
    .concat();
    const RAND_B: u128 = (1 << 62) - 1;
    let rand_b: Vec<u128> = ids.iter().map(|id| id.as_u128() & RAND_B).collect();
    for (id, r) in ids.iter().zip(&rand_b) {
        assert_eq!(id.get_version_num(), 7, "{id}");
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        assert!(*r != 0, "{id}");
    }
    // Neighbours differ in about half of their 62 random bits (fewer than 10 has a chance below 1e-7 per pair).
    for (w, pair) in rand_b.windows(2).zip(ids.windows(2)) {
        let differing = (w[0] ^ w[1]).count_ones();
        assert!(
            differing >= 10,
            "{} and {} differ in only {differing} random bits",
            pair[0],
            pair[1]
        );
    }
    // No two ids share their last 12 hex digits (the position-only scheme shared all but the last 5).
    let tails: std::collections::HashSet<u128> = ids
        .iter()
        .map(|id| id.as_u128() & ((1 << 48) - 1))
        .collect();
    assert_eq!(tails.len(), ids.len());
    // Every one of the 62 bits varies: set in 25% to 75% of the 800 ids (a constant or counter bit is not).
    for bit in 0..62 {
        let set = rand_b.iter().filter(|r| *r >> bit & 1 == 1).count();
        assert!(
            (200..=600).contains(&set),
            "random bit {bit} is set in {set} of 800 ids"
        );
    }
    assert!(
        ids[..400].windows(2).all(|w| w[0] < w[1]) && ids[400..].windows(2).all(|w| w[0] < w[1]),
        "ids follow input order within a call"
    );
}
