//! The partitioned history (issue 16, migration 0014): what the mover takes out of the hot tables and what it
//! leaves, readers that see both sides, retention by whole days, and the migration path of a populated database
//! (a million messages moved online, in batches, resumably, while a worker drains new ones).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::PgPool;
use tidings::maintenance::Maintenance;
use tidings::metrics::Metrics;
use tidings::store::MessageListParams;
use uuid::Uuid;

use crate::support::{config, enqueue_n, start_pools, sync, wait_until};

/// A config whose history takes messages finished more than an hour ago.
fn history_config() -> tidings::config::Config {
    config(None, "history_after = \"1h\"\nretention = \"7d\"")
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn ids(pool: &PgPool, sql: &str) -> BTreeSet<Uuid> {
    sqlx::query_scalar::<_, Uuid>(sql)
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Sets the status of `ids`, last changed `hours_ago`.
async fn finish(pool: &PgPool, ids: &[Uuid], status: &str, hours_ago: i32) {
    sqlx::query(
        "UPDATE tidings.messages SET status = $2::tidings.message_status,
                updated_at = now() - make_interval(hours => $3)
          WHERE id = ANY ($1)",
    )
    .bind(ids)
    .bind(status)
    .bind(hours_ago)
    .execute(pool)
    .await
    .unwrap();
}

/// The rollup has counted every event up to now (the mover waits for it).
async fn rolled_up(pool: &PgPool) {
    sqlx::query("UPDATE tidings.event_rollup_state SET done_before = now()")
        .execute(pool)
        .await
        .unwrap();
}

/// Gives `id` (and its events) the id of a message created `days` ago.
async fn created_days_ago(pool: &PgPool, id: Uuid, days: i32) -> Uuid {
    created_hours_ago(pool, id, days * 24).await
}

/// Gives `id` (and its events) the id of a message created `hours` ago.
async fn created_hours_ago(pool: &PgPool, id: Uuid, hours: i32) -> Uuid {
    let new: Uuid = sqlx::query_scalar(
        "WITH n AS (SELECT tidings.uuid_v7(now() - make_interval(hours => $2)) AS id),
              m AS (UPDATE tidings.messages SET id = (SELECT id FROM n),
                           created_at = now() - make_interval(hours => $2) WHERE id = $1)
         UPDATE tidings.message_events SET message_id = (SELECT id FROM n) WHERE message_id = $1
         RETURNING (SELECT id FROM n)",
    )
    .bind(id)
    .bind(hours)
    .fetch_one(pool)
    .await
    .unwrap();
    new
}

fn day_of(days_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days_ago))
        .format("%Y%m%d")
        .to_string()
}

