//! The fleet's maintenance runs on one worker, the leader (`tidings_leader` 1 there, 0 elsewhere); another takes
//! over when it stops, or when whatever held the leadership lets go.

use std::time::Duration;

use sqlx::PgPool;
use tidings::metrics::Metrics;
use tidings::shutdown::Shutdown;
use tidings::store::Store;
use tidings::worker::Worker;
use uuid::Uuid;

use crate::support::{config, enqueue_n, sync, url_of, wait_until};

const WORKER: &str = "rescue_interval = \"100ms\"\npoll_interval = \"100ms\"";

async fn start(pool: &PgPool) -> (Metrics, Shutdown) {
    let store = Store::connect(&url_of(pool).await, 4).await.unwrap();
    let metrics = Metrics::new();
    let shutdown = Shutdown::new();
    Worker::new(config(None, WORKER), store)
        .metrics(metrics.clone())
        .shutdown(shutdown.clone())
        .start()
        .await
        .unwrap();
    (metrics, shutdown)
}

/// A message a vanished worker held: processing, its lease long expired, scheduled far away so that only the
/// rescuer can bring it back (to `accepted`, then sent).
async fn orphan(pool: &PgPool) -> Uuid {
    let id = enqueue_n(pool, "sms", 1).await[0];
    sqlx::query(
        "UPDATE tidings.messages SET status = 'processing', lease_id = gen_random_uuid(),
                locked_until = now() - interval '1 minute' WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn rescued(pool: &PgPool, id: Uuid) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT status <> 'processing' FROM tidings.messages WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn one_worker_leads_and_another_takes_over_when_it_stops(pool: PgPool) {
    sync(&pool, &config(None, WORKER)).await;
    let (m1, s1) = start(&pool).await;
    let (m2, s2) = start(&pool).await;
    wait_until(Duration::from_secs(30), "one leader", || async {
        m1.leader.get() + m2.leader.get() == 1
    })
    .await;
    let id = orphan(&pool).await;
    wait_until(Duration::from_secs(30), "the leader rescues", || {
        rescued(&pool, id)
    })
    .await;

    let (leader, follower, stop) = if m1.leader.get() == 1 {
        (&m1, &m2, s1)
    } else {
        (&m2, &m1, s2)
    };
    stop.stop.cancel();
    wait_until(Duration::from_secs(30), "the other takes over", || async {
        follower.leader.get() == 1
    })
    .await;
    assert_eq!(
        leader.leader.get(),
        0,
        "the stopped worker says it leads no more"
    );
    let id = orphan(&pool).await;
    wait_until(Duration::from_secs(30), "the new leader rescues", || {
        rescued(&pool, id)
    })
    .await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_worker_stands_by_while_the_leadership_is_held_and_takes_it_when_let_go(pool: PgPool) {
    sync(&pool, &config(None, WORKER)).await;
    // Another leader, as far as the worker can tell: a session holding the maintenance lock.
    let store = Store::connect(&url_of(&pool).await, 2).await.unwrap();
    let other = store.leader_try().await.unwrap().expect("nobody leads yet");
    let (metrics, _stop) = start(&pool).await;
    let id = orphan(&pool).await;
    // The worker is up and sending (a due message goes out), and still does not lead.
    let due = enqueue_n(&pool, "sms", 1).await[0];
    wait_until(Duration::from_secs(30), "the worker sends", || async {
        sqlx::query_scalar::<_, bool>("SELECT status = 'sent' FROM tidings.messages WHERE id = $1")
            .bind(due)
            .fetch_one(&pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(metrics.leader.get(), 0);
    assert!(
        !rescued(&pool, id).await,
        "no rescue without the leadership"
    );

    other.resign().await;
    wait_until(
        Duration::from_secs(30),
        "the worker takes over and rescues",
        || async { metrics.leader.get() == 1 && rescued(&pool, id).await },
    )
    .await;
}
