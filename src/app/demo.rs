//! `tidings demo`: migrate a fresh database, start the sandbox provider in-process, enqueue a realistic mix,
//! run a worker pool until every message is final, and print each message's transitions and a summary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tidings_client::{Fallback, NewMessage, Trigger, UseCase};
use uuid::Uuid;

use super::local_pg::LocalPostgres;
use super::sandbox_server::{Sandbox, SandboxOptions};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::worker::Worker;

const DEMO_DB: &str = "tidings_demo";

/// Where the demo's PostgreSQL comes from.
struct Server {
    url: String,
    _local: Option<LocalPostgres>,
}

/// Finds a PostgreSQL server: `DATABASE_URL`, else 127.0.0.1:5432, else a private cluster from local binaries.
async fn server() -> Result<Server> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        println!("using the PostgreSQL server of DATABASE_URL");
        return Ok(Server { url, _local: None });
    }
    let default = "postgres://postgres@127.0.0.1:5432/postgres".to_owned();
    if tokio::net::TcpStream::connect("127.0.0.1:5432")
        .await
        .is_ok()
    {
        println!(
            "using the PostgreSQL server on 127.0.0.1:5432 (set DATABASE_URL to choose another)"
        );
        return Ok(Server {
            url: default,
            _local: None,
        });
    }
    match LocalPostgres::find_binaries() {
        Some(bin) => {
            println!(
                "no DATABASE_URL and nothing on 127.0.0.1:5432: starting a throwaway cluster from {}",
                bin.display()
            );
            let local = tokio::task::spawn_blocking(move || LocalPostgres::start(bin))
                .await
                .map_err(|e| Error::Other(e.to_string()))??;
            Ok(Server { url: local.url(), _local: Some(local) })
        }
        None => Err(Error::Other(
            "no PostgreSQL found: set DATABASE_URL, install it (apt-get install postgresql), or run `docker compose up -d postgres` and set DATABASE_URL=postgres://postgres:tidings@127.0.0.1:5432/postgres".into(),
        )),
    }
}

/// Creates (or re-creates) the demo database on the server and returns its URL.
async fn fresh_database(server_url: &str) -> Result<String> {
    let admin = Store::connect(server_url, 1).await?;
    for sql in [
        format!("DROP DATABASE IF EXISTS {DEMO_DB} WITH (FORCE)"),
        format!("CREATE DATABASE {DEMO_DB}"),
    ] {
        sqlx::raw_sql(&sql).execute(admin.pool()).await?;
    }
    admin.pool().close().await;
    let mut url: url::Url = server_url
        .parse()
        .map_err(|e| Error::Config(format!("DATABASE_URL: {e}")))?;
    url.set_path(DEMO_DB);
    Ok(url.to_string())
}

/// The credentials of the demo's channels, by environment-variable name. The demo hands them to the adapters
/// through [`Worker::env`] (to the adapters and the receipt listener): they exist for this
/// process only and never touch the real environment.
const DEMO_ENV: &[(&str, &str)] = &[
    ("DEMO_BIRD_ACCESS_KEY", "demo-bird-access-key"),
    ("DEMO_BIRD_RECEIPT_SECRET", "demo-bird-receipt-secret"),
    ("DEMO_INSTAPLY_TOKEN", "demo-instaply-token"),
    ("DEMO_INSIDER_USERKEY", "demo-insider-user"),
    ("DEMO_INSIDER_PASSWORD", "demo-insider-password"),
    ("DEMO_INSTANT_APP_KEY", "demo-instant-app-key"),
    ("DEMO_WEBHOOK_SECRET", "demo-webhook-secret"),
];

fn demo_env(var: &str) -> Option<String> {
    DEMO_ENV
        .iter()
        .find(|(name, _)| *name == var)
        .map(|(_, value)| (*value).to_owned())
}

