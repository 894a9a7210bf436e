//! Today's SQL API as a reader sees it: the forms the README shows, and `docs/sql-api.sql`, a dump of every
//! function in schema `tidings` checked against a freshly migrated database.

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

/// The dump of today's SQL API: every function of schema `tidings` (`pg_get_functiondef`, by name and
/// arguments, with the roles that may execute it) and the enum type, from the migrated database.
async fn sql_api_dump(pool: &PgPool) -> String {
    let status: Vec<String> = sqlx::query_scalar(
        "SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = 'tidings.message_status'::regtype
          ORDER BY e.enumsortorder",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let functions: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT p.oid::regprocedure::text,
                coalesce((SELECT string_agg(g.name, ', ' ORDER BY g.name)
                            FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a,
                                 LATERAL (SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                                      ELSE a.grantee::regrole::text END AS name) g
                           WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner), '') AS callers,
                pg_get_functiondef(p.oid)
           FROM pg_proc p
          WHERE p.pronamespace = 'tidings'::regnamespace
          ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = String::from(
        "-- Today's SQL API of tidings: every function in schema `tidings` as the migrations leave it.\n\
         -- Generated from a freshly migrated database (pg_get_functiondef, PostgreSQL 15); do not edit.\n\
         -- Regenerate: TIDINGS_BLESS=1 cargo test --test it sql_api::docs_sql_api_sql_is_todays_sql_api\n\
         -- docs/sql-api.md explains the functions producers call.\n\n",
    );
    out.push_str(&format!(
        "CREATE TYPE tidings.message_status AS ENUM ({});\n\n",
        status
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for (signature, callers, definition) in functions {
        let callers = if callers.is_empty() {
            "the owner only".to_owned()
        } else {
            callers
        };
        out.push_str(&format!(
            "-- {signature}: EXECUTE by {callers}\n{}\n;\n\n",
            definition.trim_end()
        ));
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// Issue 12, item 7: `docs/sql-api.sql` is what the migrations leave, so a reader sees today's functions without
/// replaying migrations. `TIDINGS_BLESS=1` writes the file instead of comparing.
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn docs_sql_api_sql_is_todays_sql_api(pool: PgPool) {
    let dump = sql_api_dump(&pool).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/sql-api.sql");
    if std::env::var_os("TIDINGS_BLESS").is_some() {
        std::fs::write(path, &dump).unwrap();
    }
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    if on_disk != dump {
        let first = on_disk
            .lines()
            .zip(dump.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(on_disk.lines().count().min(dump.lines().count()));
        panic!(
            "docs/sql-api.sql is not what the migrations define (first difference at line {}); regenerate it with \
             `TIDINGS_BLESS=1 cargo test --test it sql_api::docs_sql_api_sql_is_todays_sql_api`",
            first + 1
        );
    }
}
