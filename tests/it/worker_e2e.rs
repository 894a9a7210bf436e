//! The worker end to end: several pools, a worker killed with SIGKILL, SIGTERM, and the completer's guards.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use tidings::app::sandbox_server::{Sandbox, SandboxOptions};
use tidings::outcome::Outcome;
use tidings::store::{ClaimParams, Completion};
use tidings_client::Status;
use uuid::Uuid;

use crate::support::{
    ChildWorker, child_config, config, count, enqueue_n, live, start_pools, sync, url_of,
    wait_until,
};

async fn sandbox(latency_ms: u64) -> Sandbox {
    Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        SandboxOptions {
            latency: Duration::from_millis(latency_ms),
            ..SandboxOptions::default()
        },
    )
    .await
    .unwrap()
}

/// Requests the sandbox accepted, per idempotency id.
fn accepted_per_id(sandbox: &Sandbox) -> HashMap<String, usize> {
    let mut per_id = HashMap::new();
    for r in sandbox.requests() {
        if (200..300).contains(&r.status) {
            *per_id
                .entry(r.idempotency_id.expect("sandbox logs the reference"))
                .or_default() += 1;
        }
    }
    per_id
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn two_pools_send_every_message_exactly_once(pool: PgPool) {
    let sandbox = sandbox(0).await;
    let config = config(
        Some(&sandbox.base_url()),
        "concurrency = 200\nclaim_batch = 250\npoll_interval = \"50ms\"",
    );
    sync(&pool, &config).await;
    let ids = enqueue_n(&pool, "sms", 10_000).await;
    let pools = start_pools(&pool, &config, 2).await;
    wait_until(Duration::from_secs(120), "every message final", || async {
        live(&pool).await == 0
    })
    .await;
    pools.stop().await;

    assert_eq!(count(&pool, "sent").await, 10_000);
    let per_id = accepted_per_id(&sandbox);
    assert_eq!(per_id.len(), 10_000, "every message reached the provider");
    assert!(
        per_id.values().all(|n| *n == 1),
        "no message was sent twice"
    );
    for id in ids.iter().step_by(997) {
        assert_eq!(per_id.get(&id.to_string()), Some(&1));
    }
    // One enqueue event and one sent event per message, nothing else.
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM tidings.message_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 20_000);
    sandbox.stop().await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_worker_killed_mid_batch_loses_nothing(pool: PgPool) {
    let sandbox = sandbox(150).await;
    let toml = child_config(
        &sandbox.base_url(),
        "concurrency = 100\nlease = \"2s\"\nrescue_interval = \"300ms\"\npoll_interval = \"100ms\"",
    );
    sync(&pool, &tidings::config::Config::parse(&toml).unwrap()).await;
    enqueue_n(&pool, "sms", 2000).await;
    let url = url_of(&pool).await;

    let first = ChildWorker::spawn(&url, &toml);
    wait_until(Duration::from_secs(60), "some messages sent", || async {
        count(&pool, "sent").await >= 300
    })
    .await;
    first.signal("KILL");
    let status = first.wait(Duration::from_secs(10)).await;
    assert!(!status.success(), "killed, not exited");
    let held: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM tidings.messages WHERE status = 'processing'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        !held.is_empty(),
        "the worker died holding messages (mid-batch)"
    );

    let second = ChildWorker::spawn(&url, &toml);
    wait_until(Duration::from_secs(120), "every message final", || async {
        live(&pool).await == 0
    })
    .await;
    second.signal("TERM");
    assert!(second.wait(Duration::from_secs(30)).await.success());

    assert_eq!(count(&pool, "sent").await, 2000, "none lost");
    let rescued: std::collections::HashSet<Uuid> = sqlx::query_scalar(
        "SELECT message_id FROM tidings.message_events WHERE reason = 'lease_expired'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    // (A starved second worker may see a lease of its own run out too; that is a rescue as well, not a loss.)
    for id in &held {
        assert!(
            rescued.contains(id),
            "{id}, held by the dead worker, shows no rescue"
        );
    }
    // A message the provider accepted more than once has the reason in its history: its lease expired
    // mid-send (the dead worker's messages), or, on a starved machine, its send outlived the channel timeout
    // and was retried. Every extra send is one such event; none happens silently.
    for (id, n) in accepted_per_id(&sandbox) {
        if n > 1 {
            let history: Vec<(String, String)> = sqlx::query_as(
                "SELECT status::text, reason FROM tidings.message_events WHERE message_id = $1::uuid ORDER BY id",
            )
            .bind(&id)
            .fetch_all(&pool)
            .await
            .unwrap();
            let resends = history
                .iter()
                .filter(|(status, reason)| reason == "lease_expired" || status == "scheduled")
                .count();
            assert!(
                resends + 1 >= n,
                "{id} accepted {n} times, history {history:?}"
            );
        }
    }
    sandbox.stop().await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn sigterm_finishes_in_flight_work_and_leaves_nothing_processing(pool: PgPool) {
    let sandbox = sandbox(100).await;
    let toml = child_config(
        &sandbox.base_url(),
        "concurrency = 100\ngrace = \"20s\"\npoll_interval = \"100ms\"",
    );
    sync(&pool, &tidings::config::Config::parse(&toml).unwrap()).await;
    enqueue_n(&pool, "sms", 3000).await;
    let url = url_of(&pool).await;

    let worker = ChildWorker::spawn(&url, &toml);
    wait_until(Duration::from_secs(60), "some messages sent", || async {
        count(&pool, "sent").await >= 200
    })
    .await;
    worker.signal("TERM");
    let status = worker.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "exit 0 after SIGTERM, got {status:?}");
    assert_eq!(
        count(&pool, "processing").await,
        0,
        "nothing stuck in processing"
    );
    let sent = count(&pool, "sent").await;
    assert!(sent < 3000, "stopped claiming before the end");
    assert_eq!(sent + count(&pool, "accepted").await, 3000, "nothing lost");
    let released: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tidings.message_events WHERE reason = 'released'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        released, 0,
        "in-flight sends finished within the grace period"
    );
    sandbox.stop().await;
}