fn demo_config(sandbox: &str) -> Result<Config> {
    // Every channel gets the same short timeout and retry budget, so the injected faults resolve quickly.
    let common = r#"timeout = "2s"
        max_attempts = 4
        backoff = { base = "300ms", cap = "2s" }"#;
    Config::parse(&format!(
        r#"
        [worker]
        concurrency = 64
        poll_interval = "200ms"
        rescue_interval = "1s"
        grace = "5s"
        [http]
        listen = "127.0.0.1:0"
        [channels.sms]
        kind = "sandbox"
        base_url = "{sandbox}"
        default_timezone = "Europe/Amsterdam"
        {common}
        [channels.bird]
        kind = "bird_sms"
        base_url = "{sandbox}"
        workspace_id = "demo-workspace"
        channel_id = "demo-sms"
        access_key_env = "DEMO_BIRD_ACCESS_KEY"
        receipt_secret_env = "DEMO_BIRD_RECEIPT_SECRET"
        {common}
        [channels.whatsapp]
        kind = "instaply_whatsapp"
        base_url = "{sandbox}"
        token_env = "DEMO_INSTAPLY_TOKEN"
        {common}
        [channels.push]
        kind = "insider_push"
        base_url = "{sandbox}"
        userkey_env = "DEMO_INSIDER_USERKEY"
        password_env = "DEMO_INSIDER_PASSWORD"
        {common}
        [channels.instant]
        kind = "instant_app"
        base_url = "{sandbox}"
        org_channel_api_id = "demo-org-channel"
        api_key_env = "DEMO_INSTANT_APP_KEY"
        opt_out_suffix = "STOP2END"
        {common}
        [channels.hook]
        kind = "webhook"
        base_url = "{sandbox}/webhook"
        secret_env = "DEMO_WEBHOOK_SECRET"
        {common}
        "#
    ))
}

/// One demo message: what it is, for the printout.
struct Planned {
    label: &'static str,
    message: NewMessage,
}

fn mix() -> Vec<Planned> {
    let mut v = Vec::new();
    let texts = [
        "Your order #1042 has shipped",
        "Your table for 2 is confirmed for 19:30",
        "Payment of EUR 24.90 received, thank you",
        "Your parcel is at the pick-up point",
        "Reminder: dentist appointment tomorrow 09:15",
        "Your driver is 3 minutes away",
    ];
    for (i, t) in texts.iter().enumerate() {
        v.push(Planned {
            label: "sms, transactional",
            message: NewMessage::sms("sms", format!("+3161234{:04}", 5000 + i))
                .text(*t)
                .tags(["orders"]),
        });
    }
    for i in 0..3 {
        v.push(Planned {
            label: "sms, 2fa code",
            message: NewMessage::sms("sms", format!("+4479460{:05}", 10_000 + i))
                .text(format!("Your login code is {}", 481_000 + i * 7))
                .use_case(UseCase::TwoFactor),
        });
    }
    v.push(Planned {
        label: "mms, two images",
        message: NewMessage::sms("sms", "+14155550123").images(
            [
                "https://example.com/menu-1.jpg",
                "https://example.com/menu-2.jpg",
            ],
            Some("This week's menu"),
        ),
    });
    v.push(Planned {
        label: "sms, provider template",
        message: NewMessage::sms("sms", "+33612345678").template(
            Uuid::parse_str("ce6a2fd6-b2fa-4f5a-a2cd-f3bd15883318").expect("uuid"),
            "latest",
            "fr",
            [("name", "Camille")],
        ),
    });
    v.push(Planned {
        label: "sms, idempotent by reference",
        message: NewMessage::sms("sms", "+31612349999")
            .text("Your invoice INV-77 is ready")
            .reference("invoice-77"),
    });
    v.extend(every_kind());
    v
}

