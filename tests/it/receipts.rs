//! `POST /receipts/{channel}`: signature and freshness, matching by provider id or reference, the guarded
//! `sent → delivered | delivery_failed` transition with its event, idempotency, and every refusal.

use std::net::SocketAddr;

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgPool;
use tidings::config::Config;
use tidings::metrics::Metrics;
use tidings::receipts;
use tidings::receipts::Receipts;
use tidings_client::NewMessage;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::sync;

const SECRET: &str = "receipt-secret-4f9a1c";

/// `sms` takes receipts; `quiet` (no `receipt_secret_env`) does not.
fn config() -> Config {
    Config::parse(
        r#"
        [http]
        listen = "127.0.0.1:0"
        [channels.sms]
        kind = "sandbox"
        mode = "noop"
        receipt_secret_env = "SMS_RECEIPT_SECRET"
        [channels.quiet]
        kind = "sandbox"
        mode = "noop"
        [channels.other]
        kind = "sandbox"
        mode = "noop"
        receipt_secret_env = "OTHER_RECEIPT_SECRET"
        "#,
    )
    .unwrap()
}

fn env(var: &str) -> Option<String> {
    match var {
        "SMS_RECEIPT_SECRET" => Some(SECRET.to_owned()),
        "OTHER_RECEIPT_SECRET" => Some("another-secret-77".to_owned()),
        _ => None,
    }
}

/// The worker's HTTP listener on a free port, with this test's database.
struct Listener {
    addr: SocketAddr,
    metrics: Metrics,
    stop: CancellationToken,
    client: reqwest::Client,
}

impl Listener {
    async fn start(pool: &PgPool) -> Listener {
        let config = config();
        let store = sync(pool, &config).await;
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let secrets = Receipts::from_config(&config, &env).unwrap();
        let (addr, _task) = tidings::server::serve(
            "127.0.0.1:0".parse().unwrap(),
            store,
            metrics.clone(),
            secrets,
            stop.clone(),
        )
        .await
        .unwrap();
        Listener {
            addr,
            metrics,
            stop,
            client: reqwest::Client::new(),
        }
    }

    /// Posts `body` to `channel` signed with `secret` at `timestamp`.
    async fn post_signed(
        &self,
        channel: &str,
        body: &[u8],
        secret: &str,
        timestamp: i64,
    ) -> (u16, Value) {
        let ts = timestamp.to_string();
        let signature = receipts::sign(secret.as_bytes(), &ts, body);
        self.post_raw(
            channel,
            body.to_vec(),
            &[
                (receipts::TIMESTAMP_HEADER, ts),
                (receipts::SIGNATURE_HEADER, signature),
            ],
        )
        .await
    }

    /// Posts a JSON receipt to `sms`, signed now with the right secret.
    async fn post(&self, channel: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        self.post_signed(channel, &bytes, SECRET, Utc::now().timestamp())
            .await
    }

