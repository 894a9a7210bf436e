//! Today's SQL API as a reader sees it: the forms the README shows.

use sqlx::PgPool;
use uuid::Uuid;

async fn one_sms(pool: &PgPool) -> Uuid {
    sqlx::query("INSERT INTO tidings.channels (name, kind) VALUES ('sms', 'sandbox')")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT tidings.enqueue('sms', '{\"phone\": \"+31612345678\"}',
                                '{\"body\": {\"type\": \"text\", \"text\": {\"text\": \"hi\"}}}')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Issue 13, item 6: the enum type was also called `tidings.status`, so `tidings.status('<id>')` was read as a
/// cast to the type and failed with 22P02. The README's form, a plain string literal, must work.
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn status_and_events_take_a_plain_string_literal(pool: PgPool) {
    let id = one_sms(&pool).await;
    // The id is spliced into the text on purpose: the literal must reach PostgreSQL untyped, as from psql.
    let (got, status): (Uuid, String) = sqlx::query_as(&format!(
        "SELECT id, status::text FROM tidings.status('{id}')"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((got, status.as_str()), (id, "accepted"));
    let reasons: Vec<String> =
        sqlx::query_scalar(&format!("SELECT reason FROM tidings.events('{id}')"))
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(reasons, ["enqueued"]);
    let canceled: bool = sqlx::query_scalar(&format!("SELECT tidings.cancel('{id}')"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(canceled);
    // The typed client reads the renamed enum.
    let state = tidings_client::status(&pool, id).await.unwrap().unwrap();
    assert_eq!(state.status, tidings_client::Status::Canceled);
}

/// Issue 13, item 3: the zone names enqueue accepts are exactly the worker's (`chrono_tz::TZ_VARIANTS`). Upgrading
/// chrono-tz to a tzdata release that adds, drops or renames a zone fails here until a migration updates
/// `tidings.time_zones`.
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn time_zones_are_exactly_the_workers(pool: PgPool) {
    let in_sql: Vec<String> =
        sqlx::query_scalar("SELECT name FROM tidings.time_zones ORDER BY name COLLATE \"C\"")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut in_worker: Vec<String> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| tz.name().to_owned())
        .collect();
    in_worker.sort_unstable();
    let missing: Vec<_> = in_worker.iter().filter(|n| !in_sql.contains(n)).collect();
    let extra: Vec<_> = in_sql.iter().filter(|n| !in_worker.contains(n)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "tidings.time_zones differs from chrono-tz (tzdata {}): missing {missing:?}, extra {extra:?}",
        chrono_tz::IANA_TZDB_VERSION,
    );
    assert_eq!(in_sql, in_worker);
}