/// One or more messages for each provider kind (all answered by the sandbox).
fn every_kind() -> Vec<Planned> {
    let segment = Uuid::parse_str("0b7c2f5e-8a7d-4f8e-9a38-2f6d1c1e5a10").expect("uuid");
    let mut parameters = serde_json::Map::new();
    parameters.insert("topic".into(), "your delivery slot".into());
    vec![
        Planned {
            label: "bird_sms, then a delivered receipt",
            message: NewMessage::sms("bird", "+31612347001").text("Your courier arrives at 14:10"),
        },
        Planned {
            label: "bird_sms, then a delivery_failed receipt",
            message: NewMessage::sms("bird", "+31612347002").text("Your courier arrives at 15:30"),
        },
        Planned {
            label: "whatsapp, open window: free text",
            message: NewMessage::whatsapp("whatsapp", "thread-1001")
                .whatsapp_text("Your table for 4 is ready")
                .fallback_template("HXtable_ready_v2")
                .then_thread_status("resolved"),
        },
        Planned {
            label: "whatsapp, closed window: fallback template",
            message: NewMessage::whatsapp("whatsapp", "closed-2002")
                .whatsapp_text("Your table for 2 is ready")
                .fallback_template("HXtable_ready_v2"),
        },
        Planned {
            label: "whatsapp, closed window, no template",
            message: NewMessage::whatsapp("whatsapp", "closed-3003")
                .whatsapp_text("Are you still coming tonight?"),
        },
        Planned {
            label: "whatsapp, closed window, no template: falls back to sms",
            message: NewMessage::whatsapp("whatsapp", "closed-4004")
                .whatsapp_text("Your table for 2 is ready")
                .fallback(
                    Fallback::to(
                        NewMessage::sms("sms", "+31612347004").text("Your table for 2 is ready"),
                    )
                    .on([Trigger::Rejected, Trigger::SendingFailed]),
                ),
        },
        Planned {
            label: "bird_sms, no receipt within 2 s: falls back to sms",
            message: NewMessage::sms("bird", "+31612347005")
                .text("Your courier is at the door")
                .fallback(
                    Fallback::to(
                        NewMessage::sms("sms", "+31612347005").text("Your courier is at the door"),
                    )
                    .on([Trigger::SendingFailed, Trigger::Expired])
                    .undelivered_after(2),
                ),
        },
        Planned {
            label: "insider_push broadcast to a segment",
            message: NewMessage::push("push", ["demo-app-ios", "demo-app-android"])
                .segment(segment)
                .push_content(serde_json::json!({ "title": "Weekend sale", "message": "20% off until Sunday" }))
                .last_engaged_only()
                .use_case(UseCase::Promotional),
        },
        Planned {
            label: "instant_app link",
            message: NewMessage::instant_app(
                "instant",
                "+12125550123",
                "schedule-call",
                "Pick a delivery slot that suits you",
            )
            .instant_app_parameters(parameters),
        },
        Planned {
            label: "webhook to an in-house gateway",
            message: NewMessage::raw(
                "hook",
                serde_json::json!({ "user_id": 7 }),
                serde_json::json!({ "event": "order_shipped", "order": 1042 }),
            ),
        },
    ]
}