    async fn post_raw(
        &self,
        channel: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("http://{}/receipts/{channel}", self.addr))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert!(
            !text.trim_end().contains('\n'),
            "answers are one line: {text:?}"
        );
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn transitions(&self, status: &str, reason: &str) -> u64 {
        self.metrics
            .transitions
            .with_label_values(&["sms", status, reason])
            .get()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Enqueues a message on `channel` and marks it sent with `provider_id`, as the completer would.
async fn sent_message(pool: &PgPool, channel: &str, provider_id: &str) -> Uuid {
    let id = NewMessage::sms(channel, "+31612345678")
        .text("Your parcel arrives today")
        .enqueue(pool)
        .await
        .unwrap();
    set_status(pool, id, "sent", Some(provider_id)).await;
    id
}

async fn set_status(pool: &PgPool, id: Uuid, status: &str, provider_id: Option<&str>) {
    sqlx::query(
        "UPDATE tidings.messages SET status = $2::tidings.message_status, provider_message_id = $3, attempts = 1 WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(provider_id)
    .execute(pool)
    .await
    .unwrap();
}

async fn status_of(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status::text FROM tidings.messages WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The receipt events of a message: (status, reason, detail).
async fn receipt_events(pool: &PgPool, id: Uuid) -> Vec<(String, String, Value)> {
    sqlx::query_as(
        "SELECT status::text, reason, detail FROM tidings.message_events
          WHERE message_id = $1 AND reason LIKE 'receipt_%' ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn bird(id: Option<&str>, reference: Option<Uuid>, status: &str) -> Value {
    json!({
        "id": id,
        "reference": reference,
        "status": status,
        "reason": if status == "delivered" { Value::Null } else { json!("handset unreachable") },
        "lastStatusAt": "2026-11-21T10:00:00Z",
    })
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn good_signature_marks_delivered_with_one_event(pool: PgPool) {
    let listener = Listener::start(&pool).await;
    let id = sent_message(&pool, "sms", "bird-1").await;

    let (status, body) = listener
        .post("sms", &bird(Some("bird-1"), Some(id), "delivered"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "message_id": id, "status": "delivered", "changed": true })
    );
    assert_eq!(status_of(&pool, id).await, "delivered");
    let events = receipt_events(&pool, id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "delivered");
    assert_eq!(events[0].1, "receipt_delivered");
    assert_eq!(events[0].2["provider_at"], "2026-11-21T10:00:00Z");
    assert_eq!(events[0].2["provider_message_id"], "bird-1");
    assert_eq!(listener.transitions("delivered", "receipt_delivered"), 1);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn delivery_failed_records_the_providers_reason(pool: PgPool) {
    let listener = Listener::start(&pool).await;
    let id = sent_message(&pool, "sms", "bird-2").await;

    let (status, body) = listener
        .post("sms", &bird(Some("bird-2"), Some(id), "delivery_failed"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "delivery_failed");
    let events = receipt_events(&pool, id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, "receipt_delivery_failed");
    assert_eq!(events[0].2["provider_reason"], "handset unreachable");
    assert_eq!(events[0].2["provider_at"], "2026-11-21T10:00:00Z");
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM tidings.messages WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(last_error.as_deref(), Some("handset unreachable"));
    assert_eq!(
        listener.transitions("delivery_failed", "receipt_delivery_failed"),
        1
    );
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn matches_by_provider_message_id_alone(pool: PgPool) {
    let listener = Listener::start(&pool).await;
    let id = sent_message(&pool, "sms", "bird-only-id").await;
    let other = sent_message(&pool, "sms", "bird-someone-else").await;

    // Wrapped in a webhook envelope, with a reference that is not one of our ids.
    let receipt = json!({ "event": "sms.outbound", "payload": {
        "id": "bird-only-id", "reference": "order-42", "status": "delivered",
    }});
    let (status, body) = listener.post("sms", &receipt).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message_id"], json!(id));
    assert_eq!(status_of(&pool, id).await, "delivered");
    assert_eq!(status_of(&pool, other).await, "sent");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn matches_by_reference_alone(pool: PgPool) {
    let listener = Listener::start(&pool).await;
    let id = sent_message(&pool, "sms", "bird-3").await;

    let (status, body) = listener
        .post("sms", &bird(None, Some(id), "delivered"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message_id"], json!(id));
    assert_eq!(status_of(&pool, id).await, "delivered");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn bad_or_missing_signature_is_401(pool: PgPool) {
    let listener = Listener::start(&pool).await;
    let id = sent_message(&pool, "sms", "bird-4").await;
    let body = serde_json::to_vec(&bird(Some("bird-4"), Some(id), "delivered")).unwrap();
    let now = Utc::now().timestamp();

    let (status, answer) = listener
        .post_signed("sms", &body, "not-the-secret", now)
        .await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"], "x-tidings-signature: does not match");

    // The other channel's secret does not open this channel.
    let (status, _) = listener
        .post_signed("sms", &body, "another-secret-77", now)
        .await;
    assert_eq!(status, 401);

    let (status, answer) = listener
        .post_raw(
            "sms",
            body.clone(),
            &[(receipts::TIMESTAMP_HEADER, now.to_string())],
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"], "x-tidings-signature: is required");

    let (status, answer) = listener
        .post_raw(
            "sms",
            body.clone(),
            &[
                (receipts::TIMESTAMP_HEADER, now.to_string()),
                (receipts::SIGNATURE_HEADER, "sha256=zz".to_owned()),
            ],
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("x-tidings-signature")
    );

    // A body changed after signing.
    let signature = receipts::sign(SECRET.as_bytes(), &now.to_string(), &body);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (status, _) = listener
        .post_raw(
            "sms",
            tampered,
            &[
                (receipts::TIMESTAMP_HEADER, now.to_string()),
                (receipts::SIGNATURE_HEADER, signature),
            ],
        )
        .await;
    assert_eq!(status, 401);

    assert_eq!(status_of(&pool, id).await, "sent");
    assert!(receipt_events(&pool, id).await.is_empty());
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn replayed_old_timestamp_is_refused(pool: PgPool) {
    let listener = Listener::start(&pool).await;
    let id = sent_message(&pool, "sms", "bird-5").await;
    let body = serde_json::to_vec(&bird(Some("bird-5"), Some(id), "delivered")).unwrap();

    // Correctly signed, but 10 minutes ago: a captured callback replayed later.
    let old = Utc::now().timestamp() - 600;
    let (status, answer) = listener.post_signed("sms", &body, SECRET, old).await;
    assert_eq!(status, 401);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("x-tidings-timestamp: outside the accepted window"),
        "{answer}"
    );
    // Dated too far ahead, too.
    let ahead = Utc::now().timestamp() + 300;
    let (status, _) = listener.post_signed("sms", &body, SECRET, ahead).await;
    assert_eq!(status, 401);
    assert_eq!(status_of(&pool, id).await, "sent");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn duplicate_delivered_is_idempotent(pool: PgPool) {
    let listener = Listener::start(&pool).await;
    let id = sent_message(&pool, "sms", "bird-6").await;
    let receipt = bird(Some("bird-6"), Some(id), "delivered");

    let (first, _) = listener.post("sms", &receipt).await;
    let (second, body) = listener.post("sms", &receipt).await;
    assert_eq!((first, second), (200, 200));
    assert_eq!(
        body,
        json!({ "message_id": id, "status": "delivered", "changed": false })
    );
    assert_eq!(receipt_events(&pool, id).await.len(), 1, "still one event");
    assert_eq!(listener.transitions("delivered", "receipt_delivered"), 1);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn out_of_order_failure_after_delivered_stays_delivered(pool: PgPool) {
    let listener = Listener::start(&pool).await;
    let id = sent_message(&pool, "sms", "bird-7").await;

    let (s1, _) = listener
        .post("sms", &bird(Some("bird-7"), Some(id), "delivered"))
        .await;
    let (s2, body) = listener
        .post("sms", &bird(Some("bird-7"), Some(id), "delivery_failed"))
        .await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(body["status"], "delivered");
    assert_eq!(body["changed"], false);
    // An intermediate status arriving last is acknowledged and ignored.
    let (s3, body) = listener
        .post("sms", &bird(Some("bird-7"), Some(id), "sent"))
        .await;
    assert_eq!(s3, 200);
    assert_eq!(body, json!({ "ignored": "sent" }));

    assert_eq!(status_of(&pool, id).await, "delivered");
    let events = receipt_events(&pool, id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "delivered");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn receipt_before_sent_is_409_and_changes_nothing(pool: PgPool) {
    let listener = Listener::start(&pool).await;
    let id = sent_message(&pool, "sms", "bird-8").await;
    set_status(&pool, id, "processing", None).await;

    let (status, body) = listener
        .post("sms", &bird(None, Some(id), "delivered"))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("processing"));
    assert_eq!(status_of(&pool, id).await, "processing");
    assert!(receipt_events(&pool, id).await.is_empty());

    // Once the completer wrote `sent`, the provider's retry lands.
    set_status(&pool, id, "sent", Some("bird-8")).await;
    let (status, _) = listener
        .post("sms", &bird(None, Some(id), "delivered"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&pool, id).await, "delivered");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn unknown_message_or_channel_is_404(pool: PgPool) {
    let listener = Listener::start(&pool).await;
    let on_other = sent_message(&pool, "other", "bird-9").await;

    let (status, body) = listener
        .post(
            "sms",
            &bird(Some("nobody"), Some(Uuid::now_v7()), "delivered"),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_string());

    // A message of another channel cannot be moved with this channel's secret.
    let (status, _) = listener
        .post("sms", &bird(Some("bird-9"), Some(on_other), "delivered"))
        .await;
    assert_eq!(status, 404);
    assert_eq!(status_of(&pool, on_other).await, "sent");

    // No such channel, and a channel without receipt_secret_env: the same 404.
    for channel in ["nope", "quiet"] {
        let (status, body) = listener
            .post(channel, &bird(Some("x"), None, "delivered"))
            .await;
        assert_eq!(status, 404, "{channel}: {body}");
    }
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn bad_body_is_400_naming_the_field(pool: PgPool) {
    let listener = Listener::start(&pool).await;
    let cases = [
        (json!({ "id": "bird-1" }), "status: is required"),
        (
            json!({ "payload": { "id": "bird-1", "status": 7 } }),
            "payload.status: must be a string",
        ),
        (
            json!({ "status": "delivered" }),
            "id: a receipt needs id or reference",
        ),
        (
            json!({ "id": "b", "status": "delivered", "lastStatusAt": "yesterday" }),
            "lastStatusAt: must be an RFC 3339 timestamp",
        ),
    ];
    for (receipt, error) in cases {
        let (status, body) = listener.post("sms", &receipt).await;
        assert_eq!(status, 400, "{receipt}");
        assert_eq!(body["error"], error);
    }
    let (status, body) = listener
        .post_signed("sms", b"not json", SECRET, Utc::now().timestamp())
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("body: "));
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn oversize_body_is_413(pool: PgPool) {
    let listener = Listener::start(&pool).await;
    let id = sent_message(&pool, "sms", "bird-10").await;
    let mut receipt = bird(Some("bird-10"), Some(id), "delivered");
    receipt["padding"] = json!("x".repeat(tidings::receipts::MAX_RECEIPT_BODY));
    let (status, body) = listener.post("sms", &receipt).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"], "body: must be at most 65536 bytes");
    assert_eq!(status_of(&pool, id).await, "sent");
}

/// Moves `id` (finished two hours ago, created three hours ago) into the history; returns its new id.
async fn archived(pool: &PgPool, id: Uuid) -> Uuid {
    let new: Uuid = sqlx::query_scalar(
        "WITH n AS (SELECT tidings.uuid_v7(now() - interval '3 hours') AS id),
              m AS (UPDATE tidings.messages SET id = (SELECT id FROM n), updated_at = now() - interval '2 hours'
                     WHERE id = $1)
         UPDATE tidings.message_events SET message_id = (SELECT id FROM n) WHERE message_id = $1
         RETURNING (SELECT id FROM n)",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE tidings.event_rollup_state SET done_before = now()")
        .execute(pool)
        .await
        .unwrap();
    let store = tidings::store::Store::from_pool(pool.clone());
    let moved = store
        .history_move(Utc::now() - chrono::Duration::hours(1), None, 10)
        .await
        .unwrap();
    assert_eq!(moved.moved, 1);
    new
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_late_receipt_brings_its_message_back_from_the_history(pool: PgPool) {
    let listener = Listener::start(&pool).await;
    let by_provider_id = archived(&pool, sent_message(&pool, "sms", "bird-late").await).await;
    let by_reference = archived(&pool, sent_message(&pool, "sms", "bird-late-2").await).await;

    let (status, body) = listener
        .post("sms", &bird(Some("bird-late"), None, "delivered"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "message_id": by_provider_id, "status": "delivered", "changed": true })
    );
    let (status, body) = listener
        .post("sms", &bird(None, Some(by_reference), "delivery_failed"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "delivery_failed");

    // Back in the hot table, changed as any receipt changes a message, with the event of the change; the events
    // from before the move are still read with it.
    assert_eq!(status_of(&pool, by_provider_id).await, "delivered");
    assert_eq!(status_of(&pool, by_reference).await, "delivery_failed");
    assert_eq!(receipt_events(&pool, by_provider_id).await.len(), 1);
    let reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM tidings.events($1)")
        .bind(by_provider_id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(reasons, ["enqueued", "receipt_delivered"]);
    let archived_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tidings.message_history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(archived_rows, 0);

    // A duplicate changes nothing, wherever the message is.
    let (status, body) = listener
        .post("sms", &bird(Some("bird-late"), None, "delivered"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], false);
}
