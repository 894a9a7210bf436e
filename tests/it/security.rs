//! Least privilege: what `tidings_producer` and `tidings_worker` may and may not do, and the loopback default
//! of the worker's HTTP listener.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tidings::config::Config;
use tidings::metrics::Metrics;
use tidings::outcome::Outcome;
use tidings::shutdown::Shutdown;
use tidings::store::{ClaimParams, Completion, Store};
use tidings::worker::Worker;
use tidings_client::NewMessage;
use uuid::Uuid;

use crate::support::{config, count, enqueue_n, live, sync, tidings_cli, url_of, wait_until};

/// Runs `sql` as `role` in a transaction that is rolled back; returns the SQLSTATE of the error, if any.
async fn as_role(pool: &PgPool, role: &str, sql: &'static str) -> Option<String> {
    let mut tx = pool.begin().await.unwrap();
    let set_role = format!("SET LOCAL ROLE {role}");
    sqlx::query(&set_role).execute(&mut *tx).await.unwrap();
    let result = sqlx::raw_sql(sql).execute(&mut *tx).await;
    tx.rollback().await.unwrap();
    result.err().map(|e| match e {
        sqlx::Error::Database(db) => db.code().unwrap_or_default().into_owned(),
        other => panic!("{sql}: {other}"),
    })
}

const DENIED: Option<&str> = Some("42501");

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_producer_role_can_enqueue_and_read_status_but_nothing_else(pool: PgPool) {
    sync(&pool, &config(None, "")).await;
    let existing = enqueue_n(&pool, "sms", 1).await[0];

    // What a producer may do: enqueue, cancel, status, events (SECURITY DEFINER functions).
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE tidings_producer")
        .execute(&mut *tx)
        .await
        .unwrap();
    let id = NewMessage::sms("sms", "+31612345678")
        .text("hello")
        .enqueue(&mut *tx)
        .await
        .unwrap();
    let many = tidings_client::enqueue_many(
        &mut *tx,
        &[NewMessage::sms("sms", "+31612345679").text("hi")],
    )
    .await
    .unwrap();
    assert_eq!(many.len(), 1);
    let status = tidings_client::status(&mut *tx, existing)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.id, existing);
    assert_eq!(tidings_client::events(&mut *tx, id).await.unwrap().len(), 1);
    assert!(tidings_client::cancel(&mut *tx, id).await.unwrap());
    tx.commit().await.unwrap();

    // What it may not: read recipients or content, change statuses, touch channels or the queue's internals.
    let forbidden = [
        "SELECT recipient FROM tidings.messages",
        "SELECT content FROM tidings.messages",
        "SELECT * FROM tidings.message_events",
        "UPDATE tidings.messages SET status = 'sent'",
        "DELETE FROM tidings.messages",
        "INSERT INTO tidings.channels (name, kind) VALUES ('x', 'sandbox')",
        "UPDATE tidings.channels SET kind = 'webhook'",
        "UPDATE tidings.channel_state SET paused_until = now()",
        "SELECT * FROM tidings.channels",
        "SELECT * FROM tidings.suppressions",
        "SELECT tidings.check_message('{}', 'sandbox', now())",
        "DROP TABLE tidings.messages",
        "CREATE ROLE sneaky",
    ];
    for sql in forbidden {
        assert_eq!(
            as_role(&pool, "tidings_producer", sql).await.as_deref(),
            DENIED,
            "tidings_producer: {sql}"
        );
    }
}