/// Runs the demo.
pub async fn run(serve: bool) -> Result<()> {
    let started = Instant::now();
    let server = server().await?;
    let url = fresh_database(&server.url).await?;
    let store = Store::connect(&url, 10).await?;
    store.migrate().await?;
    println!("database {DEMO_DB} created and migrated");

    // Some 429s (Retry-After: 1 s) and 503s, so retries and the channel pause show up.
    let sandbox = Sandbox::start(
        "127.0.0.1:0".parse().expect("addr"),
        SandboxOptions {
            latency: Duration::from_millis(15),
            fail_429: 0.12,
            retry_after_secs: 1,
            fail_5xx: 0.12,
            ..SandboxOptions::default()
        },
    )
    .await?;
    println!(
        "sandbox provider on {} (15 ms latency, 12% 429, 12% 503)",
        sandbox.base_url()
    );
    let config = demo_config(&sandbox.base_url())?;
    println!(
        "channels, all answered by the sandbox: {}",
        config
            .channels
            .iter()
            .map(|(name, ch)| format!("{name} ({})", ch.kind))
            .collect::<Vec<_>>()
            .join(", ")
    );
    store.channel_sync(&config).await?;

    let mut labels: BTreeMap<Uuid, &'static str> = BTreeMap::new();
    let mut tx = store.pool().begin().await?;
    for p in mix() {
        let id = p.message.enqueue(&mut *tx).await?;
        labels.insert(id, p.label);
    }
    tx.commit().await?;
    // The same reference again: idempotent, the first id comes back and nothing is inserted.
    let again = NewMessage::sms("sms", "+31612349999")
        .text("Your invoice INV-77 is ready")
        .reference("invoice-77")
        .enqueue(store.pool())
        .await?;
    println!("re-enqueued reference invoice-77: same id {again} (nothing inserted)");

    let later = NewMessage::sms("sms", "+31612340001")
        .text("See you next week!")
        .scheduled_for(Utc::now() + chrono::Duration::days(7))
        .enqueue(store.pool())
        .await?;
    labels.insert(later, "sms, scheduled in 7 days, then canceled");
    let short = NewMessage::sms("sms", "+31612340002")
        .text("Flash sale ends in 1 second")
        .use_case(UseCase::Promotional)
        .validity(1)
        .enqueue(store.pool())
        .await?;
    labels.insert(short, "sms, validity 1 s (expires before a worker runs)");
    // A rolled-back enqueue leaves nothing behind.
    let mut tx = store.pool().begin().await?;
    NewMessage::sms("sms", "+31612340003")
        .text("never sent")
        .enqueue(&mut *tx)
        .await?;
    tx.rollback().await?;
    println!(
        "enqueued {} messages (one more inside a rolled-back transaction: not queued)",
        labels.len()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let canceled = tidings_client::cancel(store.pool(), later).await?;
    println!("canceled the scheduled message: {canceled}");

    println!("starting a worker pool…");
    let shutdown = Shutdown::new();
    let config_for_api = config.clone();
    // With the OTEL_* variables set (a local Jaeger, say), the demo's attempts are traced too.
    let telemetry = crate::telemetry::TelemetryConfig::from_env()?
        .map(|c| crate::telemetry::Telemetry::start(&c))
        .transpose()?;
    let running = Worker::new(config, store.clone())
        .env(std::sync::Arc::new(demo_env))
        .telemetry(telemetry.clone())
        .shutdown(shutdown.clone())
        .serve_http()
        .start()
        .await?;
    let listen = running.http_addr.expect("the demo worker serves HTTP");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let live: i64 = store.stats_live().await?.iter().map(|r| r.count).sum();
        if live == 0 {
            break;
        }
        if Instant::now() > deadline {
            shutdown.stop.cancel();
            return Err(Error::Other(format!(
                "{live} messages still live after 90 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The fallback steps the chains created are messages of their own: shown with the others.
    for id in labels.keys().copied().collect::<Vec<_>>() {
        for link in store.message_chain(id).await? {
            if link.step > 0 {
                let label = match link.trigger.as_deref() {
                    Some("undelivered") => {
                        "fallback step: sms, as no delivered receipt came within 2 s"
                    }
                    Some("rejected") => "fallback step: sms, as the whatsapp message was rejected",
                    _ => "fallback step",
                };
                labels.insert(link.id, label);
            }
        }
    }
    // The provider's side of receipts, answered by the running worker's listener.
    let client = crate::provider::http::client()?;
    let receipts = send_receipts(&store, &client, listen, &labels).await;
    shutdown.stop.cancel();
    // The worker stops its listener when it has drained.
    running.wait().await?;
    if let Some(t) = telemetry {
        t.shutdown().await;
    }
    receipts?;

    println!();
    let mut summary: BTreeMap<String, usize> = BTreeMap::new();
    for (id, label) in &labels {
        let message = store
            .message_get(*id)
            .await?
            .ok_or_else(|| Error::Other(format!("{id} vanished")))?;
        let events = store.message_events(*id).await?;
        let status = message["status"].as_str().unwrap_or("?").to_owned();
        println!(
            "{id}  {label}  to {}",
            crate::mask::mask_recipient(&message["recipient"])
        );
        let t0: DateTime<Utc> = events.first().map_or_else(Utc::now, |e| e.at);
        for e in &events {
            println!(
                "    +{:>7.3}s  {:<15} {:<20}{}",
                (e.at - t0).num_milliseconds() as f64 / 1000.0,
                e.status.as_str(),
                e.reason,
                describe(e.attempt, e.detail.as_ref(), t0)
            );
        }
        *summary.entry(status).or_default() += 1;
    }
    let requests = sandbox.requests();
    println!();
    println!(
        "summary: {} messages, all final: {}",
        labels.len(),
        summary
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &requests {
        *per_kind.entry(r.kind).or_default() += 1;
    }
    println!(
        "sandbox saw {} requests ({}; {} answered 429, {} answered 503) in {:.1} s",
        requests.len(),
        per_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        requests.iter().filter(|r| r.status == 429).count(),
        requests.iter().filter(|r| r.status == 503).count(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "inspect one yourself: DATABASE_URL={url} tidings status {}",
        labels.keys().next().expect("messages")
    );
    sandbox.stop().await;
    if serve {
        // The dashboard over the demo's database: `[api]` with no token is open, and only on loopback.
        let stop = tokio_util::sync::CancellationToken::new();
        let (addr, task) =
            crate::api::start(&config_for_api, store.clone(), &demo_env, stop.clone()).await?;
        println!();
        println!("dashboard: http://{addr}/  (the demo's messages; Ctrl-C to stop)");
        crate::shutdown::signal().await;
        stop.cancel();
        let _ = task.await;
    } else {
        println!("see it in the dashboard: cargo run -- demo --serve");
    }
    store.pool().close().await;
    Ok(())
}

/// Plays the provider's side of delivery receipts: a signed callback to the worker's `/receipts/bird` for each
/// `bird` message that went out, "delivered" for the first and "delivery_failed" for the second, and the first
/// once more (a duplicate, answered 200 and changing nothing).
async fn send_receipts(
    store: &Store,
    client: &reqwest::Client,
    listen: std::net::SocketAddr,
    labels: &BTreeMap<Uuid, &'static str>,
) -> Result<()> {
    let secret = demo_env("DEMO_BIRD_RECEIPT_SECRET").expect("demo secret");
    let mut sent = Vec::new();
    for id in labels.keys() {
        let Some(message) = store.message_get(*id).await? else {
            continue;
        };
        if message["channel"] == "bird" && message["status"] == "sent" {
            sent.push((*id, message["provider_message_id"].clone()));
        }
    }
    let mut plan: Vec<(Uuid, Value, &str)> = sent
        .iter()
        .enumerate()
        .map(|(i, (id, provider_id))| {
            let status = if i % 2 == 0 {
                "delivered"
            } else {
                "delivery_failed"
            };
            (*id, provider_id.clone(), status)
        })
        .collect();
    if let Some(first) = plan.first().cloned() {
        plan.push(first);
    }
    println!();
    println!("delivery receipts, signed as the provider would, to the worker's /receipts/bird:");
    for (id, provider_id, status) in plan {
        let body = serde_json::to_vec(&serde_json::json!({
            "id": provider_id,
            "reference": id,
            "status": status,
            "reason": (status == "delivery_failed").then_some("handset unreachable"),
            "lastStatusAt": Utc::now(),
        }))
        .map_err(|e| Error::Other(format!("receipt: {e}")))?;
        let timestamp = Utc::now().timestamp().to_string();
        let answer = client
            .post(format!("http://{listen}/receipts/bird"))
            .header(crate::receipts::TIMESTAMP_HEADER, &timestamp)
            .header(
                crate::receipts::SIGNATURE_HEADER,
                crate::receipts::sign(secret.as_bytes(), &timestamp, &body),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| Error::Other(format!("receipt: {e}")))?;
        let code = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        println!("  {status:<15} for {id} → {code} {}", text.trim());
    }
    Ok(())
}

fn describe(attempt: Option<i32>, detail: Option<&Value>, t0: DateTime<Utc>) -> String {
    let mut parts = Vec::new();
    if let Some(a) = attempt.filter(|a| *a > 0) {
        parts.push(format!("attempt {a}"));
    }
    if let Some(d) = detail {
        if let Some(s) = d.get("http_status") {
            parts.push(format!("HTTP {s}"));
        }
        if let Some(sent_as) = d.get("sent_as").and_then(Value::as_str) {
            parts.push(format!("as {sent_as}"));
        }
        if let Some(r) = d.get("provider_reason").and_then(Value::as_str) {
            parts.push(format!("provider: {r}"));
        }
        if let Some(r) = d.get("retry_after").and_then(Value::as_str) {
            parts.push(format!("Retry-After {r}"));
        }
        if let Some(until) = d
            .get("until")
            .and_then(Value::as_str)
            .and_then(|u| u.parse::<DateTime<Utc>>().ok())
        {
            parts.push(format!(
                "until +{:.3}s",
                (until - t0).num_milliseconds() as f64 / 1000.0
            ));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("  ({})", parts.join(", "))
    }
}