async fn partition_exists(pool: &PgPool, table: &str, days_ago: i64) -> bool {
    sqlx::query_scalar(&format!(
        "SELECT to_regclass('tidings.{table}_p{}') IS NOT NULL",
        day_of(days_ago)
    ))
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn columns_match_the_hot_tables(pool: PgPool) {
    // The mover inserts `SELECT *` of what it deleted: the history must have the hot tables' columns, in order.
    for (hot, history) in [
        ("messages", "message_history"),
        ("message_events", "message_event_history"),
    ] {
        let columns = |t: &'static str| {
            sqlx::query_as::<_, (String, String)>(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                  WHERE table_schema = 'tidings' AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind(t)
            .fetch_all(&pool)
        };
        let (a, b) = (columns(hot).await.unwrap(), columns(history).await.unwrap());
        assert!(!a.is_empty());
        assert_eq!(a, b, "tidings.{history} must have tidings.{hot}'s columns");
    }
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_mover_takes_what_can_no_longer_change_and_readers_see_both_sides(pool: PgPool) {
    let config = history_config();
    let store = sync(&pool, &config).await;
    // Created three hours ago (the mover looks only at messages created before `history_after`).
    let fresh = enqueue_n(&pool, "sms", 40).await;
    let mut all = Vec::new();
    for id in fresh {
        all.push(created_hours_ago(&pool, id, 3).await);
    }

    // Move: finished two hours ago, or failed with no validity left.
    finish(&pool, &all[0..10], "sent", 2).await;
    finish(&pool, &all[10..14], "delivered", 2).await;
    finish(&pool, &all[14..16], "canceled", 2).await;
    finish(&pool, &all[16..18], "sending_failed", 2).await;
    sqlx::query(
        "UPDATE tidings.messages SET expires_at = now() - interval '1 minute' WHERE id = ANY ($1)",
    )
    .bind(&all[16..18])
    .execute(&pool)
    .await
    .unwrap();
    let movable: BTreeSet<Uuid> = all[0..18].iter().copied().collect();
    // Stay: live; finished recently; a failure an operator may still retry; a finished message whose chain still
    // has a live message.
    finish(&pool, &all[18..22], "scheduled", 2).await;
    finish(&pool, &all[22..24], "processing", 2).await;
    finish(&pool, &all[24..28], "delivered", 0).await;
    finish(&pool, &all[28..30], "rejected", 2).await;
    finish(&pool, &all[30..31], "sent", 2).await;
    finish(&pool, &all[31..32], "scheduled", 2).await;
    sqlx::query("UPDATE tidings.messages SET chain_id = $1, chain_step = CASE WHEN id = $1 THEN NULL ELSE 1 END WHERE id = ANY ($2)")
        .bind(all[30])
        .bind(&all[30..32])
        .execute(&pool)
        .await
        .unwrap();
    // Extra events, so that a message moves with several.
    sqlx::query(
        "INSERT INTO tidings.message_events (message_id, status, reason, attempt)
         SELECT id, 'sent', 'provider_accepted', 1 FROM unnest($1::uuid[]) id",
    )
    .bind(&all[0..10])
    .execute(&pool)
    .await
    .unwrap();
    let events_before: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT message_id, status::text, reason FROM tidings.message_events ORDER BY message_id, id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();

    // Nothing moves while the rollup has not counted those events yet.
    let metrics = Metrics::new();
    let maintenance = Maintenance::new(store.clone(), metrics.clone(), &config);
    maintenance.history().await;
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.message_history").await,
        0
    );

    // One statement moves at most its limit.
    rolled_up(&pool).await;
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let first = store.history_move(hour_ago, None, 5).await.unwrap();
    assert_eq!(first.moved, 5);
    maintenance.history().await;

    let hot = ids(&pool, "SELECT id FROM tidings.messages").await;
    let archived = ids(&pool, "SELECT id FROM tidings.message_history").await;
    assert_eq!(archived, movable);
    assert_eq!(
        hot,
        all.iter()
            .copied()
            .filter(|id| !movable.contains(id))
            .collect()
    );
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.message_events WHERE message_id IN (SELECT id FROM tidings.message_history)").await,
        0,
        "the events moved with their messages"
    );
    let events_after: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT message_id, status::text, reason FROM tidings.message_events_all ORDER BY message_id, id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        events_after, events_before,
        "every event, once, in its order"
    );
    let moved_metric = metrics
        .maintenance_rows
        .with_label_values(&["history_move"])
        .get();
    assert_eq!(moved_metric, 13, "the maintenance pass moved the other 13");

    // Readers: the SQL API, the store's reads behind the API and the CLI.
    let moved = all[3];
    let (status, channel): (String, String) =
        sqlx::query_as("SELECT status::text, channel FROM tidings.status($1)")
            .bind(moved)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), channel.as_str()), ("sent", "sms"));
    let reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM tidings.events($1)")
        .bind(moved)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(reasons, ["enqueued", "provider_accepted"]);
    assert_eq!(store.message_events(moved).await.unwrap().len(), 2);
    assert!(store.message_get(moved).await.unwrap().is_some());
    assert!(store.message_read(moved).await.unwrap().is_some());

    // The list merges both sides, newest first, with filters applied to each.
    let page = store
        .message_list(&MessageListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let listed: Vec<Uuid> = page.rows.iter().map(|r| r.id).collect();
    let mut newest_first = all.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed, newest_first);
    let phone = "+31620000003".to_string(); // enqueue_n's recipient of message 3
    let by_phone = store
        .message_list(&MessageListParams {
            recipient: Some(std::slice::from_ref(&phone)),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_phone.rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        [moved]
    );
    let statuses = ["canceled".to_string()];
    let canceled = store
        .message_list(&MessageListParams {
            statuses: Some(&statuses),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(canceled.rows.len(), 2);
    assert!(canceled.rows.iter().all(|r| archived.contains(&r.id)));
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn retention_drops_whole_days_and_keeps_a_day_a_live_message_needs(pool: PgPool) {
    let config = history_config();
    let store = sync(&pool, &config).await;
    let fresh = enqueue_n(&pool, "sms", 5).await;
    let ten = created_days_ago(&pool, fresh[0], 10).await;
    let nine = created_days_ago(&pool, fresh[1], 9).await;
    let eight = created_days_ago(&pool, fresh[2], 8).await;
    let waiting = created_days_ago(&pool, fresh[3], 9).await;
    let recent = created_days_ago(&pool, fresh[4], 2).await;
    finish(&pool, &[ten, nine, eight, recent], "delivered", 2).await;
    finish(&pool, &[waiting], "scheduled", 2).await;
    rolled_up(&pool).await;

    // The pass creates the days the hot messages need, moves the finished ones, and drops the 10th day back: past
    // the retention, and no hot message was created on it. The 9th day holds a message that still waits (say it
    // was scheduled weeks ahead): that day and the ones after it stay.
    let maintenance = Maintenance::new(store.clone(), Metrics::new(), &config);
    maintenance.history().await;
    maintenance.history().await;
    assert!(!partition_exists(&pool, "message_history", 10).await);
    assert!(!partition_exists(&pool, "message_event_history", 10).await);
    for days in [9, 8, 2, 0, -3] {
        assert!(
            partition_exists(&pool, "message_history", days).await,
            "day -{days}"
        );
        assert!(partition_exists(&pool, "message_event_history", days).await);
    }
    let kept = ids(&pool, "SELECT id FROM tidings.messages_all").await;
    assert_eq!(kept, [nine, eight, waiting, recent].into_iter().collect());
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.message_events_all WHERE message_id = ANY (ARRAY(SELECT id FROM tidings.messages_all))").await,
        scalar(&pool, "SELECT count(*) FROM tidings.message_events_all").await,
        "no event outlives its message"
    );

    // Once it has finished and moved, its day (and the 8th) go too.
    finish(&pool, &[waiting], "canceled", 2).await;
    rolled_up(&pool).await;
    maintenance.history().await;
    maintenance.history().await;
    for days in [9, 8] {
        assert!(!partition_exists(&pool, "message_history", days).await);
    }
    assert_eq!(
        ids(&pool, "SELECT id FROM tidings.messages_all").await,
        [recent].into_iter().collect()
    );
}

/// The migration path (docs/history.md): a database populated before 0014, with a million finished messages and
/// two million events in the hot tables, takes migration 0014 (instant: it only creates the history) while a
/// worker drains new messages; the backlog then moves in bounded batches, each its own transaction, and a pass
/// cut short is resumed by the next. Nothing is lost: every message and event is on exactly one side.
#[sqlx::test(migrations = false)]
async fn the_migration_path_moves_a_million_messages_online(pool: PgPool) {
    const OLD: i64 = 1_000_000;
    let before_0014 = sqlx::migrate::Migrator {
        migrations: Cow::Owned(
            tidings::store::MIGRATOR
                .iter()
                .filter(|m| m.version < 14)
                .cloned()
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    before_0014.run(&pool).await.unwrap();
    let config = config(
        None,
        "history_after = \"1h\"\nretention = \"30d\"\nprune_interval = \"1h\"",
    );
    let store = sync(&pool, &config).await;

    // A million messages finished over the last three days, each with its enqueue and send events (in one
    // statement per table: what a long-running installation has).
    sqlx::query(
        "INSERT INTO tidings.messages (id, channel, recipient, content, use_case, status, run_at, expires_at,
                                       max_attempts, attempts, provider_message_id, created_at, updated_at)
         SELECT tidings.uuid_v7(t), 'sms', jsonb_build_object('phone', '+3161' || lpad(i::text, 7, '0')),
                '{\"type\": \"text\", \"text\": {\"text\": \"Your code is 123456\"}}', 'transactional', 'delivered'::tidings.message_status,
                t, t + interval '36 hours', 10, 1, 'p-' || i, t, t + interval '2 seconds'
           FROM generate_series(1, $1) i,
                LATERAL (SELECT now() - interval '3 days' + (i * interval '3 days' / ($1 + 1)) - interval '2 hours' AS t) x",
    )
    .bind(OLD)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO tidings.message_events (message_id, at, status, reason, attempt)
         SELECT id, created_at, 'accepted'::tidings.message_status, 'enqueued', 0 FROM tidings.messages
         UNION ALL
         SELECT id, updated_at, 'delivered'::tidings.message_status, 'receipt_delivered', 1 FROM tidings.messages",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE tidings.messages; ANALYZE tidings.message_events")
        .execute(&pool)
        .await
        .ok();
    let old_events = 2 * OLD;

    // A worker drains new messages throughout.
    let new = enqueue_n(&pool, "sms", 2000).await;
    let workers = start_pools(&pool, &config, 1).await;

    // 0014 on the live database.
    tidings::store::MIGRATOR.run(&pool).await.unwrap();
    rolled_up(&pool).await;

    // A first pass cut short after a few batches (a leader that stops mid-pass)...
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut after = None;
    let mut moved = 0;
    for _ in 0..20 {
        let batch = store.history_move(hour_ago, after, 5000).await.unwrap();
        moved += batch.moved;
        after = batch.resume_after;
    }
    // (The worker's own leader may move some of them meanwhile: every batch is bounded, SKIP LOCKED.)
    assert!(moved > 0 && moved <= 100_000, "{moved}");
    // ...more new messages meanwhile...
    let newer = enqueue_n(&pool, "sms", 2000).await;
    // ...and the next pass (the leader's maintenance, bounded batches) moves the rest.
    Maintenance::new(store.clone(), Metrics::new(), &config)
        .history()
        .await;

    wait_until(Duration::from_secs(120), "the new messages are sent", || async {
        scalar(
            &pool,
            "SELECT count(*) FROM tidings.messages WHERE status IN ('accepted', 'scheduled', 'processing')",
        )
        .await
            == 0
    })
    .await;
    workers.stop().await;

    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.message_history").await,
        OLD
    );
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM tidings.message_event_history").await,
        old_events
    );
    let hot = ids(&pool, "SELECT id FROM tidings.messages").await;
    let expected: BTreeSet<Uuid> = new.iter().chain(&newer).copied().collect();
    assert_eq!(hot, expected, "only the new messages stay hot");
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM tidings.messages WHERE status = 'sent'"
        )
        .await,
        4000,
        "every new message was sent"
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM tidings.message_events WHERE message_id NOT IN (SELECT id FROM tidings.messages)"
        )
        .await,
        0,
        "no event left behind in the hot table"
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(DISTINCT message_id) FROM tidings.message_event_history"
        )
        .await,
        OLD
    );
}
