//! Operations: `/metrics` agrees with the database (and passes `promtool check metrics`), `/readyz` and a
//! worker across a database restart (on a private cluster, never the shared server), logs that keep secrets and
//! phone numbers out, the `stats` / `status` commands and `ops/check.sh` (the history's mover and retention:
//! history.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use tidings::app::local_pg::LocalPostgres;
use tidings::app::sandbox_server::{Sandbox, SandboxOptions};
use tidings::config::Config;
use tidings::maintenance::Maintenance;
use tidings::metrics::Metrics;
use tidings::outcome::Outcome;
use tidings::shutdown::Shutdown;
use tidings::store::{ClaimParams, Completion, Store};
use tidings::worker::Worker;
use tidings_client::NewMessage;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{count, enqueue_n, live, sync, tidings_cli, url_of, wait_until};

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/// One sample of a scrape: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (enough of it for our own exposition: no escaped quotes in label values).
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().expect("numeric sample value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("label=\"value\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// Sum of the samples named `name` whose labels include `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(addr: SocketAddr) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

fn has_tool(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `promtool check metrics` on `text`, when promtool is installed (CI installs Debian's `prometheus`).
fn promtool_check_metrics(text: &str) {
    if !has_tool("promtool") {
        eprintln!("note: promtool not on PATH: `promtool check metrics` skipped");
        return;
    }
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two sandbox channels, `sms` and `push`, with millisecond backoff so retries finish quickly, and a 1 s timeout.
fn two_channel_config(sandbox: &str, worker: &str) -> Config {
    two_channel_config_with_timeout(sandbox, worker, "1s")
}

/// [`two_channel_config`] with the channels' `timeout`.
fn two_channel_config_with_timeout(sandbox: &str, worker: &str, timeout: &str) -> Config {
    let mut toml = format!("[worker]\n{worker}\n[http]\nlisten = \"127.0.0.1:0\"\n");
    for name in ["push", "sms"] {
        toml.push_str(&format!(
            "[channels.{name}]\nkind = \"sandbox\"\nbase_url = \"{sandbox}\"\ntimeout = \"{timeout}\"\n\
             [channels.{name}.backoff]\nbase = \"10ms\"\ncap = \"50ms\"\n"
        ));
    }
    Config::parse(&toml).unwrap()
}

/// A private PostgreSQL cluster the test may stop and start; None (with a note) when the server binaries are
/// not installed.
fn private_cluster() -> Option<LocalPostgres> {
    let Some(bin) = LocalPostgres::find_binaries() else {
        eprintln!("note: no initdb/pg_ctl found: private-cluster test skipped");
        return None;
    };
    Some(LocalPostgres::start(bin).expect("start a private cluster"))
}

async fn status_of(client: &reqwest::Client, url: &str) -> u16 {
    match client.get(url).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Count of messages in `statuses` on the cluster at `url`; None while the database is unreachable.
async fn count_in(url: &str, statuses: &[&str]) -> Option<i64> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .ok()?;
    let statuses: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
    sqlx::query_scalar("SELECT count(*) FROM tidings.messages WHERE status::text = ANY ($1)")
        .bind(statuses)
        .fetch_one(&mut conn)
        .await
        .ok()
}

const LIVE: &[&str] = &["accepted", "scheduled", "processing"];

// ---------------------------------------------------------------------------------------------------------------
// Metrics

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn metrics_agree_with_the_database(pool: PgPool) {
    let sandbox = Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        SandboxOptions {
            fail_429: 0.05,
            // Retry-After: 0 keeps the channel pause short; the deferral still takes the backoff.
            retry_after_secs: 0,
            fail_5xx: 0.05,
            ..SandboxOptions::default()
        },
    )
    .await
    .unwrap();
    // This test counts answers: a loopback answer slower than the timeout (on a starved CI machine running the
    // whole suite) would be a timeout in the worker's books and a 429 in the sandbox's. 10 s keeps them one.
    let config = two_channel_config_with_timeout(
        &sandbox.base_url(),
        "concurrency = 50\nclaim_batch = 50\npoll_interval = \"20ms\"",
        "10s",
    );
    let store = sync(&pool, &config).await;
    enqueue_n(&pool, "sms", 300).await;
    enqueue_n(&pool, "push", 100).await;

    let metrics = Metrics::new();
    let shutdown = Shutdown::new();
    let (addr, http) = tidings::server::serve(
        "127.0.0.1:0".parse().unwrap(),
        store.clone(),
        metrics.clone(),
        tidings::receipts::Receipts::default(),
        shutdown.abort.clone(),
    )
    .await
    .unwrap();
    let worker_store = Store::connect(&url_of(&pool).await, 6).await.unwrap();
    let providers = tidings::provider::build_all(&config).unwrap();
    let worker = tokio::spawn(
        Worker::new(config.clone(), worker_store)
            .providers(providers)
            .metrics(metrics.clone())
            .shutdown(shutdown.clone())
            .run(),
    );
    wait_until(Duration::from_secs(120), "every message final", || async {
        live(&pool).await == 0
    })
    .await;
    // The sampler runs every 5 s in the worker; run it once more now so the gauges show the drained queue.
    Maintenance::new(store.clone(), metrics.clone(), &config)
        .sample()
        .await;
    let text = scrape(addr).await;
    shutdown.stop.cancel();
    worker.await.unwrap().unwrap();
    shutdown.abort.cancel();
    http.await.unwrap();

    let samples = parse_exposition(&text);
    // Transitions written by the worker, per (channel, status, reason), equal the event rows (the enqueue
    // events are written by tidings.enqueue, not by a worker).
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT m.channel, e.status::text, e.reason, count(*)
           FROM tidings.message_events e JOIN tidings.messages m ON m.id = e.message_id
          WHERE e.reason <> 'enqueued'
          GROUP BY 1, 2, 3",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let from_db: BTreeMap<(String, String, String), i64> = rows
        .into_iter()
        .map(|(c, s, r, n)| ((c, s, r), n))
        .collect();
    let from_metrics: BTreeMap<(String, String, String), i64> = samples
        .iter()
        .filter(|s| s.name == "tidings_transitions_total")
        .map(|s| {
            (
                (
                    s.labels["channel"].clone(),
                    s.labels["status"].clone(),
                    s.labels["reason"].clone(),
                ),
                s.value as i64,
            )
        })
        .collect();
    assert_eq!(
        from_metrics, from_db,
        "transitions by channel/status/reason"
    );

    for channel in ["sms", "push"] {
        let sent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tidings.messages WHERE channel = $1 AND status = 'sent'",
        )
        .bind(channel)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            sum(
                &samples,
                "tidings_transitions_total",
                &[("channel", channel), ("status", "sent")]
            ) as i64,
            sent,
            "{channel}: transitions to sent == sent rows"
        );
    }
    assert_eq!(count(&pool, "sent").await, 400, "every message was sent");

    // Deferrals: 429s (rate_limited) and 503s (http_503) are `scheduled` transitions, one event each.
    let requests = sandbox.requests();
    let answered = |code: u16| requests.iter().filter(|r| r.status == code).count() as f64;
    assert!(
        answered(429) > 0.0 && answered(503) > 0.0,
        "faults were injected"
    );
    assert_eq!(
        sum(
            &samples,
            "tidings_transitions_total",
            &[("status", "scheduled"), ("reason", "rate_limited")]
        ),
        answered(429)
    );
    assert_eq!(
        sum(
            &samples,
            "tidings_transitions_total",
            &[("status", "scheduled"), ("reason", "http_503")]
        ),
        answered(503)
    );
    assert_eq!(
        sum(
            &samples,
            "tidings_provider_requests_total",
            &[("code", "429")]
        ),
        answered(429),
        "provider_requests_total{{code=\"429\"}} == the sandbox's 429 answers"
    );
    assert_eq!(
        sum(
            &samples,
            "tidings_provider_requests_total",
            &[("code", "503")]
        ),
        answered(503)
    );
    assert_eq!(
        sum(&samples, "tidings_provider_requests_total", &[]),
        requests.len() as f64,
        "one request counted per request answered"
    );
    assert_eq!(
        sum(&samples, "tidings_send_duration_seconds_count", &[]),
        requests.len() as f64
    );
    assert_eq!(
        sum(&samples, "tidings_inflight", &[]),
        0.0,
        "nothing in flight"
    );
    assert_eq!(sum(&samples, "tidings_completions_lost_total", &[]), 0.0);

    // The sampled gauges: one series per configured channel (and status), drained to zero.
    for channel in ["sms", "push"] {
        for status in ["accepted", "scheduled", "processing"] {
            let series: Vec<_> = samples
                .iter()
                .filter(|s| {
                    s.name == "tidings_queue_messages"
                        && s.labels.get("channel").map(String::as_str) == Some(channel)
                        && s.labels.get("status").map(String::as_str) == Some(status)
                })
                .collect();
            assert_eq!(
                series.len(),
                1,
                "tidings_queue_messages{{{channel},{status}}}"
            );
            assert_eq!(series[0].value, 0.0);
        }
        for name in ["tidings_oldest_due_seconds", "tidings_channel_paused"] {
            assert!(
                samples.iter().any(|s| s.name == name
                    && s.labels.get("channel").map(String::as_str) == Some(channel)),
                "{name}{{channel={channel}}} present"
            );
        }
        assert_eq!(
            sum(
                &samples,
                "tidings_oldest_due_seconds",
                &[("channel", channel)]
            ),
            0.0
        );
    }
    promtool_check_metrics(&text);
    sandbox.stop().await;
}

/// The sampler reports a backlog and the age of its oldest due message, per channel.
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_sampler_reports_backlog_and_oldest_due_age(pool: PgPool) {
    let config = two_channel_config("http://127.0.0.1:9", "");
    let store = sync(&pool, &config).await;
    enqueue_n(&pool, "sms", 7).await;
    sqlx::query("UPDATE tidings.messages SET run_at = now() - interval '90 seconds'")
        .execute(&pool)
        .await
        .unwrap();
    let metrics = Metrics::new();
    Maintenance::new(store, metrics.clone(), &config)
        .sample()
        .await;
    let samples = parse_exposition(&metrics.render());
    assert_eq!(
        sum(
            &samples,
            "tidings_queue_messages",
            &[("channel", "sms"), ("status", "accepted")]
        ),
        7.0
    );
    assert_eq!(
        sum(&samples, "tidings_queue_messages", &[("channel", "push")]),
        0.0
    );
    let age = sum(
        &samples,
        "tidings_oldest_due_seconds",
        &[("channel", "sms")],
    );
    assert!((90.0..120.0).contains(&age), "oldest due age {age}");
    assert_eq!(
        sum(
            &samples,
            "tidings_oldest_due_seconds",
            &[("channel", "push")]
        ),
        0.0
    );
}

/// The sampler runs every few seconds on every worker: its queries must read the live rows through the partial
/// indexes, never the whole history. With sequential scans off, the planner must still find an index plan that
/// touches `messages` only through `messages_claim` / `messages_expiry` (both hold exactly the waiting messages) /
/// `messages_lease`.
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_sampler_queries_are_served_by_the_partial_indexes(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    for (name, sql) in [
        (
            "stats_live",
            include_str!("../../src/store/queries/stats_live.sql"),
        ),
        (
            "stats_oldest_due",
            include_str!("../../src/store/queries/stats_oldest_due.sql"),
        ),
    ] {
        let explain = format!("EXPLAIN (COSTS OFF) {sql}");
        let plan: Vec<String> = sqlx::query_scalar(&explain)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let plan = plan.join("\n");
        let on_messages: Vec<&str> = plan
            .lines()
            .filter(|l| l.contains(" on messages"))
            .collect();
        assert!(!on_messages.is_empty(), "{name}:\n{plan}");
        for line in on_messages {
            assert!(
                line.contains("messages_claim")
                    || line.contains("messages_expiry")
                    || line.contains("messages_lease")
                    // (fed by a Bitmap Index Scan line, checked on its own)
                    || line.contains("Bitmap Heap Scan on messages"),
                "{name} reads messages other than through the partial indexes:\n{plan}"
            );
        }
    }
}

/// The sweeper runs every rescue interval on the leader, whatever the backlog: it must find the overdue waiting
/// messages through `messages_expiry` (an index condition on `expires_at`), not by reading every due message
/// from `messages_claim` and comparing its validity (60-175 ms per pass on a backlog of 100,000).
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_sweeper_reads_only_the_overdue_messages(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let sql = include_str!("../../src/store/queries/message_sweep_expired.sql");
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN (COSTS OFF) {sql}"))
        .bind(1000i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    let scan = plan
        .lines()
        .position(|l| l.contains("Scan using messages_expiry on messages"))
        .unwrap_or_else(|| panic!("the sweep does not read messages_expiry:\n{plan}"));
    assert!(
        plan.lines()
            .nth(scan + 1)
            .is_some_and(|l| l.contains("Index Cond: (expires_at <= now())")),
        "the overdue rows are not the index condition:\n{plan}"
    );
    assert!(!plan.contains("messages_claim"), "{plan}");
}

// ---------------------------------------------------------------------------------------------------------------
// /readyz and a database restart (private cluster)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_database() {
    let Some(pg) = tokio::task::block_in_place(private_cluster) else {
        return;
    };
    let store = Store::connect(&pg.url(), 3).await.unwrap();
    let stop = CancellationToken::new();
    let (addr, http) = tidings::server::serve(
        "127.0.0.1:0".parse().unwrap(),
        store.clone(),
        Metrics::new(),
        tidings::receipts::Receipts::default(),
        stop.clone(),
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/readyz");

    let not_migrated = client.get(&url).send().await.unwrap();
    assert_eq!(not_migrated.status(), 503, "no migrations applied yet");
    store.migrate().await.unwrap();
    wait_until(Duration::from_secs(15), "/readyz 200", || async {
        status_of(&client, &url).await == 200
    })
    .await;
    assert_eq!(
        client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    tokio::task::block_in_place(|| pg.stop()).unwrap();
    wait_until(
        Duration::from_secs(30),
        "/readyz 503 while stopped",
        || async { status_of(&client, &url).await == 503 },
    )
    .await;
    let body = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(body.starts_with("database"), "says why: {body}");
    assert_eq!(
        client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "liveness does not depend on the database"
    );

    tokio::task::block_in_place(|| pg.resume()).unwrap();
    wait_until(
        Duration::from_secs(30),
        "/readyz 200 after the restart",
        || async { status_of(&client, &url).await == 200 },
    )
    .await;
    stop.cancel();
    http.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_rides_out_a_database_restart_mid_drain() {
    let Some(pg) = tokio::task::block_in_place(private_cluster) else {
        return;
    };
    let url = pg.url();
    const N: usize = 600;
    let sandbox = Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        SandboxOptions {
            latency: Duration::from_millis(150),
            ..SandboxOptions::default()
        },
    )
    .await
    .unwrap();
    let config = two_channel_config(
        &sandbox.base_url(),
        "concurrency = 20\nclaim_batch = 20\npoll_interval = \"100ms\"\nlease = \"2s\"\nrescue_interval = \"500ms\"",
    );
    {
        let admin = Store::connect(&url, 2).await.unwrap();
        admin.migrate().await.unwrap();
        admin.channel_sync(&config).await.unwrap();
        enqueue_n(admin.pool(), "sms", N).await;
        admin.pool().close().await;
    }

    let store = Store::connect(&url, 6).await.unwrap();
    let metrics = Metrics::new();
    let shutdown = Shutdown::new();
    let (addr, http) = tidings::server::serve(
        "127.0.0.1:0".parse().unwrap(),
        store.clone(),
        metrics.clone(),
        tidings::receipts::Receipts::default(),
        shutdown.abort.clone(),
    )
    .await
    .unwrap();
    let providers = tidings::provider::build_all(&config).unwrap();
    let worker = tokio::spawn(
        Worker::new(config.clone(), store)
            .providers(providers)
            .metrics(metrics.clone())
            .shutdown(shutdown.clone())
            .run(),
    );

    wait_until(Duration::from_secs(60), "some messages sent", || async {
        count_in(&url, &["sent"]).await.unwrap_or(0) >= 60
    })
    .await;
    let outage = std::time::Instant::now();
    tokio::task::block_in_place(|| pg.stop()).unwrap();
    // The worker's own pool notices (its /readyz says so) while sends are in flight.
    let client = reqwest::Client::new();
    let readyz = format!("http://{addr}/readyz");
    wait_until(
        Duration::from_secs(30),
        "the worker sees the outage",
        || async { status_of(&client, &readyz).await == 503 },
    )
    .await;
    // Stay down until the sends that were in flight have finished (their outcomes wait in the completer) and
    // their leases have run out, so the restart also exercises completions racing the rescuer.
    wait_until(
        Duration::from_secs(30),
        "in-flight sends done and their leases over",
        || async {
            outage.elapsed() > config.worker.lease + Duration::from_millis(500)
                && sum(
                    &parse_exposition(&metrics.render()),
                    "tidings_inflight",
                    &[],
                ) == 0.0
        },
    )
    .await;
    tokio::task::block_in_place(|| pg.resume()).unwrap();
    let down = outage.elapsed();

    wait_until(Duration::from_secs(180), "every message final", || async {
        count_in(&url, LIVE).await == Some(0)
    })
    .await;
    eprintln!(
        "database down for {down:?}; drained {:?} after it came back",
        outage.elapsed() - down
    );
    assert!(!worker.is_finished(), "the worker survived the restart");
    shutdown.stop.cancel();
    worker.await.unwrap().unwrap();
    shutdown.abort.cancel();
    http.await.unwrap();

    assert_eq!(
        count_in(&url, &["sent"]).await,
        Some(N as i64),
        "every message sent"
    );
    assert_eq!(count_in(&url, &["processing"]).await, Some(0));
    let reached: BTreeSet<String> = sandbox
        .requests()
        .into_iter()
        .filter(|r| (200..300).contains(&r.status))
        .filter_map(|r| r.idempotency_id)
        .collect();
    assert_eq!(reached.len(), N, "every message reached the provider");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let (rescues, lost): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE reason = 'lease_expired'),
                count(*) FILTER (WHERE status = 'sent') - count(DISTINCT message_id) FILTER (WHERE status = 'sent')
           FROM tidings.message_events",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    eprintln!(
        "{rescues} leases expired during the outage; {} sends repeated; {lost} duplicate sent events",
        sandbox.requests().len() - N
    );
    assert_eq!(lost, 0, "one sent event per message");
    sandbox.stop().await;
    drop(pg);
}

// ---------------------------------------------------------------------------------------------------------------
// Logs

/// A stand-in provider that answers 500 to the first request of each message and 401 afterwards, echoing the
/// request headers and body in its answer (as some providers do in error bodies).
async fn echo_provider() -> (SocketAddr, Arc<Mutex<BTreeMap<String, usize>>>) {
    use axum::http::{HeaderMap, StatusCode};
    let seen = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let state = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
        let seen = state.clone();
        async move {
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let reference = body["reference"].as_str().unwrap_or("").to_owned();
            let n = {
                let mut seen = seen.lock().unwrap();
                let n = seen.entry(reference).or_default();
                *n += 1;
                *n
            };
            let headers: BTreeMap<String, String> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let status = if n == 1 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::UNAUTHORIZED
            };
            (
                status,
                axum::Json(json!({ "error": "echo", "headers": headers, "request": body })),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn json_logs_at_debug_keep_secrets_and_phone_numbers_out(pool: PgPool) {
    const SECRET: &str = "sk_test_7c1d9e5b3a";
    const KEY_VAR: &str = "TIDINGS_TEST_BIRD_ACCESS_KEY";
    let (addr, seen) = echo_provider().await;
    let toml = format!(
        "[worker]\npoll_interval = \"50ms\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [channels.sms]\nkind = \"bird_sms\"\nbase_url = \"http://{addr}\"\nworkspace_id = \"ws-1\"\n\
         channel_id = \"ch-1\"\naccess_key_env = \"{KEY_VAR}\"\ntimeout = \"2s\"\n\
         [channels.sms.backoff]\nbase = \"10ms\"\ncap = \"20ms\"\n"
    );
    let config = Config::parse(&toml).unwrap();
    sync(&pool, &config).await;
    let phones: Vec<String> = (0..5).map(|i| format!("+3161234567{i}")).collect();
    let messages: Vec<NewMessage> = phones
        .iter()
        .map(|p| NewMessage::sms("sms", p.clone()).text("your code is 123456"))
        .collect();
    tidings_client::enqueue_many(&pool, &messages)
        .await
        .unwrap();

    let dir = std::env::temp_dir().join(format!("tidings-logs-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("tidings.toml");
    std::fs::write(&config_path, &toml).unwrap();
    let stderr_path = dir.join("stderr.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["--log-format", "json", "worker", "--config"])
        .arg(&config_path)
        .env("DATABASE_URL", url_of(&pool).await)
        .env("RUST_LOG", "debug")
        .env(KEY_VAR, SECRET)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "every message failed", || async {
        count(&pool, "sending_failed").await == 5
    })
    .await;
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("worker exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 5);
        assert!(
            seen.values().all(|n| *n == 2),
            "each message: a 500, then a 401: {seen:?}"
        );
    }

    let log = std::fs::read_to_string(&stderr_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!log.contains(SECRET), "the access key appears in the log");
    for phone in &phones {
        assert!(
            !log.contains(phone.as_str()) && !log.contains(&phone[1..]),
            "the recipient {phone} appears in the log"
        );
    }
    let mut levels = BTreeSet::new();
    let mut attempt_spans = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        levels.insert(v["level"].as_str().unwrap_or("").to_owned());
        if v["span"]["name"] == "attempt" {
            attempt_spans += 1;
            assert!(v["span"]["message_id"].is_string(), "{line}");
        }
    }
    assert!(
        levels.contains("DEBUG"),
        "RUST_LOG=debug was honoured: {levels:?}"
    );
    assert!(
        attempt_spans >= 10,
        "send failures are logged in their attempt span"
    );
    // The events keep the provider's answer, with the echoed key scrubbed.
    let details: Vec<Value> = sqlx::query_scalar(
        "SELECT detail FROM tidings.message_events WHERE detail IS NOT NULL AND reason <> 'enqueued'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!details.is_empty());
    for d in details {
        assert!(!d.to_string().contains(SECRET), "key in an event: {d}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// `tidings stats` and `tidings status ID`

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn stats_and_status_print_tables_and_json(pool: PgPool) {
    let config = crate::support::config(None, "");
    let store = sync(&pool, &config).await;
    let ids = enqueue_n(&pool, "sms", 3).await;
    // A 503 (retried at once), then sent; a third message stays accepted.
    sqlx::query("UPDATE tidings.messages SET priority = 9 WHERE id = $1")
        .bind(ids[2])
        .execute(&pool)
        .await
        .unwrap();
    for outcome in [
        Outcome::Retry {
            at: chrono::Utc::now(),
            reason: "http_503".into(),
            spend_attempt: true,
            detail: json!({ "http_status": 503 }),
        },
        Outcome::Sent {
            provider_message_id: Some("prov-1".into()),
            detail: json!({ "http_status": 202 }),
        },
    ] {
        let lease_id = Uuid::now_v7();
        let claimed = store
            .message_claim(&ClaimParams {
                limit: 2,
                lease_id,
                lease: Duration::from_secs(30),
                channels: &["sms".into()],
            })
            .await
            .unwrap();
        let batch: Vec<Completion> = claimed
            .into_iter()
            .map(|m| {
                let mut outcome = outcome.clone();
                if let Outcome::Retry { detail, .. } = &mut outcome {
                    // As providers do: the error body echoes the receiver.
                    detail["response"] = json!({ "receiver": m.recipient["phone"] });
                }
                Completion {
                    id: m.id,
                    lease_id,
                    channel: m.channel,
                    started_at: chrono::Utc::now(),
                    outcome,
                }
            })
            .collect();
        assert_eq!(batch.len(), 2);
        store.message_complete_many(&batch).await.unwrap();
    }
    let url = url_of(&pool).await;

    // stats, JSON
    let out = tidings_cli(&url, &["stats", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "live",
        "last_24h",
        "oldest_due_seconds",
        "paused",
        "last_errors",
    ] {
        assert!(!stats[key].is_null(), "stats --json has {key}: {stats}");
    }
    assert_eq!(
        stats["live"],
        json!([{ "channel": "sms", "status": "accepted", "count": 1 }])
    );
    let recent: BTreeMap<String, i64> = stats["last_24h"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap().to_owned(),
                r["count"].as_i64().unwrap(),
            )
        })
        .collect();
    // Status changes of the last 24 hours: three enqueued, two deferred by the 503, two sent.
    assert_eq!(
        recent,
        BTreeMap::from([
            ("accepted".into(), 3),
            ("scheduled".into(), 2),
            ("sent".into(), 2)
        ])
    );
    assert!(stats["oldest_due_seconds"]["sms"].as_f64().unwrap() >= 0.0);
    assert_eq!(stats["paused"], json!([]));
    let errors = stats["last_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "the two 503 retries: {errors:?}");
    for e in errors {
        assert_eq!(e["reason"], "http_503");
        assert_eq!(e["status"], "scheduled");
        assert_eq!(e["channel"], "sms");
        assert!(e["message_id"].is_string() && e["at"].is_string());
    }

    // stats, table
    let out = tidings_cli(&url, &["stats"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for needle in [
        "live messages",
        "last 24 h",
        "oldest due",
        "paused channels",
        "last errors",
        "http_503",
    ] {
        assert!(
            table.contains(needle),
            "stats output lacks {needle:?}:\n{table}"
        );
    }
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["sms", "sent", "2"]),
        "{table}"
    );

    // status, JSON
    let sent_id = ids.iter().find(|id| **id != ids[2]).unwrap().to_string();
    let out = tidings_cli(&url, &["status", &sent_id, "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["message"]["id"], sent_id.as_str());
    assert_eq!(status["message"]["status"], "sent");
    assert_eq!(status["message"]["attempts"], 2);
    assert_eq!(status["message"]["provider_message_id"], "prov-1");
    let events = status["events"].as_array().unwrap();
    let timeline: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["status"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        timeline,
        [
            ("accepted", "enqueued"),
            ("scheduled", "http_503"),
            ("sent", "provider_accepted")
        ]
    );
    for e in events {
        assert!(e["at"].is_string(), "{e}");
    }

    // status, table: every event with its reason, the recipient masked.
    let out = tidings_cli(&url, &["status", &sent_id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for (status, reason) in &timeline {
        assert!(
            table.lines().any(|l| {
                let words: Vec<_> = l.split_whitespace().collect();
                words.len() > 3 && words[2] == *status && words[3] == *reason
            }),
            "no `{status} {reason}` line:\n{table}"
        );
    }
    let phone: String =
        sqlx::query_scalar("SELECT recipient->>'phone' FROM tidings.messages WHERE id = $1")
            .bind(ids[0])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        !table.contains(&phone) && !table.contains(&phone[1..]),
        "recipient masked, in the events' details too:\n{table}"
    );
    assert!(
        table.contains(&tidings::mask::mask_phone(&phone)),
        "{table}"
    );

    // A message that does not exist: exit 2, one line.
    let missing = Uuid::now_v7().to_string();
    for args in [
        vec!["status", missing.as_str()],
        vec!["status", missing.as_str(), "--json"],
    ] {
        let out = tidings_cli(&url, &args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&missing), "{err}");
        assert!(out.stdout.is_empty());
    }
    // A malformed id: non-zero, one line.
    let out = tidings_cli(&url, &["status", "not-a-uuid"]).await;
    assert!(!out.status.success());
    assert_ne!(
        out.status.code(),
        Some(2),
        "not the same as `no such message`"
    );
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not-a-uuid"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// ops/

#[test]
fn ops_check_sh_passes() {
    if !has_tool("promtool") {
        eprintln!(
            "note: promtool not on PATH: ops/check.sh skipped (CI installs Debian's `prometheus`)"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .arg(root.join("ops/check.sh"))
        .current_dir(root)
        .output()
        .unwrap();
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    eprintln!("{report}");
    assert!(out.status.success(), "ops/check.sh failed:\n{report}");
    assert!(!report.contains("FAIL"), "{report}");
}
