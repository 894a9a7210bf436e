//! Fallback across channels (issue 17) through real workers, the sandbox provider over HTTP and signed receipts:
//! every trigger, the `undelivered` wait racing a receipt (both orders), a worker killed between the trigger and
//! the next send, cancel mid-chain, the chain's one validity, quiet hours on a step, a capped chain counting once,
//! idempotent enqueue by reference, and every bad chain refused at enqueue with 22023 naming `fallback[N].field`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgPool;
use tidings::app::sandbox_server::{Sandbox, SandboxOptions};
use tidings::config::Config;
use tidings::maintenance::Maintenance;
use tidings::metrics::Metrics;
use tidings::shutdown::Shutdown;
use tidings::store::Store;
use tidings::worker::{RunningWorker, Worker};
use tidings_client::{Fallback, NewMessage, Status, Trigger, UseCase};
use uuid::Uuid;

use crate::support::{ChildWorker, sync, url_of, wait_until};

const SECRET: &str = "fallback-receipt-secret-1";
const LIMIT: Duration = Duration::from_secs(30);

fn env(var: &str) -> Option<String> {
    match var {
        "FB_INSTAPLY_TOKEN" => Some("instaply-token".into()),
        "FB_RECEIPT_SECRET" => Some(SECRET.into()),
        _ => None,
    }
}

/// `wa` (Instaply WhatsApp) and `push` (takes receipts) and `sms` at the healthy sandbox `ok`; `flaky` (one
/// attempt) at `failing`; `sms_extra` is appended to `[channels.sms]`.
fn toml(ok: &str, failing: &str, sms_extra: &str) -> String {
    format!(
        r#"
[worker]
poll_interval = "50ms"
concurrency = 8
rescue_interval = "100ms"
lease = "4s"
[http]
listen = "127.0.0.1:0"
[channels.wa]
kind = "instaply_whatsapp"
base_url = "{ok}"
timeout = "2s"
token_env = "FB_INSTAPLY_TOKEN"
[channels.push]
kind = "sandbox"
base_url = "{ok}"
timeout = "2s"
receipt_secret_env = "FB_RECEIPT_SECRET"
[channels.flaky]
kind = "sandbox"
base_url = "{failing}"
timeout = "1s"
max_attempts = 1
[channels.sms]
kind = "sandbox"
base_url = "{ok}"
timeout = "2s" # sms
{sms_extra}
"#
    )
}

async fn sandbox(options: SandboxOptions) -> Sandbox {
    Sandbox::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap()
}

/// A healthy sandbox, a failing one, and a worker over both with its HTTP listener (for receipts).
struct Harness {
    pool: PgPool,
    ok: Sandbox,
    failing: Sandbox,
    config: Config,
    metrics: Metrics,
    shutdown: Shutdown,
    running: Option<RunningWorker>,
    http: SocketAddr,
}

impl Harness {
    async fn start(pool: &PgPool, failing: SandboxOptions, sms_extra: &str) -> Harness {
        Self::start_edited(pool, failing, sms_extra, |t| t).await
    }

    /// Like `start`, with the config's TOML passed through `edit` first.
    async fn start_edited(
        pool: &PgPool,
        failing: SandboxOptions,
        sms_extra: &str,
        edit: impl Fn(String) -> String,
    ) -> Harness {
        let ok = sandbox(SandboxOptions::default()).await;
        let failing = sandbox(failing).await;
        let config =
            Config::parse(&edit(toml(&ok.base_url(), &failing.base_url(), sms_extra))).unwrap();
        sync(pool, &config).await;
        let metrics = Metrics::new();
        let shutdown = Shutdown::new();
        let running = Worker::new(config.clone(), Store::from_pool(pool.clone()))
            .env(Arc::new(env))
            .metrics(metrics.clone())
            .shutdown(shutdown.clone())
            .serve_http_on("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let http = running.http_addr.unwrap();
        Harness {
            pool: pool.clone(),
            ok,
            failing,
            config,
            metrics,
            shutdown,
            running: Some(running),
            http,
        }
    }

    async fn stop(&mut self) {
        self.shutdown.stop.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.unwrap();
        }
    }

