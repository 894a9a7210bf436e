//! `tidings cancel|retry|reschedule|pause|resume`: the real binary against the test's own database. The CLI calls
//! the same `tidings::operator` functions as the HTTP API, so these check what the command line adds: its flags,
//! its one-line answers and exit codes, and that its changes and events are the API's, with the actor `cli:$USER`.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tidings_client::{NewMessage, UseCase};
use uuid::Uuid;

use crate::support::{config, count, sync, url_of};

/// What a run came to: exit code, stdout, stderr.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `tidings ARGS` against `url` as user `alice` (no RUST_LOG: what an operator sees).
async fn tidings(url: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("USER", "alice")
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
}

/// A refusal: non-zero, nothing on stdout, exactly one line on stderr containing every one of `words`.
fn assert_refused(run: &Run, words: &[&str], what: &str) {
    assert!(
        run.code.is_some_and(|c| c != 0),
        "{what}: exit {:?}, {}",
        run.code,
        run.stdout
    );
    assert!(run.stdout.is_empty(), "{what}: stdout {:?}", run.stdout);
    assert_eq!(run.stderr.lines().count(), 1, "{what}: {:?}", run.stderr);
    for w in words {
        assert!(
            run.stderr.contains(w),
            "{what}: {:?} lacks {w:?}",
            run.stderr
        );
    }
}

async fn setup(pool: &PgPool) -> String {
    sync(pool, &config(None, "")).await;
    url_of(pool).await
}

async fn enqueue(pool: &PgPool, messages: &[NewMessage]) -> Vec<Uuid> {
    tidings_client::enqueue_many(pool, messages).await.unwrap()
}

fn sms(i: usize) -> NewMessage {
    NewMessage::sms("sms", format!("+3161234{i:04}")).text(format!("message {i}"))
}