/// A pool whose every connection acts as `role`.
async fn pool_as(pool: &PgPool, role: &'static str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                let set_role = format!("SET ROLE {role}");
                sqlx::query(&set_role).execute(&mut *conn).await?;
                Ok(())
            })
        })
        .connect(&url_of(pool).await)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_worker_role_runs_every_store_query_and_nothing_more(pool: PgPool) {
    let config = config(None, "");
    let ids = enqueue_n(
        &{
            sync(&pool, &config).await;
            pool.clone()
        },
        "sms",
        3,
    )
    .await;
    let worker_pool = pool_as(&pool, "tidings_worker").await;
    let store = Store::from_pool(worker_pool.clone());

    // Everything the worker process runs: sync, claim, complete, rescue, sweep, history, pause, stats, readiness.
    store.channel_sync(&config).await.unwrap();
    assert!(store.migrations_current().await.unwrap());
    assert!(store.ping().await);
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
    assert_eq!(claimed.len(), 2);
    let done: Vec<Completion> = claimed
        .iter()
        .map(|m| Completion {
            id: m.id,
            lease_id,
            channel: m.channel.clone(),
            started_at: chrono::Utc::now(),
            outcome: Outcome::Sent {
                provider_message_id: None,
                detail: json!({}),
            },
        })
        .collect();
    assert_eq!(store.message_complete_many(&done).await.unwrap().len(), 2);
    store.message_rescue(10).await.unwrap();
    store.message_sweep_expired(10).await.unwrap();
    store
        .channel_pause("sms", chrono::Utc::now(), "rate_limited")
        .await
        .unwrap();
    store.channel_paused().await.unwrap();
    store.stats_live().await.unwrap();
    store.stats_oldest_due().await.unwrap();
    store.stats_last_errors(5).await.unwrap();
    assert!(store.message_get(ids[0]).await.unwrap().is_some());
    store.message_events(ids[0]).await.unwrap();
    sqlx::query("UPDATE tidings.event_rollup_state SET done_before = now() + interval '1 hour'")
        .execute(&pool)
        .await
        .unwrap();
    store
        .history_partitions(Duration::from_secs(7 * 24 * 3600), 3)
        .await
        .unwrap();
    let moved = store
        .history_move(chrono::Utc::now() + chrono::Duration::hours(1), None, 10)
        .await
        .unwrap();
    assert_eq!(moved.moved, 2, "the two sent messages move to the history");
    assert_eq!(
        store.history_restore(&[claimed[0].id]).await.unwrap(),
        [claimed[0].id]
    );
    store.callback_prune(chrono::Utc::now(), 10).await.unwrap();

    // A whole worker under the role drains the queue (LISTEN included).
    enqueue_n(&pool, "sms", 50).await;
    let shutdown = Shutdown::new();
    let providers = tidings::provider::build_all(&config).unwrap();
    let worker = tokio::spawn(
        Worker::new(config.clone(), store.clone())
            .providers(providers)
            .metrics(Metrics::new())
            .shutdown(shutdown.clone())
            .run(),
    );
    wait_until(Duration::from_secs(30), "queue drained", || async {
        live(&pool).await == 0
    })
    .await;
    shutdown.stop.cancel();
    worker.await.unwrap().unwrap();
    // The 51 drained, and the one brought back from the history above.
    assert_eq!(count(&pool, "sent").await, 52);

    // No DDL, no roles, no producer-only or foreign objects.
    let forbidden = [
        "DROP TABLE tidings.messages",
        "ALTER TABLE tidings.messages ADD COLUMN x int",
        "TRUNCATE tidings.messages",
        "CREATE TABLE tidings.x (a int)",
        "CREATE ROLE sneaky",
        "ALTER ROLE tidings_worker CREATEROLE",
        "GRANT tidings_producer TO tidings_worker",
        "DELETE FROM tidings.channels",
        "INSERT INTO tidings.suppressions (channel_kind, recipient) VALUES ('sms', '+1')",
    ];
    for sql in forbidden {
        let code = as_role(&pool, "tidings_worker", sql).await;
        assert!(
            matches!(code.as_deref(), Some("42501") | Some("0LP01")),
            "tidings_worker: {sql} gave {code:?}"
        );
    }
    worker_pool.close().await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn roles_survive_a_second_migration_run(pool: PgPool) {
    // Re-running the roles migration where the roles exist (another database migrated first) is a no-op.
    let sql = include_str!("../../migrations/0003_roles.sql");
    sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_roles WHERE rolname IN ('tidings_producer', 'tidings_worker') AND NOT rolcanlogin",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(n, 2, "both roles exist, NOLOGIN");
}

#[test]
fn the_http_listener_is_loopback_by_default() {
    let config = Config::default();
    assert!(config.http.listen.ip().is_loopback());
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:9464");
}

/// Whether the connection `url` opens is encrypted; the error text when it does not open.
async fn tls_of(url: &str) -> Result<bool, String> {
    let store = Store::connect(url, 1).await.map_err(|e| e.to_string())?;
    let ssl: bool = sqlx::query_scalar(
        "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    store.pool().close().await;
    Ok(ssl)
}

/// `DATABASE_URL` with `?sslmode=…` is honoured (docs/operations.md, "TLS to PostgreSQL"): `verify-full` with a
/// root certificate that did not sign the server's is refused, by the worker's pool and by the binary. The local
/// cluster may or may not have TLS on; the test checks what each mode must do either way.
///
/// With sqlx's native-tls, `sslrootcert` is added to the system's trust store (unlike libpq, where it replaces
/// it). Debian's snakeoil certificate, which the local cluster serves, is in that store (`/etc/ssl/certs`) and
/// names `localhost`: verify-full to `localhost` then passes whatever `sslrootcert` says. The refusal is checked
/// at `127.0.0.1`, which the certificate does not name (or, on a cluster whose certificate is not trusted by
/// the system, by its chain).
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn database_tls_settings_in_the_url_are_honoured(pool: PgPool) {
    let server_tls: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&pool)
        .await
        .unwrap();
    let base: url::Url = url_of(&pool).await.parse().unwrap();
    let with = |host: &str, params: &str| {
        let mut url = base.clone();
        url.set_host(Some(host)).unwrap();
        url.set_query(Some(params));
        url.to_string()
    };
    let unrelated_root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/unrelated-ca.pem"
    );
    let verify_full = with(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={unrelated_root}"),
    );

    assert_eq!(
        tls_of(&with("127.0.0.1", "sslmode=disable")).await,
        Ok(false)
    );
    let refused = tls_of(&verify_full).await.unwrap_err();
    if server_tls == "on" {
        // The server speaks TLS (require connects, encrypted) and prefer uses it: so verify-full failing is the
        // certificate check, not a missing TLS.
        assert!(refused.contains("certificate verify failed"), "{refused}");
        assert_eq!(
            tls_of(&with("127.0.0.1", "sslmode=require")).await,
            Ok(true)
        );
        assert_eq!(tls_of(&with("127.0.0.1", "sslmode=prefer")).await, Ok(true));
        // With the server's own (self-signed) certificate as the root, verify-full to localhost connects if that
        // certificate names localhost; one issued for another name is refused for the name, never the chain.
        let own: String = sqlx::query_scalar("SHOW ssl_cert_file")
            .fetch_one(&pool)
            .await
            .unwrap();
        if std::fs::File::open(&own).is_ok() {
            let own_root = with(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={own}"),
            );
            match tls_of(&own_root).await {
                Ok(encrypted) => assert!(encrypted),
                Err(e) => assert!(e.contains("mismatch"), "{e}"),
            }
        }
    } else {
        assert!(tls_of(&with("127.0.0.1", "sslmode=require")).await.is_err());
        assert_eq!(
            tls_of(&with("127.0.0.1", "sslmode=prefer")).await,
            Ok(false)
        );
    }

    // The binary reads DATABASE_URL the same way: a non-zero exit and one readable line.
    let out = tidings_cli(&verify_full, &["stats"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("tidings: ") && stderr.trim_end().lines().count() == 1,
        "{stderr}"
    );
}
