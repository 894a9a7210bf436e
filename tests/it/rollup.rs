//! The per-minute counts of status changes (migration 0013) that the 24-hour stats and the dashboard's chart read:
//! they say what the events say, before a rollup pass (from the events), after it (from the rollup), and after a
//! change committed late into a minute already rolled up.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;
use tidings::maintenance::Maintenance;
use tidings::metrics::Metrics;
use tidings::store::Store;

use crate::support::{config, enqueue_n, sync};

const DAY: Duration = Duration::from_secs(24 * 3600);

async fn last_day(store: &Store) -> BTreeMap<String, i64> {
    store
        .stats_recent(DAY)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.status, r.count))
        .collect()
}

async fn rolled_up(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(n), 0)::bigint FROM tidings.event_minutes")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_rollup_counts_what_the_events_say_and_recounts_late_commits(pool: PgPool) {
    let config = config(None, "");
    let store = sync(&pool, &config).await;
    let ids = enqueue_n(&pool, "sms", 5).await;
    // Two and a half minutes ago (so the next pass recounts their minute), with nothing rolled up since two hours
    // ago.
    sqlx::raw_sql(
        "UPDATE tidings.message_events SET at = at - interval '150 seconds';
         UPDATE tidings.event_rollup_state SET done_before = date_trunc('minute', now() - interval '2 hours');",
    )
    .execute(&pool)
    .await
    .unwrap();
    let expected = BTreeMap::from([("accepted".to_owned(), 5)]);
    assert_eq!(last_day(&store).await, expected, "from the events alone");
    assert_eq!(rolled_up(&pool).await, 0);

    let maintenance = Maintenance::new(store.clone(), Metrics::new(), &config);
    maintenance.roll_up().await;
    assert_eq!(rolled_up(&pool).await, 5, "the five enqueues are rolled up");
    let behind: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - done_before)::float8 FROM tidings.event_rollup_state",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        (60.0..180.0).contains(&behind),
        "rolled up to the last whole minute that ended a minute ago, not {behind} s back"
    );
    assert_eq!(last_day(&store).await, expected, "from the rollup");
    let chart = store.stats_timeline(DAY).await.unwrap();
    assert_eq!(
        chart
            .iter()
            .map(|m| m.sent + m.failed + m.deferred)
            .sum::<i64>(),
        0,
        "enqueues are neither sent, failed nor deferred: {chart:?}"
    );

    // A change whose transaction began three minutes before the rolled-up end commits only now: the next pass
    // recounts the last five minutes (the enqueues' minute among them) and finds it; the chart shows it.
    sqlx::query(
        "INSERT INTO tidings.message_events (message_id, at, status, reason, attempt)
         SELECT $1, done_before - interval '3 minutes', 'sent', 'provider_accepted', 1
           FROM tidings.event_rollup_state",
    )
    .bind(ids[0])
    .execute(&pool)
    .await
    .unwrap();
    maintenance.roll_up().await;
    assert_eq!(
        last_day(&store).await,
        BTreeMap::from([("accepted".to_owned(), 5), ("sent".to_owned(), 1)])
    );
    let chart = store.stats_timeline(DAY).await.unwrap();
    assert_eq!(chart.iter().map(|m| m.sent).sum::<i64>(), 1, "{chart:?}");

    // A change of this minute is counted from the events, before any pass.
    sqlx::query(
        "INSERT INTO tidings.message_events (message_id, status, reason, attempt)
         VALUES ($1, 'sent', 'provider_accepted', 1)",
    )
    .bind(ids[1])
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(last_day(&store).await["sent"], 2);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_fresh_install_catches_up_from_its_first_event_in_one_pass(pool: PgPool) {
    // A fresh install's state starts 25 hours back; with events only from the last minutes, one pass counts them
    // and ends at the last whole minute, instead of walking the empty hours one pass each.
    let config = config(None, "");
    let store = sync(&pool, &config).await;
    enqueue_n(&pool, "sms", 3).await;
    sqlx::query("UPDATE tidings.message_events SET at = at - interval '3 minutes'")
        .execute(&pool)
        .await
        .unwrap();
    let done = store.event_rollup(DAY).await.unwrap().expect("a pass");
    let behind = chrono::Utc::now() - done;
    assert!(
        behind < chrono::Duration::minutes(3),
        "one pass reaches the last whole minute, not {behind} back"
    );
    assert_eq!(rolled_up(&pool).await, 3);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn one_process_rolls_up_at_a_time(pool: PgPool) {
    let config = config(None, "");
    let store = sync(&pool, &config).await;
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tidings.event_rollup_state FOR UPDATE")
        .execute(&mut *other)
        .await
        .unwrap();
    assert_eq!(
        store.event_rollup(DAY).await.unwrap(),
        None,
        "another process holds the pass: this one skips it, without waiting"
    );
    other.rollback().await.unwrap();
    assert!(store.event_rollup(DAY).await.unwrap().is_some());
}

/// Live counts are exact up to a cap; past it they are ANALYZE's estimate, flagged. (A small table is analyzed
/// whole, so here the estimate is exact too, which lets the test compare it.)
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn live_counts_past_the_cap_are_the_estimate_and_say_so(pool: PgPool) {
    let config = config(None, "");
    let store = sync(&pool, &config).await;
    let ids = enqueue_n(&pool, "sms", 30).await;
    sqlx::query("UPDATE tidings.messages SET status = 'scheduled' WHERE id = ANY ($1)")
        .bind(&ids[..10])
        .execute(&pool)
        .await
        .unwrap();
    let exact = |rows: Vec<tidings::store::StatusCount>| {
        rows.into_iter()
            .map(|r| ((r.channel, r.status), r.count))
            .collect::<BTreeMap<_, _>>()
    };
    let expected = BTreeMap::from([
        (("sms".to_owned(), "accepted".to_owned()), 20),
        (("sms".to_owned(), "scheduled".to_owned()), 10),
    ]);
    let (rows, estimated) = store.stats_live_bounded(1000).await.unwrap();
    assert_eq!((exact(rows), estimated), (expected.clone(), false));

    sqlx::query("ANALYZE tidings.messages")
        .execute(&pool)
        .await
        .unwrap();
    let (rows, estimated) = store.stats_live_bounded(25).await.unwrap();
    assert_eq!((exact(rows), estimated), (expected, true));
}