    /// Posts a signed receipt for message `id` on `channel`.
    async fn receipt(&self, channel: &str, id: Uuid, status: &str) -> Value {
        let body = serde_json::to_vec(&json!({
            "id": format!("provider-{id}"), "reference": id, "status": status,
            "lastStatusAt": Utc::now().to_rfc3339(),
        }))
        .unwrap();
        let ts = Utc::now().timestamp().to_string();
        let signature = tidings::receipts::sign(SECRET.as_bytes(), &ts, &body);
        let response = reqwest::Client::new()
            .post(format!("http://{}/receipts/{channel}", self.http))
            .header("content-type", "application/json")
            .header(tidings::receipts::TIMESTAMP_HEADER, ts)
            .header(tidings::receipts::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Requests the healthy sandbox saw for message `id` (its idempotency key).
    fn sends_of(&self, id: Uuid) -> usize {
        sends_to(&self.ok, id)
    }

    /// The metrics' fallback counter, after one more sample (what the workers' samplers had not taken yet).
    async fn fallback_count(&self, event: &str, trigger: &str, from: &str, to: &str) -> u64 {
        Maintenance::new(
            Store::from_pool(self.pool.clone()),
            self.metrics.clone(),
            &self.config,
        )
        .sample()
        .await;
        self.metrics
            .fallback_steps
            .with_label_values(&[event, trigger, from, to])
            .get()
    }
}

fn sends_to(sandbox: &Sandbox, id: Uuid) -> usize {
    let id = id.to_string();
    sandbox
        .requests()
        .iter()
        .filter(|r| r.route == "send" && r.idempotency_id.as_deref() == Some(id.as_str()))
        .count()
}

fn sms_text(text: &str) -> Value {
    json!({ "body": { "type": "text", "text": { "text": text } } })
}

/// A WhatsApp message to a thread whose window is closed, with no template: rejected (`window_closed`).
fn closed_whatsapp() -> NewMessage {
    NewMessage::raw(
        "wa",
        json!({ "customerThreadId": "closed-42", "phone": "+31612345678" }),
        json!({ "text": "Your table is ready" }),
    )
}

fn sms_step() -> Fallback {
    Fallback::to(NewMessage::raw(
        "sms",
        json!({}),
        sms_text("Your table is ready"),
    ))
}

async fn status_of(pool: &PgPool, id: Uuid) -> Status {
    tidings_client::status(pool, id)
        .await
        .unwrap()
        .unwrap()
        .status
}

/// The chain of `id` as (channel, status, trigger), in step order.
async fn chain(pool: &PgPool, id: Uuid) -> Vec<(String, Status, Option<String>)> {
    tidings_client::status(pool, id)
        .await
        .unwrap()
        .unwrap()
        .chain
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.channel, c.status, c.trigger))
        .collect()
}

