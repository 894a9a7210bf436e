//! Status callbacks (issue 14, item 6) end to end: the outbox written with each transition, delivered by real
//! workers to a real HTTP receiver in this test, signed (checked here by an independent Standard Webhooks
//! verification), retried through a receiver that is down, then failing, then back; in order per message; not
//! lost by a killed worker; never in the way of sending.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::PgPool;
use tidings::config::Config;
use tidings::shutdown::Shutdown;
use tidings::store::Store;
use tidings::worker::Worker;
use uuid::Uuid;

use crate::support::{self, wait_until};

/// The signing secret of these tests (Standard Webhooks form).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const LONG: Duration = Duration::from_secs(60);

fn env(var: &str) -> Option<String> {
    (var == "CB_SECRET").then(|| SECRET.to_owned())
}

/// What the receiver does with the next request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// 200.
    Ok,
    /// 500 for this many more requests, then Ok.
    Fail(u32),
    /// Never answers.
    Hang,
}

/// One request the receiver got, with what it answered.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    webhook_id: String,
    body: Value,
    answered_ok: bool,
}

#[derive(Clone)]
struct Receiver {
    mode: Arc<Mutex<Mode>>,
    log: Arc<Mutex<Vec<Received>>>,
    bad_signatures: Arc<Mutex<u32>>,
}