#[tokio::test]
async fn sigterm_during_start_up_is_a_clean_exit() {
    // A "database" that accepts the connection and never answers: the worker is stuck starting up.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://postgres@{}/tidings",
        listener.local_addr().unwrap()
    );
    let worker = ChildWorker::spawn(&url, &child_config("http://127.0.0.1:9", ""));
    let held = tokio::task::spawn_blocking(move || listener.accept().unwrap().0)
        .await
        .unwrap();
    worker.signal("TERM");
    let status = worker.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "exit 0, got {status:?}");
    drop(held);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn sigterm_past_the_grace_period_releases_in_flight_messages(pool: PgPool) {
    let sandbox = sandbox(1500).await;
    let toml = child_config(
        &sandbox.base_url(),
        "concurrency = 50\ngrace = \"100ms\"\npoll_interval = \"100ms\"\nlease = \"10s\"",
    )
    .replace("timeout = \"1s\"", "timeout = \"3s\"");
    sync(&pool, &tidings::config::Config::parse(&toml).unwrap()).await;
    enqueue_n(&pool, "sms", 200).await;
    let url = url_of(&pool).await;

    let worker = ChildWorker::spawn(&url, &toml);
    wait_until(Duration::from_secs(30), "a batch in flight", || async {
        count(&pool, "processing").await > 0
    })
    .await;
    worker.signal("TERM");
    assert!(worker.wait(Duration::from_secs(30)).await.success());
    assert_eq!(count(&pool, "processing").await, 0);
    let released: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tidings.message_events WHERE reason = 'released' AND status = 'accepted'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        released > 0,
        "in-flight messages were released, not left to the rescuer"
    );
    assert_eq!(
        count(&pool, "accepted").await + count(&pool, "sent").await,
        200
    );
    sandbox.stop().await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_completer_never_overwrites_a_rescued_or_canceled_message(pool: PgPool) {
    let config = config(None, "");
    let store = sync(&pool, &config).await;
    let ids = enqueue_n(&pool, "sms", 2).await;
    let lease_id = Uuid::now_v7();
    let claimed = store
        .message_claim(&ClaimParams {
            limit: 10,
            lease_id,
            lease: Duration::ZERO,
            channels: &["sms".into()],
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    // The lease (0 s) is already over: the rescuer hands both back; then the producer cancels one.
    assert_eq!(store.message_rescue(100).await.unwrap(), 2);
    assert!(tidings_client::cancel(&pool, ids[1]).await.unwrap());

    let sent = |m: &tidings::message::Message| Completion {
        id: m.id,
        lease_id,
        channel: m.channel.clone(),
        started_at: chrono::Utc::now(),
        outcome: Outcome::Sent {
            provider_message_id: Some("p".into()),
            detail: json!({}),
        },
    };
    let applied = store
        .message_complete_many(&claimed.iter().map(sent).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(applied.is_empty(), "stale outcomes are not written");
    let status = |id| {
        let pool = pool.clone();
        async move {
            tidings_client::status(&pool, id)
                .await
                .unwrap()
                .unwrap()
                .status
        }
    };
    assert_eq!(status(ids[0]).await, Status::Accepted);
    assert_eq!(status(ids[1]).await, Status::Canceled);
    let events = tidings_client::events(&pool, ids[0]).await.unwrap();
    let reasons: Vec<_> = events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["enqueued", "lease_expired"],
        "no event for the stale outcome"
    );
    assert_eq!(events[1].attempt, Some(1), "the lost attempt counts");
}
