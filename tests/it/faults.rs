//! Faults (issue 7): crashing workers under a misbehaving provider, slow and hanging providers, poison messages
//! and backpressure. The database restart is tested elsewhere.
//!
//! Sizes scale down for local runs: `TIDINGS_FAULTS_MESSAGES` (crash test, default 50,000: about 85 s alone on
//! this 2-core machine) and `TIDINGS_BACKPRESSURE_MESSAGES` (default 100,000).

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use sqlx::PgPool;
use tidings::app::sandbox_server::{Sandbox, SandboxOptions};
use tidings::message::Message;
use tidings::metrics::Metrics;
use tidings::provider::{Accepted, Provider, Providers, SendError, SendResult};
use tidings::shutdown::Shutdown;
use tidings::worker::Worker;
use tidings_client::{NewMessage, Status};
use uuid::Uuid;

use crate::support::{ChildWorker, config, count, enqueue_n, live, sync, url_of, wait_until};

fn env_count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn start_sandbox(options: SandboxOptions) -> Sandbox {
    Sandbox::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap()
}

/// Ids with at least one event of `reason`.
async fn ids_with_event(pool: &PgPool, reason: &str) -> HashSet<String> {
    sqlx::query_scalar::<_, Uuid>(
        "SELECT DISTINCT message_id FROM tidings.message_events WHERE reason = $1",
    )
    .bind(reason)
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(Uuid::to_string)
    .collect()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn crashing_workers_under_provider_faults_lose_nothing(pool: PgPool) {
    let n = env_count("TIDINGS_FAULTS_MESSAGES", 50_000);
    let started = Instant::now();
    // The sandbox gets its own runtime: on the test's single thread it would answer late whenever the test
    // is busy, and late answers are client timeouts (legitimate duplicates, but not the fault under test).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (runtime, sandbox) = std::thread::spawn(move || {
        let sandbox = runtime.block_on(Sandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            SandboxOptions {
                fail_5xx: 0.05,
                fail_429: 0.05,
                retry_after_secs: 1,
                hang: 0.01,
                ..Default::default()
            },
        ));
        (runtime, sandbox.unwrap())
    })
    .join()
    .unwrap();
    // Short lease and timeout: a hung send times out after 1 s and a dead worker's messages come back after 3 s.
    let toml = format!(
        r#"
[worker]
concurrency = 300
claim_batch = 300
lease = "3s"
rescue_interval = "300ms"
poll_interval = "100ms"
max_connections = 4
[http]
listen = "127.0.0.1:0"
[channels.sms]
kind = "sandbox"
base_url = "{}"
timeout = "1s"
max_attempts = 50
[channels.sms.backoff]
base = "100ms"
cap = "1s"
"#,
        sandbox.base_url()
    );
    sync(&pool, &tidings::config::Config::parse(&toml).unwrap()).await;
    // One message in ten is only valid for 10 s: some expire while the channel is paused or workers die.
    let all: Vec<NewMessage> = (0..n)
        .map(|i| {
            let m = NewMessage::sms("sms", format!("+3162{i:07}")).text(format!("message {i}"));
            if i % 10 == 0 { m.validity(10) } else { m }
        })
        .collect();
    for chunk in all.chunks(5000) {
        tidings_client::enqueue_many(&pool, chunk).await.unwrap();
    }
    let enqueued = started.elapsed();
    let url = url_of(&pool).await;

    let mut workers: Vec<ChildWorker> = (0..3).map(|_| ChildWorker::spawn(&url, &toml)).collect();
    // A bound against a hung run, wide enough for a loaded CI machine (not a speed assertion).
    let deadline = Instant::now() + Duration::from_secs(400);
    let mut kills = 0;
    let mut next = 0;
    // Every worker lives at least 3 s before it is killed or told to stop (so the newest one is up and
    // has its signal handlers by the time the run ends).
    loop {
        assert!(
            Instant::now() < deadline,
            "not drained: {} live after {kills} kills",
            live(&pool).await
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        if live(&pool).await == 0 {
            break;
        }
        let victim = std::mem::replace(&mut workers[next], ChildWorker::spawn(&url, &toml));
        victim.signal("KILL");
        assert!(!victim.wait(Duration::from_secs(10)).await.success());
        kills += 1;
        next = (next + 1) % 3;
    }
    let drained = started.elapsed();
    for w in &workers {
        w.signal("TERM");
    }
    for w in workers {
        assert!(w.wait(Duration::from_secs(30)).await.success());
    }
    assert!(kills >= 1, "at least one worker was killed mid-run");

    // Every message final, none lost: the long-lived ones all sent, the short-lived ones sent or expired.
    let rows: Vec<(Uuid, String, DateTime<Utc>, i32)> =
        sqlx::query_as("SELECT id, status::text, expires_at, attempts FROM tidings.messages")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), n);
    let mut by_status: HashMap<&str, usize> = HashMap::new();
    for (_, status, _, _) in &rows {
        *by_status.entry(status.as_str()).or_default() += 1;
    }
    let sent = by_status.get("sent").copied().unwrap_or(0);
    let expired = by_status.get("expired").copied().unwrap_or(0);
    assert_eq!(
        sent + expired,
        n,
        "every message sent or expired: {by_status:?}"
    );
    assert!(
        expired <= n / 10,
        "only short-lived messages expire: {by_status:?}"
    );

    // Exactly-once status history: one `sent` event per sent message.
    let sent_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tidings.message_events WHERE status = 'sent'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(sent_events, sent as i64);
    // Nothing handed to the provider at or after expires_at: the attempt began before it.
    let late: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tidings.message_events e JOIN tidings.messages m ON m.id = e.message_id
          WHERE e.status = 'sent' AND e.started_at >= m.expires_at",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(late, 0, "no attempt started after expires_at");

    // The provider's view. Every accepted send reached it before expires_at (plus the transport's time, at
    // most the channel timeout); a duplicate accepted send is a message whose lease expired mid-send.
    let expires: HashMap<String, (DateTime<Utc>, &str)> = rows
        .iter()
        .map(|(id, status, at, _)| (id.to_string(), (*at, status.as_str())))
        .collect();
    let rescued = ids_with_event(&pool, "lease_expired").await;
    let timed_out = ids_with_event(&pool, "timeout").await;
    let mut accepted: HashMap<String, usize> = HashMap::new();
    let log = sandbox.requests();
    for r in &log {
        if !(200..300).contains(&r.status) {
            continue;
        }
        let id = r
            .idempotency_id
            .clone()
            .expect("the sandbox logs the reference");
        let (expires_at, _) = expires[&id];
        assert!(
            r.at < expires_at + chrono::Duration::seconds(1),
            "{id} reached the provider at {} after expires_at {expires_at}",
            r.at
        );
        *accepted.entry(id).or_default() += 1;
    }
    let mut duplicates = 0;
    for (id, (_, status)) in &expires {
        let times = accepted.get(id).copied().unwrap_or(0);
        if *status == "sent" {
            assert!(times >= 1, "{id} is sent but the provider never took it");
        }
        if times > 1 {
            duplicates += 1;
            // A duplicate is a message whose lease expired mid-send (its worker died or stalled), or one whose
            // request reached the provider but whose answer came after the channel timeout: both retried with
            // the same idempotency key, both visible in the events.
            if !rescued.contains(id) && !timed_out.contains(id) {
                let events = tidings_client::events(&pool, id.parse().unwrap())
                    .await
                    .unwrap();
                let sends: Vec<_> = log
                    .iter()
                    .filter(|r| r.idempotency_id.as_ref() == Some(id))
                    .collect();
                panic!(
                    "{id} accepted {times} times without a lease_expired event: {events:#?} {sends:#?}"
                );
            }
        }
    }
    let faults = |s: u16| log.iter().filter(|r| r.status == s).count();
    eprintln!(
        "crash test: {n} messages ({enqueued:.1?} to enqueue), drained in {drained:.1?}, {kills} kills, \
         {} requests ({} 503, {} 429, {} hung), {} rescued, {duplicates} duplicates, {by_status:?}",
        log.len(),
        faults(503),
        faults(429),
        faults(0),
        rescued.len(),
    );
    assert!(faults(503) > 0 && faults(429) > 0, "faults were injected");
    sandbox.stop().await;
    runtime.shutdown_background();
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn nothing_is_sent_in_a_quiet_window_under_faults(pool: PgPool) {
    use chrono::Timelike;
    let sandbox = start_sandbox(SandboxOptions {
        fail_5xx: 0.05,
        fail_429: 0.05,
        retry_after_secs: 1,
        ..Default::default()
    })
    .await;
    // A window around the recipient's local now.
    let local = Utc::now().with_timezone(&chrono_tz::Asia::Tokyo);
    let start = (local - chrono::Duration::hours(1)).hour();
    let end = (local + chrono::Duration::hours(2)).hour();
    let config = tidings::config::Config::parse(&format!(
        r#"
[worker]
poll_interval = "100ms"
[http]
listen = "127.0.0.1:0"
[channels.mkt]
kind = "sandbox"
base_url = "{}"
timeout = "1s"
[channels.mkt.backoff]
base = "100ms"
cap = "1s"
[channels.mkt.quiet_hours]
start = "{start:02}:00"
end = "{end:02}:00"
"#,
        sandbox.base_url()
    ))
    .unwrap();
    let store = sync(&pool, &config).await;
    let batch: Vec<Value> = (0..200)
        .map(|i| {
            json!({
                "channel": "mkt", "use_case": if i % 2 == 0 { "marketing" } else { "transactional" },
                "recipient": { "phone": format!("+8190{i:08}"), "timezone": "Asia/Tokyo" },
                "content": { "body": { "type": "text", "text": { "text": "sale" } } },
            })
        })
        .collect();
    let ids = tidings_client::enqueue_json(&pool, Value::Array(batch))
        .await
        .unwrap();
    let shutdown = Shutdown::new();
    let providers = tidings::provider::build_all(&config).unwrap();
    let worker = tokio::spawn(
        Worker::new(config, store)
            .providers(providers)
            .metrics(Metrics::new())
            .shutdown(shutdown.clone())
            .run(),
    );
    wait_until(
        Duration::from_secs(60),
        "transactional ones sent",
        || async { count(&pool, "sent").await == 100 },
    )
    .await;
    shutdown.stop.cancel();
    worker.await.unwrap().unwrap();
    let marketing: HashSet<String> = ids.iter().step_by(2).map(Uuid::to_string).collect();
    assert!(
        sandbox
            .requests()
            .iter()
            .all(|r| !marketing.contains(r.idempotency_id.as_deref().unwrap_or_default())),
        "no marketing message reached the provider inside the quiet window"
    );
    assert_eq!(count(&pool, "scheduled").await, 100);
    sandbox.stop().await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_hanging_provider_ends_in_a_timeout_retry(pool: PgPool) {
    let sandbox = start_sandbox(SandboxOptions {
        hang: 1.0,
        ..Default::default()
    })
    .await;
    let mut config = config(
        Some(&sandbox.base_url()),
        "lease = \"4s\"\npoll_interval = \"50ms\"",
    );
    let sms = config.channels.get_mut("sms").unwrap();
    sms.timeout = Duration::from_millis(300);
    sms.backoff.base = Duration::from_millis(50);
    sms.backoff.cap = Duration::from_millis(200);
    let store = sync(&pool, &config).await;
    let ids = enqueue_n(&pool, "sms", 5).await;
    let shutdown = Shutdown::new();
    let providers = tidings::provider::build_all(&config).unwrap();
    let worker = tokio::spawn(
        Worker::new(config.clone(), store)
            .providers(providers)
            .metrics(Metrics::new())
            .shutdown(shutdown.clone())
            .run(),
    );
    wait_until(
        Duration::from_secs(20),
        "every message timed out once",
        || async { ids_with_event(&pool, "timeout").await.len() == ids.len() },
    )
    .await;
    // The provider answers again: every message goes out.
    sandbox.set_options(SandboxOptions::default());
    wait_until(Duration::from_secs(20), "every message sent", || async {
        count(&pool, "sent").await == ids.len() as i64
    })
    .await;
    shutdown.stop.cancel();
    worker.await.unwrap().unwrap();
    for id in ids {
        let events = tidings_client::events(&pool, id).await.unwrap();
        let timeout = events.iter().find(|e| e.reason == "timeout").unwrap();
        assert_eq!(timeout.status, Status::Scheduled, "a retry, not a failure");
        assert_eq!(timeout.attempt, Some(1), "a timeout spends an attempt");
        let took = timeout.at - timeout.started_at.unwrap();
        assert!(
            took < chrono::Duration::milliseconds(1500),
            "the 300 ms channel timeout fired (took {took})"
        );
        assert_eq!(events.last().unwrap().status, Status::Sent);
        assert!(
            events.iter().all(|e| e.reason != "lease_expired"),
            "the lease outlived the hung send"
        );
    }
    assert!(sandbox.requests().iter().any(|r| r.status == 0));
    sandbox.stop().await;
}

#[test]
fn the_worker_refuses_a_lease_shorter_than_twice_the_send_timeout() {
    let path = std::env::temp_dir().join(format!("tidings-lease-{}.toml", Uuid::now_v7()));
    std::fs::write(
        &path,
        "[worker]\nlease = \"3s\"\n[channels.sms]\nkind = \"sandbox\"\nmode = \"noop\"\ntimeout = \"2s\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["worker", "--config"])
        .arg(&path)
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("channels.sms.timeout") && stderr.contains("worker.lease"),
        "names the keys: {stderr}"
    );
    // Exactly twice is enough.
    tidings::config::Config::parse(
        "[worker]\nlease = \"4s\"\n[channels.sms]\nkind = \"sandbox\"\nmode = \"noop\"\ntimeout = \"2s\"\n",
    )
    .unwrap();
}

/// A provider that panics on "panic" texts, refuses "invalid" texts and takes the rest.
struct Poison;

impl Provider for Poison {
    fn send<'a>(&'a self, message: &'a Message, _now: DateTime<Utc>) -> BoxFuture<'a, SendResult> {
        let text = message.content["body"]["text"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // Some adapters fail before their future even exists.
        assert!(!text.starts_with("sync-panic"), "adapter bug on {text}");
        Box::pin(async move {
            if text.starts_with("panic") {
                panic!("adapter bug on {text}");
            }
            if text.starts_with("invalid") {
                return Err(SendError::Permanent {
                    reason: "invalid_content".into(),
                    detail: json!({ "error": "the provider refused the content" }),
                });
            }
            Ok(Accepted {
                provider_message_id: Some(format!("p-{}", message.id)),
                detail: json!({ "http_status": 200 }),
            })
        })
    }
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn poison_messages_fail_alone_and_the_worker_keeps_running(pool: PgPool) {
    let config = config(None, "lease = \"30s\"\npoll_interval = \"50ms\"");
    let store = sync(&pool, &config).await;
    let texts: Vec<String> = (0..300)
        .map(|i| match i % 10 {
            0 => format!("panic {i}"),
            1 => format!("invalid {i}"),
            2 => format!("sync-panic {i}"),
            _ => format!("fine {i}"),
        })
        .collect();
    let batch: Vec<NewMessage> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| NewMessage::sms("sms", format!("+3161{i:07}")).text(t.clone()))
        .collect();
    let ids = tidings_client::enqueue_many(&pool, &batch).await.unwrap();
    let mut providers = Providers::new();
    providers.insert("sms".into(), Arc::new(Poison) as Arc<dyn Provider>);
    let shutdown = Shutdown::new();
    let worker = tokio::spawn(
        Worker::new(config, store)
            .providers(providers)
            .metrics(Metrics::new())
            .shutdown(shutdown.clone())
            .run(),
    );
    wait_until(Duration::from_secs(30), "every message final", || async {
        live(&pool).await == 0
    })
    .await;
    assert!(!worker.is_finished(), "the worker survived its adapter");
    for (id, text) in ids.iter().zip(&texts) {
        let status = tidings_client::status(&pool, *id).await.unwrap().unwrap();
        let (want, reason) = match text.split(' ').next().unwrap() {
            "panic" | "sync-panic" => (Status::SendingFailed, Some("adapter_panicked")),
            "invalid" => (Status::SendingFailed, Some("invalid_content")),
            _ => (Status::Sent, None),
        };
        assert_eq!(status.status, want, "{text}");
        assert_eq!(status.last_error.as_deref(), reason, "{text}");
        assert_eq!(status.attempts, 1, "{text}: one attempt, no retry");
    }
    // Still claiming and sending after the poison.
    let more = tidings_client::enqueue_many(
        &pool,
        &[NewMessage::sms("sms", "+31612345678").text("fine again")],
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(10), "a later message sent", || async {
        tidings_client::status(&pool, more[0])
            .await
            .unwrap()
            .unwrap()
            .status
            == Status::Sent
    })
    .await;
    shutdown.stop.cancel();
    worker.await.unwrap().unwrap();
}

/// Transactions committed or rolled back in the current database so far.
async fn transactions(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_long_429_pauses_the_channel_quietly_and_it_resumes_promptly(pool: PgPool) {
    let n = env_count("TIDINGS_BACKPRESSURE_MESSAGES", 100_000);
    let started = Instant::now();
    let sandbox = start_sandbox(SandboxOptions {
        fail_429: 1.0,
        retry_after_secs: 60,
        ..Default::default()
    })
    .await;
    let toml = crate::support::child_config(
        &sandbox.base_url(),
        "concurrency = 100\nclaim_batch = 100\npoll_interval = \"200ms\"\nrescue_interval = \"1s\"",
    );
    sync(&pool, &tidings::config::Config::parse(&toml).unwrap()).await;
    enqueue_n(&pool, "sms", n).await;
    let enqueued = started.elapsed();
    let worker = ChildWorker::spawn(&url_of(&pool).await, &toml);

    // The first 429 pauses the channel for every worker until Retry-After.
    wait_until(Duration::from_secs(20), "the channel paused", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT coalesce(bool_or(paused_until > now() + interval '30 seconds'), false)
               FROM tidings.channel_state WHERE channel = 'sms'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    })
    .await;
    wait_until(
        Duration::from_secs(10),
        "in-flight sends settled",
        || async { count(&pool, "processing").await == 0 },
    )
    .await;
    let asked = sandbox.requests().len();
    let deferred = count(&pool, "scheduled").await;
    assert!(
        deferred > 0 && deferred as usize <= asked,
        "only the messages that met the 429 were deferred ({deferred} of {asked} requests)"
    );
    assert_eq!(
        deferred + count(&pool, "accepted").await,
        n as i64,
        "none lost"
    );
    // Only a timeout may have spent an attempt (a loopback answer slower than the 1 s channel timeout happens on
    // a starved machine running the whole suite); a message that met nothing but 429s spent none.
    let spent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tidings.messages m
          WHERE m.attempts > 0
            AND NOT EXISTS (SELECT 1 FROM tidings.message_events e
                             WHERE e.message_id = m.id AND e.reason NOT IN ('enqueued', 'rate_limited'))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(spent, 0, "a 429 spends no attempt");

    // While paused: no requests, few statements, bounded memory. Backends report their transaction counts
    // lazily (an idle one up to 10 s later), so let this test's own queries so far be counted first.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let rss_before = rss_kib(worker.pid());
    let before = transactions(&pool).await;
    let window = Duration::from_secs(5);
    tokio::time::sleep(window).await;
    let statements = transactions(&pool).await - before;
    let rss = rss_kib(worker.pid());
    assert_eq!(sandbox.requests().len(), asked, "no request while paused");
    let per_sec = statements as f64 / window.as_secs_f64();
    assert!(
        per_sec < 20.0,
        "no busy loop while paused: {per_sec:.1} transactions/s (5 claims/s expected, plus maintenance)"
    );
    assert!(
        rss < 200 * 1024,
        "worker memory bounded with {n} waiting: {rss} KiB"
    );

    // Lift the pause: sending resumes within a few polls.
    sandbox.set_options(SandboxOptions::default());
    sqlx::query("UPDATE tidings.channel_state SET paused_until = now() WHERE channel = 'sms'")
        .execute(&pool)
        .await
        .unwrap();
    let lifted = Instant::now();
    // Prompt resume: within a few polls (the wait's limit is the bound; the figure is printed below).
    wait_until(Duration::from_secs(10), "sending resumed", || async {
        sandbox.requests().iter().any(|r| r.status == 202)
    })
    .await;
    let resumed = lifted.elapsed();
    wait_until(Duration::from_secs(20), "a few hundred sent", || async {
        count(&pool, "sent").await >= 300
    })
    .await;
    worker.signal("TERM");
    assert!(worker.wait(Duration::from_secs(30)).await.success());
    eprintln!(
        "backpressure: {n} waiting ({enqueued:.1?} to enqueue), {asked} requests met the 429, \
         {per_sec:.1} transactions/s while paused, RSS {rss_before} -> {rss} KiB, resumed in {resumed:.1?}, \
         {:.1?} in all",
        started.elapsed()
    );
    sandbox.stop().await;
}