/// The id of step `n` of chain `head`, once it exists.
async fn step(pool: &PgPool, head: Uuid, n: i16) -> Uuid {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM tidings.messages WHERE chain_id = $1 AND chain_step = $2",
        )
        .bind(head)
        .bind(n)
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some(id) = id {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for step {n} of {head}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_status(pool: &PgPool, id: Uuid, status: Status) {
    wait_until(LIMIT, &format!("{id} {status}"), || async {
        status_of(pool, id).await == status
    })
    .await;
}

/// (status, reason) of message `id`'s own events, oldest first.
async fn events_of(pool: &PgPool, id: Uuid) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT status::text, reason FROM tidings.message_events WHERE message_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn chain_len(pool: &PgPool, head: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tidings.messages WHERE chain_id = $1")
        .bind(head)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_rejected_whatsapp_message_falls_back_to_sms_and_the_chain_shows_everywhere(
    pool: PgPool,
) {
    let mut h = Harness::start(&pool, SandboxOptions::default(), "").await;
    let head = closed_whatsapp()
        .fallback(sms_step().on([Trigger::Rejected, Trigger::SendingFailed]))
        .enqueue(&pool)
        .await
        .unwrap();
    let sms = step(&pool, head, 1).await;
    wait_status(&pool, sms, Status::Sent).await;
    h.stop().await;

    assert_eq!(status_of(&pool, head).await, Status::Rejected);
    // One step, sent once, to the first message's phone (the step has no recipient of its own), under its own id.
    assert_eq!(h.sends_of(sms), 1);
    let (recipient, content, expires, head_expires): (Value, Value, chrono::DateTime<Utc>, chrono::DateTime<Utc>) =
        sqlx::query_as(
            "SELECT s.recipient, s.content, s.expires_at, f.expires_at
               FROM tidings.messages s JOIN tidings.messages f ON f.id = s.chain_id WHERE s.id = $1",
        )
        .bind(sms)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recipient["phone"], "+31612345678");
    assert_eq!(content, sms_text("Your table is ready"));
    assert_eq!(expires, head_expires, "one validity for the chain");

    // The step's first event names the trigger and the message before it.
    let (status, reason, detail): (String, String, Value) = sqlx::query_as(
        "SELECT status::text, reason, detail FROM tidings.message_events WHERE message_id = $1 ORDER BY id LIMIT 1",
    )
    .bind(sms)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("accepted", "fallback_rejected")
    );
    assert_eq!(detail["previous"], json!(head));
    assert_eq!(detail["chain_id"], json!(head));
    assert_eq!(detail["step"], 1);

    // tidings.status from either end shows the chain; tidings.events the whole chain's history.
    let expected = vec![
        ("wa".to_owned(), Status::Rejected, None),
        ("sms".to_owned(), Status::Sent, Some("rejected".to_owned())),
    ];
    assert_eq!(chain(&pool, head).await, expected);
    assert_eq!(chain(&pool, sms).await, expected);
    let st = tidings_client::status(&pool, sms).await.unwrap().unwrap();
    assert_eq!(st.chain_id, Some(head));
    let events = tidings_client::events(&pool, head).await.unwrap();
    let seen: Vec<(Uuid, &str)> = events
        .iter()
        .map(|e| (e.message, e.reason.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (head, "enqueued"),
            (head, "window_closed"),
            (sms, "fallback_rejected"),
            (sms, "provider_accepted"),
        ]
    );
    assert_eq!(events[2].channel.as_deref(), Some("sms"));

    // Metrics: one step created and sent for the pair.
    assert_eq!(
        h.fallback_count("created", "rejected", "wa", "sms").await,
        1
    );
    assert_eq!(h.fallback_count("sent", "rejected", "wa", "sms").await, 1);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn sending_failed_falls_back(pool: PgPool) {
    let mut h = Harness::start(
        &pool,
        SandboxOptions {
            fail_5xx: 1.0,
            ..Default::default()
        },
        "",
    )
    .await;
    let head = NewMessage::sms("flaky", "+31612345678")
        .text("code 1234")
        .fallback(sms_step().on([Trigger::SendingFailed]))
        .enqueue(&pool)
        .await
        .unwrap();
    let sms = step(&pool, head, 1).await;
    wait_status(&pool, sms, Status::Sent).await;
    h.stop().await;
    assert_eq!(status_of(&pool, head).await, Status::SendingFailed);
    assert_eq!(sends_to(&h.failing, head), 1);
    assert_eq!(h.sends_of(sms), 1);
    assert_eq!(events_of(&pool, sms).await[0].1, "fallback_sending_failed");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn expired_before_its_validity_ended_falls_back(pool: PgPool) {
    // A 429 whose Retry-After lands after the message's validity expires it at once (not at expires_at): the
    // chain's validity still has time, so the SMS goes out.
    let mut h = Harness::start(
        &pool,
        SandboxOptions {
            fail_429: 1.0,
            retry_after_secs: 7200,
            ..Default::default()
        },
        "",
    )
    .await;
    let head = NewMessage::sms("flaky", "+31612345678")
        .text("hello")
        .validity(1800)
        .fallback(sms_step().on([Trigger::Expired]))
        .enqueue(&pool)
        .await
        .unwrap();
    let sms = step(&pool, head, 1).await;
    wait_status(&pool, sms, Status::Sent).await;
    h.stop().await;
    assert_eq!(status_of(&pool, head).await, Status::Expired);
    assert_eq!(events_of(&pool, sms).await[0].1, "fallback_expired");
    assert_eq!(h.sends_of(sms), 1);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn an_outcome_the_step_does_not_name_ends_the_chain(pool: PgPool) {
    let mut h = Harness::start(&pool, SandboxOptions::default(), "").await;
    let head = closed_whatsapp()
        .fallback(sms_step().on([Trigger::SendingFailed]))
        .enqueue(&pool)
        .await
        .unwrap();
    wait_status(&pool, head, Status::Rejected).await;
    h.stop().await;
    assert_eq!(chain_len(&pool, head).await, 1);
}

/// A push message (its channel takes receipts) with an SMS step on `undelivered` after `after` seconds.
async fn push_then_sms(pool: &PgPool, after: u32) -> Uuid {
    NewMessage::sms("push", "+31612345678")
        .text("Your parcel is at the door")
        .fallback(sms_step().undelivered_after(after))
        .enqueue(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn no_receipt_within_after_sends_the_step(pool: PgPool) {
    let mut h = Harness::start(&pool, SandboxOptions::default(), "").await;
    let head = push_then_sms(&pool, 1).await;
    let sms = step(&pool, head, 1).await;
    wait_status(&pool, sms, Status::Sent).await;
    h.stop().await;
    assert_eq!(status_of(&pool, head).await, Status::Sent);
    assert_eq!(
        events_of(&pool, sms).await,
        vec![
            ("scheduled".into(), "fallback_awaiting_receipt".into()),
            ("sent".into(), "provider_accepted".into()),
        ]
    );
    // The wait is counted from `sent`.
    let (sent_at, run_at): (chrono::DateTime<Utc>, chrono::DateTime<Utc>) = sqlx::query_as(
        "SELECT (SELECT at FROM tidings.message_events WHERE message_id = $1 AND status = 'sent'),
                (SELECT (detail ->> 'receipt_wait_until')::timestamptz FROM tidings.message_events
                  WHERE message_id = $2 ORDER BY id LIMIT 1)",
    )
    .bind(head)
    .bind(sms)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(run_at - sent_at, chrono::Duration::seconds(1));
    assert_eq!(
        h.fallback_count("created", "undelivered", "push", "sms")
            .await,
        1
    );
    assert_eq!(
        h.fallback_count("sent", "undelivered", "push", "sms").await,
        1
    );
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_delivered_receipt_before_the_wait_ends_cancels_the_step(pool: PgPool) {
    let mut h = Harness::start(&pool, SandboxOptions::default(), "").await;
    let head = push_then_sms(&pool, 600).await;
    let sms = step(&pool, head, 1).await;
    assert_eq!(status_of(&pool, sms).await, Status::Scheduled);
    let answer = h.receipt("push", head, "delivered").await;
    assert_eq!(answer["status"], "delivered");
    assert_eq!(status_of(&pool, sms).await, Status::Canceled);
    assert_eq!(
        events_of(&pool, sms).await.last().unwrap(),
        &("canceled".to_owned(), "fallback_not_needed".to_owned())
    );
    h.stop().await;
    assert_eq!(
        h.sends_of(sms),
        0,
        "never sent to someone who already got the message"
    );
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_receipt_after_the_step_was_sent_stays_on_its_own_message(pool: PgPool) {
    let mut h = Harness::start(&pool, SandboxOptions::default(), "").await;
    let head = push_then_sms(&pool, 1).await;
    let sms = step(&pool, head, 1).await;
    wait_status(&pool, sms, Status::Sent).await;
    let before = events_of(&pool, sms).await;
    let answer = h.receipt("push", head, "delivered").await;
    assert_eq!(answer["changed"], true);
    h.stop().await;
    assert_eq!(status_of(&pool, head).await, Status::Delivered);
    assert_eq!(status_of(&pool, sms).await, Status::Sent);
    assert_eq!(
        events_of(&pool, sms).await,
        before,
        "nothing undone on the step"
    );
    assert_eq!(h.sends_of(sms), 1);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_delivery_failed_receipt_releases_the_step_at_once(pool: PgPool) {
    let mut h = Harness::start(&pool, SandboxOptions::default(), "").await;
    let head = push_then_sms(&pool, 3600).await;
    let sms = step(&pool, head, 1).await;
    h.receipt("push", head, "delivery_failed").await;
    // Sent long before the hour's wait would have ended.
    wait_status(&pool, sms, Status::Sent).await;
    h.stop().await;
    let reasons: Vec<String> = events_of(&pool, sms)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(
        reasons,
        [
            "fallback_awaiting_receipt",
            "fallback_delivery_failed",
            "provider_accepted"
        ]
    );
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn canceling_the_first_message_cancels_the_waiting_step_and_stops_the_chain(pool: PgPool) {
    let mut h = Harness::start(&pool, SandboxOptions::default(), "").await;
    let head = push_then_sms(&pool, 600).await;
    let sms = step(&pool, head, 1).await;
    assert_eq!(status_of(&pool, sms).await, Status::Scheduled);
    assert!(tidings_client::cancel(&pool, head).await.unwrap());
    assert_eq!(
        status_of(&pool, head).await,
        Status::Sent,
        "a sent message stays sent"
    );
    assert_eq!(status_of(&pool, sms).await, Status::Canceled);
    let (reason, detail): (String, Value) = sqlx::query_as(
        "SELECT reason, detail FROM tidings.message_events WHERE message_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(sms)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(reason, "canceled_by_producer");
    assert_eq!(detail["chain_id"], json!(head));
    // Nothing left to cancel.
    assert!(!tidings_client::cancel(&pool, head).await.unwrap());
    // A late delivery_failed receipt releases nothing.
    h.receipt("push", head, "delivery_failed").await;
    h.stop().await;
    assert_eq!(status_of(&pool, sms).await, Status::Canceled);
    assert_eq!(h.sends_of(sms), 0);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_chain_canceled_while_its_message_is_in_flight_grows_no_step(pool: PgPool) {
    // No worker: the first message is claimed by hand, then canceled (false: it is in flight), then rejected
    // by the completer's statement. The chain was canceled, so no step follows.
    let config = Config::parse(&toml("http://127.0.0.1:9", "http://127.0.0.1:9", "")).unwrap();
    sync(&pool, &config).await;
    let head = closed_whatsapp()
        .fallback(sms_step().on([Trigger::Rejected]))
        .enqueue(&pool)
        .await
        .unwrap();
    let lease = Uuid::now_v7();
    sqlx::query("UPDATE tidings.messages SET status = 'processing', lease_id = $2, locked_until = now() + interval '1 minute' WHERE id = $1")
        .bind(head)
        .bind(lease)
        .execute(&pool)
        .await
        .unwrap();
    assert!(!tidings_client::cancel(&pool, head).await.unwrap());
    let done: Vec<Uuid> = sqlx::query_scalar(include_str!(
        "../../src/store/queries/message_complete_many.sql"
    ))
    .bind(vec![head])
    .bind(vec![lease])
    .bind(vec!["rejected"])
    .bind(vec![None::<chrono::DateTime<Utc>>])
    .bind(vec![0])
    .bind(vec![None::<String>])
    .bind(vec![None::<String>])
    .bind(vec!["window_closed"])
    .bind(vec![None::<Value>])
    .bind(vec![Utc::now()])
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(done, vec![head]);
    assert_eq!(status_of(&pool, head).await, Status::Rejected);
    assert_eq!(chain_len(&pool, head).await, 1);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_worker_killed_between_the_trigger_and_the_next_send_loses_nothing(pool: PgPool) {
    // The SMS sandbox never answers: the child worker fails the first message (the step is created in that
    // transaction), claims the step, and is killed mid-send. A new worker rescues the step and sends it,
    // under the same idempotency key; nothing is created twice.
    let failing = sandbox(SandboxOptions {
        fail_5xx: 1.0,
        ..Default::default()
    })
    .await;
    let hanging = sandbox(SandboxOptions {
        hang: 1.0,
        ..Default::default()
    })
    .await;
    let child_toml = toml(&hanging.base_url(), &failing.base_url(), "")
        .replace("lease = \"4s\"", "lease = \"10s\"")
        .replace("timeout = \"2s\" # sms", "timeout = \"5s\"")
        .replace(
            "[channels.wa]\nkind = \"instaply_whatsapp\"",
            "[channels.wa]\nkind = \"sandbox\"",
        )
        .replace("token_env = \"FB_INSTAPLY_TOKEN\"\n", "")
        .replace("receipt_secret_env = \"FB_RECEIPT_SECRET\"\n", "");
    let config = Config::parse(&child_toml).unwrap();
    sync(&pool, &config).await;
    let head = NewMessage::sms("flaky", "+31612345678")
        .text("hello")
        .fallback(sms_step().on([Trigger::SendingFailed]))
        .enqueue(&pool)
        .await
        .unwrap();
    let url = url_of(&pool).await;
    let child = ChildWorker::spawn(&url, &child_toml);
    let sms = step(&pool, head, 1).await;
    wait_until(LIMIT, "the step's send reached the provider", || async {
        sends_to(&hanging, sms) == 1
    })
    .await;
    child.signal("KILL");
    child.wait(LIMIT).await;
    assert_eq!(status_of(&pool, sms).await, Status::Processing);

    // The provider answers again; a new worker takes over once the dead one's lease has expired.
    hanging.set_options(SandboxOptions::default());
    let pools = crate::support::start_pools(&pool, &config, 1).await;
    wait_status(&pool, sms, Status::Sent).await;
    pools.stop().await;
    assert_eq!(
        sends_to(&hanging, sms),
        2,
        "the same idempotency key both times"
    );
    assert_eq!(chain_len(&pool, head).await, 2);
    assert_eq!(status_of(&pool, head).await, Status::SendingFailed);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_chain_shares_one_validity(pool: PgPool) {
    // The SMS channel is paused, so the step waits; when the chain's validity ends, the step expires and the
    // next step (on `expired`) is not created: nothing of the chain goes out after the first's expires_at.
    let mut h = Harness::start(&pool, SandboxOptions::default(), "").await;
    sqlx::query(
        "INSERT INTO tidings.channel_state (channel, paused_until, pause_reason) VALUES ('sms', now() + interval '1 hour', 'test')
         ON CONFLICT (channel) DO UPDATE SET paused_until = excluded.paused_until",
    )
    .execute(&pool)
    .await
    .unwrap();
    let head = closed_whatsapp()
        .validity(2)
        .fallback(sms_step().on([Trigger::Rejected]))
        .fallback(
            Fallback::to(NewMessage::sms("push", "+31612345678").text("hi")).on([Trigger::Expired]),
        )
        .enqueue(&pool)
        .await
        .unwrap();
    let sms = step(&pool, head, 1).await;
    wait_status(&pool, sms, Status::Expired).await;
    h.stop().await;
    assert_eq!(
        chain_len(&pool, head).await,
        2,
        "no step after the chain's validity"
    );
    assert_eq!(h.sends_of(sms), 0);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_step_keeps_its_own_channels_quiet_hours(pool: PgPool) {
    // Quiet hours on the SMS channel around now: the marketing chain's SMS step is held, not sent.
    let now = Utc::now();
    // Wide enough to hold now in UTC and in the recipient's zone (from the +31 number: Europe/Amsterdam).
    let start = (now - chrono::Duration::hours(4)).format("%H:%M");
    let end = (now + chrono::Duration::hours(6)).format("%H:%M");
    let quiet = format!(
        "default_timezone = \"UTC\"\n[channels.sms.quiet_hours]\nstart = \"{start}\"\nend = \"{end}\"\n"
    );
    let mut h = Harness::start(&pool, SandboxOptions::default(), &quiet).await;
    let head = closed_whatsapp()
        .use_case(UseCase::Marketing)
        .fallback(sms_step().on([Trigger::Rejected]))
        .enqueue(&pool)
        .await
        .unwrap();
    let sms = step(&pool, head, 1).await;
    wait_until(LIMIT, "the step held by quiet hours", || async {
        events_of(&pool, sms)
            .await
            .iter()
            .any(|e| e.1 == "quiet_hours")
    })
    .await;
    h.stop().await;
    assert_eq!(status_of(&pool, sms).await, Status::Scheduled);
    assert_eq!(h.sends_of(sms), 0);
    let use_case: String =
        sqlx::query_scalar("SELECT use_case FROM tidings.messages WHERE id = $1")
            .bind(sms)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(use_case, "marketing", "the step is the chain's use case");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_capped_chain_counts_once_against_the_cap(pool: PgPool) {
    // Both channels are of kind sandbox, so they share one cap of 1 per hour: the first message takes it, and
    // the step (the same chain) is not counted again, so it is sent instead of being capped.
    let cap = "[channels.sms.frequency_cap]\nmax = 1\nper = \"1h\"\n";
    let mut h = Harness::start_edited(&pool, SandboxOptions::default(), cap, |t| {
        t.replace(
            "receipt_secret_env = \"FB_RECEIPT_SECRET\"\n",
            "receipt_secret_env = \"FB_RECEIPT_SECRET\"\n[channels.push.frequency_cap]\nmax = 1\nper = \"1h\"\n",
        )
    })
    .await;
    let head = NewMessage::sms("push", "+31612345678")
        .text("Sale today")
        .use_case(UseCase::Marketing)
        .cap_frequency()
        .fallback(sms_step().undelivered_after(1))
        .enqueue(&pool)
        .await
        .unwrap();
    let sms = step(&pool, head, 1).await;
    wait_status(&pool, sms, Status::Sent).await;
    let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM tidings.frequency_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(counted, 1);
    // A capped message outside the chain, to the same person, is capped.
    let other = NewMessage::sms("sms", "+31612345678")
        .text("Another sale")
        .use_case(UseCase::Marketing)
        .cap_frequency()
        .enqueue(&pool)
        .await
        .unwrap();
    wait_status(&pool, other, Status::Rejected).await;
    h.stop().await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_chain_enqueued_twice_by_reference_is_one_chain(pool: PgPool) {
    let config = Config::parse(&toml("http://127.0.0.1:9", "http://127.0.0.1:9", "")).unwrap();
    sync(&pool, &config).await;
    let message = closed_whatsapp()
        .reference("table-7-ready")
        .fallback(sms_step().on([Trigger::Rejected]));
    let first = message.enqueue(&pool).await.unwrap();
    let second = message.enqueue(&pool).await.unwrap();
    assert_eq!(first, second);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tidings.messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);

    let mut h = Harness::start(&pool, SandboxOptions::default(), "").await;
    let sms = step(&pool, first, 1).await;
    wait_status(&pool, sms, Status::Sent).await;
    // The same again after the chain ran: still the first id, nothing new.
    assert_eq!(message.enqueue(&pool).await.unwrap(), first);
    h.stop().await;
    assert_eq!(chain_len(&pool, first).await, 2);
    assert_eq!(h.sends_of(sms), 1);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn bad_chains_are_refused_with_22023_naming_the_step_and_field(pool: PgPool) {
    let config = Config::parse(&toml("http://127.0.0.1:9", "http://127.0.0.1:9", "")).unwrap();
    sync(&pool, &config).await;
    let text = sms_text("hi");
    let ok_step = json!({ "channel": "sms", "content": text, "on": ["rejected"] });
    let cases: Vec<(&str, Value, Value, &str)> = vec![
        (
            "unknown channel",
            json!({}),
            json!([{ "channel": "fax", "content": text, "on": ["rejected"] }]),
            "fallback[0].channel",
        ),
        (
            "same channel as the first",
            json!({}),
            json!([{ "channel": "wa", "content": {"text": "x"}, "on": ["rejected"] }]),
            "fallback[0].channel",
        ),
        (
            "same channel twice",
            json!({}),
            json!([ok_step, { "channel": "sms", "content": text, "on": ["rejected"] }]),
            "fallback[1].channel",
        ),
        (
            "more than 3 steps",
            json!({}),
            json!([ok_step, { "channel": "push", "content": text, "on": ["rejected"] },
                { "channel": "flaky", "content": text, "on": ["rejected"] },
                { "channel": "other", "content": text, "on": ["rejected"] }]),
            "fallback[3]",
        ),
        (
            "after without undelivered",
            json!({}),
            json!([{ "channel": "sms", "content": text, "on": ["rejected"], "after": 60 }]),
            "fallback[0].after",
        ),
        (
            "undelivered without after",
            json!({}),
            json!([{ "channel": "sms", "content": text, "on": ["undelivered"] }]),
            "fallback[0].after",
        ),
        (
            "undelivered after a channel without receipts",
            json!({}),
            json!([ok_step, { "channel": "push", "content": text, "on": ["undelivered"], "after": 60 }]),
            "fallback[1].on",
        ),
        (
            "an unknown trigger",
            json!({}),
            json!([{ "channel": "sms", "content": text, "on": ["bounced"] }]),
            "fallback[0].on",
        ),
        (
            "no trigger",
            json!({}),
            json!([{ "channel": "sms", "content": text, "on": [] }]),
            "fallback[0].on",
        ),
        (
            "content invalid for the step's kind",
            json!({}),
            json!([{ "channel": "sms", "content": {"text": "not the SMS shape"}, "on": ["rejected"] }]),
            "fallback[0].content",
        ),
        (
            "no recipient and the first has no phone",
            json!({ "customerThreadId": "t-1" }),
            json!([{ "channel": "sms", "content": text, "on": ["rejected"] }]),
            "fallback[0].recipient.phone",
        ),
        (
            "a recipient invalid for the step's kind",
            json!({}),
            json!([{ "channel": "sms", "recipient": {"phone": "0612"}, "content": text, "on": ["rejected"] }]),
            "fallback[0].recipient.phone",
        ),
        (
            "an unknown key",
            json!({}),
            json!([{ "channel": "sms", "content": text, "on": ["rejected"], "delay": 5 }]),
            "fallback[0].delay",
        ),
        (
            "not an array",
            json!({}),
            json!({ "channel": "sms" }),
            "fallback",
        ),
    ];
    for (what, recipient, fallback, field) in cases {
        let recipient = if recipient == json!({}) {
            json!({ "customerThreadId": "t-1", "phone": "+31612345678" })
        } else {
            recipient
        };
        let err = sqlx::query_scalar::<_, Uuid>(
            "SELECT tidings.enqueue('wa', $1, '{\"text\": \"hello\"}', fallback => $2)",
        )
        .bind(&recipient)
        .bind(&fallback)
        .fetch_one(&pool)
        .await
        .expect_err(what);
        let db = err.as_database_error().expect(what);
        assert_eq!(
            db.code().as_deref(),
            Some("22023"),
            "{what}: {}",
            db.message()
        );
        let rest = db.message().strip_prefix(field);
        assert!(
            rest.is_some_and(|r| r.starts_with(": ") || r.starts_with('.')),
            "{what}: {}",
            db.message()
        );
    }
    // The same rules through enqueue_many name the message too.
    let err = sqlx::query("SELECT tidings.enqueue_many($1)")
        .bind(json!([
            { "channel": "sms", "recipient": {"phone": "+31612345678"}, "content": text },
            { "channel": "wa", "recipient": {"customerThreadId": "t"}, "content": {"text": "x"},
              "fallback": [{ "channel": "fax", "content": text, "on": ["rejected"] }] },
        ]))
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        err.as_database_error()
            .unwrap()
            .message()
            .starts_with("messages[1].fallback[0].channel: unknown channel"),
        "{err}"
    );
    // And a good chain is accepted.
    let id: Uuid = sqlx::query_scalar(
        "SELECT tidings.enqueue('wa', '{\"customerThreadId\": \"t-1\", \"phone\": \"+31612345678\"}',
                                '{\"text\": \"hello\"}', fallback => $1)",
    )
    .bind(json!([ok_step, { "channel": "push", "content": text, "on": ["sending_failed", "expired"] }]))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(chain(&pool, id).await.len(), 1);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_http_api_takes_a_chain_and_shows_it(pool: PgPool) {
    let config = Config::parse(
        r#"
[api]
listen = "127.0.0.1:0"
[[api.tokens]]
name = "crm"
scope = "produce"
env = "FB_API_TOKEN"
[[api.tokens]]
name = "grafana"
scope = "read"
env = "FB_READ_TOKEN"
[channels.wa]
kind = "sandbox"
mode = "noop"
[channels.sms]
kind = "sandbox"
mode = "noop"
"#,
    )
    .unwrap();
    let store = sync(&pool, &config).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let token_env = |var: &str| match var {
        "FB_API_TOKEN" => Some("fb-api-token-123456".to_owned()),
        "FB_READ_TOKEN" => Some("fb-read-token-654321".to_owned()),
        _ => None,
    };
    let (addr, _task) = tidings::api::start(&config, store, &token_env, stop.clone())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let post = |body: Value| {
        http.post(format!("http://{addr}/v1/messages"))
            .bearer_auth("fb-api-token-123456")
            .json(&body)
            .send()
    };
    let mut message = json!({
        "channel": "wa", "recipient": {"phone": "+31612345678"}, "content": sms_text("hello"),
        "fallback": [{ "channel": "sms", "content": sms_text("hello by SMS"), "on": ["rejected"] }],
    });
    let created = post(message.clone()).await.unwrap();
    assert_eq!(created.status(), 201);
    let head: Uuid = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    message["fallback"][0]["channel"] = json!("wa");
    let refused = post(message).await.unwrap();
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["field"], "fallback[0].channel");

    // The first message is rejected (as a worker would write it): the step appears in the chain of both.
    sqlx::query("UPDATE tidings.messages SET status = 'rejected' WHERE id = $1")
        .bind(head)
        .execute(&pool)
        .await
        .unwrap();
    let sms = step(&pool, head, 1).await;
    for id in [head, sms] {
        let detail: Value = http
            .get(format!("http://{addr}/v1/messages/{id}"))
            .bearer_auth("fb-read-token-654321")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(detail["chain_id"], json!(head), "{detail}");
        assert_eq!(
            detail["chain"],
            json!([
                { "id": head, "channel": "wa", "status": "rejected", "step": 0, "trigger": null },
                { "id": sms, "channel": "sms", "status": "accepted", "step": 1, "trigger": "rejected" },
            ])
        );
    }
    stop.cancel();
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_operators_cancel_of_the_first_message_cancels_the_chains_waiting_step(pool: PgPool) {
    let config = Config::parse(&toml("http://127.0.0.1:9", "http://127.0.0.1:9", "")).unwrap();
    sync(&pool, &config).await;
    let head = push_then_sms(&pool, 600).await;
    // Sent (as the completer writes it): the SMS step now waits for a receipt.
    sqlx::query("UPDATE tidings.messages SET status = 'sent' WHERE id = $1")
        .bind(head)
        .execute(&pool)
        .await
        .unwrap();
    let sms = step(&pool, head, 1).await;
    assert_eq!(status_of(&pool, sms).await, Status::Scheduled);
    let url = url_of(&pool).await;
    let run = crate::support::tidings_cli(&url, &["cancel", &head.to_string()]).await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(status_of(&pool, sms).await, Status::Canceled);
    assert_eq!(status_of(&pool, head).await, Status::Sent);
    assert_eq!(
        events_of(&pool, sms).await.last().unwrap().1,
        "operator_cancel"
    );
}
