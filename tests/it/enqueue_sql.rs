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