impl Receiver {
    fn new(mode: Mode) -> Receiver {
        Receiver {
            mode: Arc::new(Mutex::new(mode)),
            log: Default::default(),
            bad_signatures: Default::default(),
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn log(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Serves on `addr` (a port picked earlier, so the URL is known while the receiver is still down).
    async fn serve(&self, addr: SocketAddr) {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        self.serve_on(listener);
    }

    fn serve_on(&self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
}

async fn receive(
    State(r): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if !verify(
        SECRET,
        &header("webhook-id"),
        &header("webhook-timestamp"),
        &header("webhook-signature"),
        &body,
    ) {
        *r.bad_signatures.lock().unwrap() += 1;
    }
    let mode = {
        let mut m = r.mode.lock().unwrap();
        let now = *m;
        if let Mode::Fail(n) = now {
            *m = if n <= 1 { Mode::Ok } else { Mode::Fail(n - 1) };
        }
        now
    };
    let answered_ok = mode == Mode::Ok;
    let received = Received {
        path: uri.path().to_owned(),
        webhook_id: header("webhook-id"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered_ok,
    };
    // Logged before answering: the sender cannot act on the answer before it is in the log.
    r.log.lock().unwrap().push(received);
    if mode == Mode::Hang {
        std::future::pending::<()>().await;
    }
    if answered_ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// Standard Webhooks verification written from the spec, not with tidings' code: the key is the base64 after
/// `whsec_`; the signed content is `{id}.{timestamp}.{body}`; the header holds space-separated `v1,<base64>`.
fn verify(secret: &str, id: &str, timestamp: &str, signatures: &str, body: &[u8]) -> bool {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    if id.is_empty() || timestamp.parse::<i64>().is_err() {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = BASE64.encode(mac.finalize().into_bytes());
    signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

/// A free loopback port (bound and released, so the receiver can come up on it later).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// One noop sandbox channel `sms` (plus `channel_extra` keys), callbacks allowed to 127.0.0.1 and `*.example.org`.
fn config(channel_extra: &str, callbacks_extra: &str) -> Config {
    let timeout = if callbacks_extra.contains("timeout") {
        ""
    } else {
        "timeout = \"2s\""
    };
    Config::parse(&format!(
        r#"
[worker]
poll_interval = "50ms"
[channels.sms]
kind = "sandbox"
mode = "noop"
{channel_extra}
[callbacks]
allowed_hosts = ["127.0.0.1", "hooks.example.com", "*.example.org"]
secret_env = "CB_SECRET"
{timeout}
poll_interval = "50ms"
backoff = {{ base = "20ms", cap = "200ms" }}
{callbacks_extra}
"#
    ))
    .unwrap()
}

async fn start_worker(pool: &PgPool, config: &Config) -> Shutdown {
    let store = Store::connect(&support::url_of(pool).await, 8)
        .await
        .unwrap();
    let shutdown = Shutdown::new();
    Worker::new(config.clone(), store)
        .env(Arc::new(env))
        .shutdown(shutdown.clone())
        .start()
        .await
        .unwrap();
    shutdown
}

async fn enqueue(pool: &PgPool, n: usize, callback_url: Option<&str>) -> Vec<Uuid> {
    let messages: Vec<_> = (0..n)
        .map(|i| {
            let m = tidings_client::NewMessage::sms("sms", format!("+3161{i:07}")).text("hi");
            match callback_url {
                Some(url) => m.callback_url(url),
                None => m,
            }
        })
        .collect();
    tidings_client::enqueue_many(pool, &messages).await.unwrap()
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Receipts, as the receipt endpoint writes them: every `sent` message becomes `delivered`, one event each.
async fn deliver_all(pool: &PgPool) {
    sqlx::query(
        "WITH d AS (UPDATE tidings.messages SET status = 'delivered', updated_at = now()
                     WHERE status = 'sent' RETURNING id, attempts)
         INSERT INTO tidings.message_events (message_id, status, reason, attempt)
         SELECT id, 'delivered', 'receipt', attempts FROM d",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_receiver_down_then_failing_then_back_gets_every_callback_in_order(pool: PgPool) {
    let config = config("", "");
    support::sync(&pool, &config).await;
    let addr = free_addr();
    let ids = enqueue(&pool, 20, Some(&format!("http://{addr}/hooks/tidings?k=1"))).await;
    let shutdown = start_worker(&pool, &config).await;

    // Down: the port is closed. Every message is sent anyway, and its callback keeps failing to connect.
    wait_until(LONG, "every message sent", || async {
        support::count(&pool, "sent").await == 20
    })
    .await;
    wait_until(LONG, "callbacks retried against the closed port", || async {
        scalar(&pool, "SELECT count(*) FROM tidings.callback_outbox WHERE attempts >= 2 AND last_error = 'connect'").await == 20
    })
    .await;
    // More transitions arrive meanwhile: each message's `delivered` queues behind its `sent`.
    deliver_all(&pool).await;
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.callback_outbox").await,
        40
    );

    // Up, but answering 500 to the next 15 requests; then healthy.
    let receiver = Receiver::new(Mode::Fail(15));
    receiver.serve(addr).await;
    wait_until(LONG, "every callback delivered", || async {
        scalar(
            &pool,
            "SELECT count(*) FROM tidings.callback_outbox WHERE delivered_at IS NOT NULL",
        )
        .await
            == 40
    })
    .await;
    shutdown.stop.cancel();

    let log = receiver.log();
    assert_eq!(*receiver.bad_signatures.lock().unwrap(), 0, "{log:?}");
    assert!(log.iter().filter(|r| !r.answered_ok).count() == 15);
    for id in &ids {
        let mine: Vec<&Received> = log
            .iter()
            .filter(|r| r.body["data"]["id"] == json!(id))
            .collect();
        let ok: Vec<&str> = mine
            .iter()
            .filter(|r| r.answered_ok)
            .map(|r| r.body["type"].as_str().unwrap())
            .collect();
        // None missing, none twice once answered, in transition order.
        assert_eq!(ok, ["message.sent", "message.delivered"], "{id}: {mine:?}");
        // No `delivered` went out before its `sent` was answered 2xx.
        let first_delivered = mine
            .iter()
            .position(|r| r.body["type"] == "message.delivered")
            .unwrap();
        let sent_ok = mine
            .iter()
            .position(|r| r.body["type"] == "message.sent" && r.answered_ok)
            .unwrap();
        assert!(sent_ok < first_delivered, "{id}: {mine:?}");
        // The webhook-id of one callback is the same on every retry, and differs between callbacks.
        for kind in ["message.sent", "message.delivered"] {
            let webhook_ids: std::collections::BTreeSet<&str> = mine
                .iter()
                .filter(|r| r.body["type"] == kind)
                .map(|r| r.webhook_id.as_str())
                .collect();
            assert_eq!(webhook_ids.len(), 1, "{id} {kind}: {mine:?}");
        }
        let r = mine.iter().find(|r| r.answered_ok).unwrap();
        assert_eq!(r.path, "/hooks/tidings");
        let data = &r.body["data"];
        assert_eq!(data["channel"], "sms");
        assert_eq!(data["status"], "sent");
        assert_eq!(data["reason"], "provider_accepted");
        assert_eq!(data["attempt"], 1);
        assert!(data.get("recipient").is_none() && data.get("content").is_none());
        assert_eq!(r.body["timestamp"], data["at"]);
    }
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_worker_killed_mid_delivery_loses_no_callback(pool: PgPool) {
    let receiver = Receiver::new(Mode::Hang);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    receiver.serve_on(listener);
    let toml = format!(
        r#"
[worker]
poll_interval = "50ms"
[http]
listen = "127.0.0.1:0"
[channels.sms]
kind = "sandbox"
mode = "noop"
callback_url = "http://{addr}/cb"
[callbacks]
secret_env = "CB_SECRET"
timeout = "3s"
poll_interval = "50ms"
backoff = {{ base = "20ms", cap = "100ms" }}
"#
    );
    let config = Config::parse(&toml).unwrap();
    support::sync(&pool, &config).await;
    let ids = enqueue(&pool, 5, None).await;

    // A real worker process, killed while the receiver holds its POSTs open.
    let path = std::env::temp_dir().join(format!("tidings-cb-{}.toml", Uuid::now_v7()));
    std::fs::write(&path, &toml).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["worker", "--config"])
        .arg(&path)
        .env("DATABASE_URL", support::url_of(&pool).await)
        .env("CB_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(LONG, "the receiver holds a callback open", || async {
        !receiver.log().is_empty()
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_file(&path);

    // Another worker takes over once the lease ends; the receiver answers now.
    receiver.set(Mode::Ok);
    let shutdown = start_worker(&pool, &config).await;
    wait_until(LONG, "every callback delivered", || async {
        scalar(
            &pool,
            "SELECT count(*) FROM tidings.callback_outbox WHERE delivered_at IS NOT NULL",
        )
        .await
            == 5
    })
    .await;
    shutdown.stop.cancel();
    let log = receiver.log();
    for id in &ids {
        assert!(
            log.iter()
                .any(|r| r.answered_ok && r.path == "/cb" && r.body["data"]["id"] == json!(id)),
            "{id}: {log:?}"
        );
    }
    assert_eq!(*receiver.bad_signatures.lock().unwrap(), 0);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_receiver_that_hangs_forever_does_not_stop_sending(pool: PgPool) {
    let receiver = Receiver::new(Mode::Hang);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    receiver.serve_on(listener);
    // Callback POSTs may hang for ten minutes; two at a time.
    let config = config("", "concurrency = 2\ntimeout = \"10m\"");
    support::sync(&pool, &config).await;
    enqueue(&pool, 300, Some(&format!("http://{addr}/"))).await;
    let shutdown = start_worker(&pool, &config).await;
    wait_until(LONG, "the receiver holds both callback slots", || async {
        receiver.log().len() == 2
    })
    .await;
    wait_until(LONG, "every message sent", || async {
        support::count(&pool, "sent").await == 300
    })
    .await;
    assert_eq!(receiver.log().len(), 2);
    // Stopping does not wait for the hung receiver: the held callbacks are handed back.
    shutdown.stop.cancel();
    wait_until(LONG, "held callbacks handed back", || async {
        scalar(
            &pool,
            "SELECT count(*) FROM tidings.callback_outbox WHERE lease_id IS NOT NULL",
        )
        .await
            == 0
    })
    .await;
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM tidings.callback_outbox WHERE delivered_at IS NULL"
        )
        .await,
        300
    );
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn callback_hosts_are_the_configs_and_enqueue_refuses_others(pool: PgPool) {
    let config = config("", "");
    support::sync(&pool, &config).await;
    let enqueue_sql = |url: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>(
                "SELECT tidings.enqueue('sms', '{\"phone\": \"+31612345678\"}', \
                 '{\"body\": {\"type\": \"text\", \"text\": {\"text\": \"hi\"}}}', callback_url => $1)",
            )
            .bind(url)
            .fetch_one(&pool)
            .await
        }
    };
    for ok in [
        "https://hooks.example.com/x",
        "https://HOOKS.example.com:8443/x",
        "https://a.example.org/cb",
        "https://deep.a.example.org",
        "http://127.0.0.1:9/x",
    ] {
        enqueue_sql(ok)
            .await
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "https://example.org/apex-is-not-a-subdomain",
        "https://evil.example.net/x",
        "https://hooks.example.com.evil.net/x",
    ] {
        let err = enqueue_sql(bad).await.unwrap_err();
        let db = err.as_database_error().unwrap();
        assert_eq!(db.code().as_deref(), Some("22023"), "{bad}");
        assert!(
            db.message().starts_with("callback_url: host ")
                && db
                    .message()
                    .ends_with("is not in [callbacks] allowed_hosts"),
            "{bad}: {}",
            db.message()
        );
    }

    // A host taken out of the config is refused once any process syncs.
    let narrower = Config::parse(
        "[channels.sms]\nkind = \"sandbox\"\nmode = \"noop\"\n[callbacks]\nallowed_hosts = [\"hooks.example.com\"]\nsecret_env = \"CB_SECRET\"\n",
    )
    .unwrap();
    support::sync(&pool, &narrower).await;
    enqueue_sql("https://hooks.example.com/x").await.unwrap();
    assert!(enqueue_sql("https://a.example.org/cb").await.is_err());

    // The HTTP API answers 422 naming the field.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut api_config = narrower.clone();
    api_config.api.listen = "127.0.0.1:0".parse().unwrap();
    let (addr, _task) = tidings::api::start(
        &api_config,
        Store::from_pool(pool.clone()),
        &env,
        stop.clone(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let message = |url: &str| {
        json!({"channel": "sms", "recipient": {"phone": "+31612345678"},
               "content": {"body": {"type": "text", "text": {"text": "hi"}}}, "callback_url": url})
    };
    let r = http
        .post(format!("http://{addr}/v1/messages"))
        .json(&message("https://evil.example.net/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "callback_url", "{body}");
    let r = http
        .post(format!("http://{addr}/v1/messages/batch"))
        .json(&json!({"messages": [message("https://hooks.example.com/ok"), message("ftp://hooks.example.com/x")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "callback_url", "{body}");
    assert_eq!(body["error"]["index"], 1, "{body}");
    let r = http
        .post(format!("http://{addr}/v1/messages"))
        .json(&message("https://hooks.example.com/ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    stop.cancel();

    // Config errors name the key.
    let err = |t: &str| Config::parse(t).unwrap_err().to_string();
    assert!(
        err("[callbacks]\nallowed_hosts = [\"hooks.example.com\"]")
            .contains("callbacks.secret_env: is required")
    );
    assert!(
        err("[callbacks]\nsecret_env = \"X\"\nallowed_hosts = [\"https://x.com/\"]")
            .contains("callbacks.allowed_hosts[0]")
    );
    assert!(
        err("[channels.a]\nkind = \"sandbox\"\ncallback_url = \"ftp://x\"\n[callbacks]\nsecret_env = \"X\"")
            .contains("channels.a.callback_url")
    );
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_channels_callback_url_serves_its_messages_and_a_messages_own_url_wins(pool: PgPool) {
    let receiver = Receiver::new(Mode::Ok);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    receiver.serve_on(listener);
    let config = config(&format!("callback_url = \"http://{addr}/channel\""), "");
    support::sync(&pool, &config).await;
    let plain = enqueue(&pool, 3, None).await;
    let own = enqueue(&pool, 2, Some(&format!("http://{addr}/own"))).await;
    let shutdown = start_worker(&pool, &config).await;
    wait_until(LONG, "every callback delivered", || async {
        scalar(
            &pool,
            "SELECT count(*) FROM tidings.callback_outbox WHERE delivered_at IS NOT NULL",
        )
        .await
            == 5
    })
    .await;
    shutdown.stop.cancel();
    let log = receiver.log();
    let path_of = |id: &Uuid| -> Vec<String> {
        log.iter()
            .filter(|r| r.body["data"]["id"] == json!(id))
            .map(|r| r.path.clone())
            .collect()
    };
    for id in &plain {
        assert_eq!(path_of(id), ["/channel"]);
    }
    for id in &own {
        assert_eq!(path_of(id), ["/own"]);
    }

    // The API shows a message's callbacks inline, the URL's host only.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut api_config = config.clone();
    api_config.api.listen = "127.0.0.1:0".parse().unwrap();
    let (api, _task) = tidings::api::start(
        &api_config,
        Store::from_pool(pool.clone()),
        &env,
        stop.clone(),
    )
    .await
    .unwrap();
    let detail: Value = reqwest::get(format!("http://{api}/v1/messages/{}", own[0]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stop.cancel();
    let callbacks = detail["callbacks"].as_array().unwrap();
    assert_eq!(callbacks.len(), 1, "{detail}");
    let c = &callbacks[0];
    assert_eq!(c["status"], "sent");
    assert_eq!(c["host"], json!(addr.to_string()));
    assert_eq!(c["attempts"], 1);
    assert!(c["delivered_at"].is_string() && c["given_up_at"].is_null());
    assert!(c["next_attempt_at"].is_null());
    assert!(!detail.to_string().contains("/own"), "{detail}");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_outbox_row_is_written_in_the_transitions_transaction(pool: PgPool) {
    let config = config("", "");
    support::sync(&pool, &config).await;
    async fn schedule(tx: &mut sqlx::PgConnection) -> sqlx::Result<Uuid> {
        sqlx::query_scalar::<_, Uuid>(
            "SELECT tidings.enqueue('sms', '{\"phone\": \"+31612345678\"}', \
             '{\"body\": {\"type\": \"text\", \"text\": {\"text\": \"hi\"}}}', \
             scheduled_for => now() + interval '1 day', callback_url => 'https://hooks.example.com/x')",
        )
        .fetch_one(tx)
        .await
    }
    // Rolled back: enqueue and cancel leave no message and no callback.
    let mut tx = pool.begin().await.unwrap();
    let id = schedule(&mut tx).await.unwrap();
    let canceled: bool = sqlx::query_scalar("SELECT tidings.cancel($1)")
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(canceled);
    let inside: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tidings.callback_outbox WHERE message_id = $1 AND status = 'canceled'",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        inside, 1,
        "written with the cancel, visible inside its transaction"
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.callback_outbox").await,
        0
    );
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.messages").await,
        0
    );

    // Committed: the canceled message has its callback, and only for the statuses a producer hears about.
    let mut tx = pool.begin().await.unwrap();
    let id = schedule(&mut tx).await.unwrap();
    sqlx::query("SELECT tidings.cancel($1)")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT status::text, reason, url FROM tidings.callback_outbox WHERE message_id = $1",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [(
            "canceled".to_owned(),
            "canceled_by_producer".to_owned(),
            "https://hooks.example.com/x".to_owned()
        )]
    );

    // A message that asked for nothing gets no outbox row.
    let plain = enqueue(&pool, 1, None).await[0];
    sqlx::query("SELECT tidings.cancel($1)")
        .bind(plain)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.callback_outbox").await,
        1
    );

    // A message that moves to the history keeps its callbacks (GET /v1/messages/{id} lists them); they are
    // pruned once over and past the retention.
    let mut moving = config.clone();
    moving.worker.history_after = Duration::ZERO;
    sqlx::query("UPDATE tidings.messages SET updated_at = now() - interval '1 minute'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE tidings.event_rollup_state SET done_before = now() + interval '10 minutes'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let store = Store::from_pool(pool.clone());
    let messages = scalar(&pool, "SELECT count(*) FROM tidings.messages").await;
    tidings::maintenance::Maintenance::new(
        store.clone(),
        tidings::metrics::Metrics::new(),
        &moving,
    )
    .history()
    .await;
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.messages").await,
        0
    );
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.message_history").await,
        messages
    );
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.callback_outbox").await,
        1
    );
    let later = chrono::Utc::now() + chrono::Duration::minutes(1);
    assert_eq!(
        store.callback_prune(later, 10).await.unwrap(),
        0,
        "not over yet"
    );
    sqlx::query("UPDATE tidings.callback_outbox SET delivered_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(store.callback_prune(later, 10).await.unwrap(), 1);
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.callback_outbox").await,
        0
    );
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_callback_failing_past_max_age_is_given_up_and_the_next_one_goes_out(pool: PgPool) {
    // Retries stop 300 ms after the transition.
    let config = config("", "max_age = \"300ms\"");
    support::sync(&pool, &config).await;
    let addr = free_addr();
    let ids = enqueue(&pool, 3, Some(&format!("http://{addr}/cb"))).await;
    let store = Store::connect(&support::url_of(&pool).await, 8)
        .await
        .unwrap();
    let metrics = tidings::metrics::Metrics::new();
    let shutdown = Shutdown::new();
    Worker::new(config.clone(), store)
        .env(Arc::new(env))
        .metrics(metrics.clone())
        .shutdown(shutdown.clone())
        .start()
        .await
        .unwrap();
    wait_until(LONG, "every `sent` callback given up", || async {
        scalar(&pool, "SELECT count(*) FROM tidings.callback_outbox WHERE given_up_at IS NOT NULL AND last_error = 'connect'").await == 3
    })
    .await;
    assert_eq!(metrics.callback_given_up.get(), 3);
    assert!(
        metrics
            .render()
            .contains("tidings_callback_failures_total{error=\"connect\"}")
    );

    // The receiver is back; the next transition of each message is not held behind the given-up one.
    let receiver = Receiver::new(Mode::Ok);
    receiver.serve(addr).await;
    deliver_all(&pool).await;
    wait_until(LONG, "every `delivered` callback delivered", || async {
        scalar(&pool, "SELECT count(*) FROM tidings.callback_outbox WHERE status = 'delivered' AND delivered_at IS NOT NULL").await == 3
    })
    .await;
    shutdown.stop.cancel();
    let log = receiver.log();
    assert_eq!(log.len(), 3, "{log:?}");
    for id in &ids {
        assert!(
            log.iter()
                .any(|r| r.body["data"]["id"] == json!(id) && r.body["type"] == "message.delivered"),
            "{id}: {log:?}"
        );
    }
    let given_up_still: i64 = scalar(
        &pool,
        "SELECT count(*) FROM tidings.callback_outbox WHERE status = 'sent' AND given_up_at IS NOT NULL AND delivered_at IS NULL",
    )
    .await;
    assert_eq!(given_up_still, 3);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_worker_role_syncs_hosts_and_delivers_callbacks(pool: PgPool) {
    let receiver = Receiver::new(Mode::Ok);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    receiver.serve_on(listener);
    let config = config("", "");
    support::sync(&pool, &config).await;
    let ids = enqueue(&pool, 4, Some(&format!("http://{addr}/"))).await;
    // Every connection acts as tidings_worker (migration 0003 plus 0011's grants), as a deployed worker does.
    let url = support::url_of(&pool).await;
    let worker_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(6)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET ROLE tidings_worker")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
        .unwrap();
    let store = Store::from_pool(worker_pool);
    store.channel_sync(&config).await.unwrap();
    let shutdown = Shutdown::new();
    Worker::new(config.clone(), store.clone())
        .env(Arc::new(env))
        .shutdown(shutdown.clone())
        .start()
        .await
        .unwrap();
    wait_until(LONG, "every callback delivered", || async {
        scalar(
            &pool,
            "SELECT count(*) FROM tidings.callback_outbox WHERE delivered_at IS NOT NULL",
        )
        .await
            == 4
    })
    .await;
    shutdown.stop.cancel();
    assert_eq!(store.callback_list(ids[0]).await.unwrap().len(), 1);
    store.callback_stats().await.unwrap();
    assert_eq!(
        store
            .callback_prune(chrono::Utc::now() + chrono::Duration::hours(1), 10)
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.callback_outbox").await,
        0
    );
}
