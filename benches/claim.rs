//! Criterion benchmarks of the hot SQL: one claim of 1000 due messages, one completion of 1000 outcomes (with
//! their event rows), and one bulk enqueue of 1000 messages, against a real PostgreSQL (`DATABASE_URL`, default
//! 127.0.0.1:5432) in a database of its own, `tidings_bench_sql`, recreated at start.
//!
//! `cargo bench --bench claim`. Skipped with a note when no server answers.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tidings::config::Config;
use tidings::outcome::Outcome;
use tidings::store::{ClaimParams, Completion, Store};
use tidings_client::NewMessage;
use uuid::Uuid;

const BATCH: usize = 1000;
const DB: &str = "tidings_bench_sql";

fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn setup() -> Option<Store> {
    let admin = Store::connect(&server_url(), 1).await.ok()?;
    for sql in [
        format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
        format!("CREATE DATABASE {DB}"),
    ] {
        sqlx::raw_sql(&sql).execute(admin.pool()).await.ok()?;
    }
    let mut url: url::Url = server_url().parse().ok()?;
    url.set_path(DB);
    let store = Store::connect(url.as_str(), 4).await.ok()?;
    store.migrate().await.ok()?;
    let config = Config::parse("[channels.bench]\nkind = \"sandbox\"\nmode = \"noop\"").ok()?;
    store.channel_sync(&config).await.ok()?;
    Some(store)
}

fn batch(offset: usize) -> Vec<NewMessage> {
    (offset..offset + BATCH)
        .map(|i| NewMessage::sms("bench", format!("+3161{:07}", i % 10_000_000)).text("hello"))
        .collect()
}

async fn claim(store: &Store) -> Vec<tidings::message::Message> {
    let channels = ["bench".to_owned()];
    store
        .message_claim(&ClaimParams {
            limit: BATCH as i64,
            lease_id: Uuid::now_v7(),
            lease: Duration::from_secs(60),
            channels: &channels,
        })
        .await
        .expect("claim")
}

async fn complete(store: &Store, claimed: &[tidings::message::Message]) {
    let outcomes: Vec<Completion> = claimed
        .iter()
        .map(|m| Completion {
            id: m.id,
            lease_id: m.lease_id,
            channel: m.channel.clone(),
            started_at: chrono::Utc::now(),
            outcome: Outcome::Sent {
                provider_message_id: None,
                detail: serde_json::Value::Null,
            },
        })
        .collect();
    let applied = store
        .message_complete_many(&outcomes)
        .await
        .expect("complete");
    assert_eq!(applied.len(), outcomes.len());
}

fn sql(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some(store) = rt.block_on(setup()) else {
        eprintln!("benches/claim: no PostgreSQL at DATABASE_URL / 127.0.0.1:5432; skipped");
        return;
    };
    let mut group = c.benchmark_group("sql");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    let mut offset = 0;

    group.bench_function("enqueue_many_1000", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let messages = batch(offset);
                    offset += BATCH;
                    let t = Instant::now();
                    tidings_client::enqueue_many(store.pool(), &messages)
                        .await
                        .expect("enqueue");
                    total += t.elapsed();
                }
                total
            })
        })
    });

    // Claim and completion are timed separately; a backlog is kept ahead of them (not timed).
    group.bench_function("claim_1000", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    tidings_client::enqueue_many(store.pool(), &batch(offset))
                        .await
                        .expect("enqueue");
                    offset += BATCH;
                    let t = Instant::now();
                    let claimed = claim(&store).await;
                    total += t.elapsed();
                    complete(&store, &claimed).await;
                }
                total
            })
        })
    });

    group.bench_function("complete_1000", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    tidings_client::enqueue_many(store.pool(), &batch(offset))
                        .await
                        .expect("enqueue");
                    offset += BATCH;
                    let claimed = claim(&store).await;
                    let t = Instant::now();
                    complete(&store, &claimed).await;
                    total += t.elapsed();
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, sql);
criterion_main!(benches);