async fn status_of(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status::text FROM tidings.messages WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The last event of `id`: (status, reason, detail).
async fn last_event(pool: &PgPool, id: Uuid) -> (String, String, Option<Value>) {
    sqlx::query_as(
        "SELECT status::text, reason, detail FROM tidings.message_events WHERE message_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn operator_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tidings.message_events WHERE reason LIKE 'operator_%'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn cancel_one_by_id(pool: PgPool) {
    let url = setup(&pool).await;
    let ids = enqueue(&pool, &[sms(1), sms(2)]).await;
    let id = ids[0].to_string();

    let run = tidings(&url, &["cancel", &id]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, format!("canceled {id}"));
    assert_eq!(status_of(&pool, ids[0]).await, "canceled");
    assert_eq!(status_of(&pool, ids[1]).await, "accepted");
    assert_eq!(
        last_event(&pool, ids[0]).await,
        (
            "canceled".into(),
            "operator_cancel".into(),
            Some(json!({ "by": "cli:alice" }))
        )
    );

    // Again: refused with the rule, exit 1; an unknown id: exit 2.
    let run = tidings(&url, &["cancel", &id]).await;
    assert_refused(&run, &["not canceled", "status", "canceled"], "twice");
    assert_eq!(run.code, Some(1));
    let missing = Uuid::now_v7().to_string();
    let run = tidings(&url, &["cancel", &missing]).await;
    assert_refused(&run, &["not canceled", &missing], "unknown id");
    assert_eq!(run.code, Some(2));
    assert_eq!(operator_events(&pool).await, 1);
}

/// Three promo marketing messages and two others on the same channel; the filter matches the three. (References
/// differ: a repeated reference is the same message.)
async fn promo_mix(pool: &PgPool) -> (Vec<Uuid>, Vec<Uuid>) {
    let promo: Vec<NewMessage> = (0..3)
        .map(|i| {
            sms(i)
                .tags(["promo"])
                .use_case(UseCase::Marketing)
                .reference(format!("R{i}"))
        })
        .collect();
    let other = vec![
        sms(10).tags(["promo"]).reference("R10"),
        sms(11).use_case(UseCase::Marketing).reference("R11"),
    ];
    (enqueue(pool, &promo).await, enqueue(pool, &other).await)
}

const PROMO: &[&str] = &[
    "cancel",
    "--channel",
    "sms",
    "--tag",
    "promo",
    "--use-case",
    "marketing",
    "--status",
    "accepted,scheduled",
    "--created-after",
    "2020-01-01T00:00:00Z",
];

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn bulk_cancel_by_filter_after_a_dry_run(pool: PgPool) {
    let url = setup(&pool).await;
    let (promo, other) = promo_mix(&pool).await;
    let before: Vec<String> =
        futures::future::join_all(other.iter().map(|id| status_of(&pool, *id))).await;

    let run = tidings(&url, &[PROMO, &["--dry-run"]].concat()).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "would cancel 3 messages");
    assert_eq!(
        count(&pool, "canceled").await,
        0,
        "a dry run changes nothing"
    );
    assert_eq!(operator_events(&pool).await, 0);

    let run = tidings(&url, &[PROMO, &["--expect-count", "3"]].concat()).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "canceled 3 messages");
    for id in &promo {
        assert_eq!(status_of(&pool, *id).await, "canceled");
        assert_eq!(
            last_event(&pool, *id).await,
            (
                "canceled".into(),
                "operator_cancel".into(),
                Some(json!({ "by": "cli:alice" }))
            )
        );
    }
    for (id, status) in other.iter().zip(&before) {
        assert_eq!(
            &status_of(&pool, *id).await,
            status,
            "not matched: unchanged"
        );
    }
    assert_eq!(count(&pool, "canceled").await, 3);
    assert_eq!(operator_events(&pool).await, 3);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn an_expect_count_mismatch_changes_nothing(pool: PgPool) {
    let url = setup(&pool).await;
    promo_mix(&pool).await;
    let run = tidings(&url, &[PROMO, &["--dry-run"]].concat()).await;
    assert_eq!(run.stdout, "would cancel 3 messages", "{}", run.stderr);
    // Another matching message arrives between the dry run and the real call.
    enqueue(
        &pool,
        &[sms(20).tags(["promo"]).use_case(UseCase::Marketing)],
    )
    .await;

    let run = tidings(&url, &[PROMO, &["--expect-count", "3"]].concat()).await;
    assert_refused(
        &run,
        &["not canceled", "--expect-count", "4 messages match now"],
        "mismatch",
    );
    assert_eq!(count(&pool, "canceled").await, 0);
    assert_eq!(operator_events(&pool).await, 0);

    // The real call without a count is refused too: never "whatever matches now".
    let run = tidings(&url, PROMO).await;
    assert_refused(&run, &["--expect-count", "dry"], "no count");
    assert_eq!(count(&pool, "canceled").await, 0);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn retry_of_an_expired_message_is_refused_with_its_rule(pool: PgPool) {
    let url = setup(&pool).await;
    let ids = enqueue(&pool, &[sms(1), sms(2)]).await;
    sqlx::query("UPDATE tidings.messages SET status = 'expired', expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(ids[0])
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE tidings.messages SET status = 'sending_failed', attempts = max_attempts WHERE id = $1")
        .bind(ids[1])
        .execute(&pool)
        .await
        .unwrap();

    let run = tidings(&url, &["retry", &ids[0].to_string()]).await;
    assert_refused(
        &run,
        &["not retried", "expires_at", "validity ran out"],
        "expired",
    );
    assert_eq!(status_of(&pool, ids[0]).await, "expired");
    assert_eq!(operator_events(&pool).await, 0);

    // A failed message still valid: retried.
    let run = tidings(&url, &["retry", &ids[1].to_string()]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, format!("retried {}", ids[1]));
    assert_eq!(status_of(&pool, ids[1]).await, "accepted");
    assert_eq!(last_event(&pool, ids[1]).await.1, "operator_retry");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn reschedule_one_and_by_filter(pool: PgPool) {
    let url = setup(&pool).await;
    let ids = enqueue(&pool, &[sms(1), sms(2).tags(["later"])]).await;
    let at = Utc::now() + Duration::hours(1);
    let at_text = at.to_rfc3339();

    let run = tidings(&url, &["reschedule", &ids[0].to_string(), "--at", &at_text]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with(&format!("rescheduled {}", ids[0])),
        "{}",
        run.stdout
    );
    let (status, run_at): (String, DateTime<Utc>) =
        sqlx::query_as("SELECT status::text, run_at FROM tidings.messages WHERE id = $1")
            .bind(ids[0])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "scheduled");
    assert_eq!(run_at.timestamp_micros(), at.timestamp_micros());
    let (status, reason, detail) = last_event(&pool, ids[0]).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("scheduled", "operator_reschedule")
    );
    assert_eq!(detail.unwrap()["by"], "cli:alice");

    // By filter, and beyond the enqueue rule's 35 days: refused naming --at.
    let by_tag = ["reschedule", "--tag", "later", "--at", &at_text];
    let run = tidings(&url, &[&by_tag[..], &["--dry-run"]].concat()).await;
    assert_eq!(run.stdout, "would reschedule 1 messages", "{}", run.stderr);
    let run = tidings(&url, &[&by_tag[..], &["--expect-count", "1"]].concat()).await;
    assert_eq!(run.stdout, "rescheduled 1 messages", "{}", run.stderr);
    assert_eq!(status_of(&pool, ids[1]).await, "scheduled");
    let far = (Utc::now() + Duration::days(40)).to_rfc3339();
    let run = tidings(&url, &["reschedule", &ids[0].to_string(), "--at", &far]).await;
    assert_refused(&run, &["--at", "35 days"], "too far");
}

async fn channel_state(pool: &PgPool) -> (Option<DateTime<Utc>>, Option<String>) {
    sqlx::query_as(
        "SELECT paused_until, pause_reason FROM tidings.channel_state WHERE channel = 'sms'",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
    .unwrap_or((None, None))
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn pause_then_resume(pool: PgPool) {
    let url = setup(&pool).await;
    let start = Utc::now();
    let run = tidings(
        &url,
        &[
            "pause",
            "sms",
            "--until",
            "30m",
            "--reason",
            "provider incident",
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("paused sms until "),
        "{}",
        run.stdout
    );
    let (until, reason) = channel_state(&pool).await;
    let until = until.expect("paused");
    assert!(
        until >= start + Duration::minutes(30) && until <= Utc::now() + Duration::minutes(30),
        "{until}"
    );
    assert_eq!(
        reason.as_deref(),
        Some("operator_pause by cli:alice: provider incident")
    );

    // An RFC 3339 until replaces it.
    let at = (Utc::now() + Duration::hours(2)).to_rfc3339();
    let run = tidings(
        &url,
        &["pause", "sms", "--until", &at, "--reason", "longer"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let (until, _) = channel_state(&pool).await;
    assert!(until.unwrap() > start + Duration::minutes(90));

    let run = tidings(&url, &["resume", "sms"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "resumed sms");
    assert_eq!(channel_state(&pool).await, (None, None));

    let run = tidings(&url, &["resume", "nope"]).await;
    assert_refused(&run, &["no channel nope"], "unknown channel");
    assert_eq!(run.code, Some(2));
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn bad_flags_are_refused_in_one_line(pool: PgPool) {
    let url = setup(&pool).await;
    let ids = enqueue(&pool, &[sms(1)]).await;
    let id = ids[0].to_string();
    let cases: &[(&[&str], &[&str])] = &[
        (&["cancel", "not-a-uuid"], &["ID", "not-a-uuid", "UUID"]),
        (&["cancel"], &["ID", "filter"]),
        (
            &["cancel", &id, "--status", "accepted"],
            &["ID", "not both"],
        ),
        (&["cancel", &id, "--dry-run"], &["--dry-run", "by filter"]),
        (
            &["cancel", "--status", "bogus", "--dry-run"],
            &["--status", "bogus", "is not a status"],
        ),
        (
            &["cancel", "--channel", "nope", "--dry-run"],
            &["--channel", "no channel", "nope"],
        ),
        (
            &["cancel", "--use-case", "spam", "--dry-run"],
            &["--use-case", "must be one of"],
        ),
        (
            &["cancel", "--created-after", "yesterday", "--dry-run"],
            &["--created-after", "RFC 3339"],
        ),
        (
            &["cancel", "--status", "accepted", "--expect-count", "x"],
            &["--expect-count", "invalid value"],
        ),
        (
            &[
                "cancel",
                "--status",
                "accepted",
                "--dry-run",
                "--expect-count",
                "1",
            ],
            &["--dry-run", "--expect-count"],
        ),
        (&["cancel", "--bogus"], &["--bogus"]),
        (
            &["reschedule", &id, "--at", "tomorrow"],
            &["--at", "RFC 3339"],
        ),
        (&["reschedule", &id], &["--at"]),
        (
            &["pause", "sms", "--until", "soon", "--reason", "x"],
            &["--until", "duration like 30m"],
        ),
        (
            &["pause", "sms", "--until=-5m", "--reason", "x"],
            &["--until"],
        ),
        (
            &["pause", "sms", "--until", "90days", "--reason", "x"],
            &["--until", "30 days"],
        ),
        (
            &["pause", "sms", "--until", "30m", "--reason", " "],
            &["--reason", "1 to 200"],
        ),
        (
            &["pause", "nope", "--until", "30m", "--reason", "x"],
            &["no channel nope"],
        ),
    ];
    for (args, words) in cases {
        let run = tidings(&url, args).await;
        assert_refused(&run, words, &format!("{args:?}"));
    }
    assert_eq!(status_of(&pool, ids[0]).await, "accepted");
    assert_eq!(operator_events(&pool).await, 0);
    assert_eq!(channel_state(&pool).await.0, None);
}
