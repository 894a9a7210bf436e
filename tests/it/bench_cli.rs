//! `tidings bench` end to end: the benchmark must measure what it says (every message enqueued, drained, recorded
//! and verified in the database), whatever the figures. No figure is asserted here: speed is not a test.

use sqlx::PgPool;

use crate::support::{tidings_cli, url_of};

async fn bench(url: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    tidings_cli(url, &all).await
}

/// The JSON object on the last line of a successful run.
fn result(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap()
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_burn_down_drains_everything_with_its_events_and_leaves_future_rows_alone(pool: PgPool) {
    let url = url_of(&pool).await;
    let out = bench(
        &url,
        &["--messages", "300", "--scheduled-rows", "200", "--json"],
    )
    .await;
    let r = result(&out);
    assert_eq!(r["messages"], 300);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["provider"], "noop");
    assert!(r["drain_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM tidings.messages WHERE channel = 'bench' AND status = 'sent'"
        )
        .await,
        300
    );
    // One `accepted` and one `sent` event per message: the benchmark keeps the whole history.
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM tidings.message_events e JOIN tidings.messages m ON m.id = e.message_id
              WHERE m.channel = 'bench'"
        )
        .await,
        600
    );
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.messages WHERE channel = 'bench-future' AND status = 'scheduled'").await,
        200
    );
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn two_pools_drain_over_http_to_a_slow_sandbox(pool: PgPool) {
    let url = url_of(&pool).await;
    let out = bench(
        &url,
        &[
            "--messages",
            "200",
            "--provider",
            "sandbox",
            "--provider-latency",
            "2ms",
            "--workers",
            "2",
            "--json",
        ],
    )
    .await;
    let r = result(&out);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["workers"], 2);
    assert_eq!(r["provider"], "sandbox");
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM tidings.messages WHERE channel = 'bench' AND status = 'sent'"
        )
        .await,
        200
    );
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_latency_without_the_sandbox_is_refused_in_one_line(pool: PgPool) {
    let url = url_of(&pool).await;
    let out = bench(&url, &["--messages", "10", "--provider-latency", "5ms"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("--provider-latency: needs --provider sandbox"),
        "{stderr}"
    );
    // Refused before touching the queue.
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.messages").await,
        0
    );
}
