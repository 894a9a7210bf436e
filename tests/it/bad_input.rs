//! The bad-input corpus: every way in (SQL, the client, the CLI, the receipts parser) refuses bad input with an
//! error naming the field, writes nothing, and never blocks the good messages that follow.

use std::process::Command;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Value, json};
use sqlx::PgPool;
use tidings::metrics::Metrics;
use tidings::receipts;
use tidings::shutdown::Shutdown;
use tidings::worker::Worker;

use crate::support::{config, count, live, sync, url_of, wait_until};

fn good() -> Value {
    json!({
        "channel": "sms",
        "recipient": { "phone": "+31612345678" },
        "content": { "body": { "type": "text", "text": { "text": "hello" } } },
    })
}

/// `good()` with `path` (dotted) set to `value`, or removed when `value` is None.
fn with(path: &str, value: Option<Value>) -> Value {
    let mut msg = good();
    let mut keys: Vec<&str> = path.split('.').collect();
    let last = keys.pop().unwrap();
    let mut at = &mut msg;
    for k in keys {
        at = &mut at[k];
    }
    match value {
        Some(v) => at[last] = v,
        None => {
            at.as_object_mut().unwrap().remove(last);
        }
    }
    msg
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> Value {
    json!(t.to_rfc3339())
}

/// (what, message, the field the error must name).
fn corpus() -> Vec<(&'static str, Value, &'static str)> {
    let now = chrono::Utc::now();
    let mb = "x".repeat(1 << 20);
    let tags: Vec<String> = (0..10_000).map(|i| format!("t{i}")).collect();
    vec![
        // Wrong JSON types.
        ("message is an array", json!([1, 2]), "message"),
        ("message is a string", json!("hi"), "message"),
        (
            "channel is a number",
            with("channel", Some(json!(5))),
            "channel",
        ),
        (
            "recipient is a string",
            with("recipient", Some(json!("+31612345678"))),
            "recipient",
        ),
        (
            "content is an array",
            with("content", Some(json!([]))),
            "content",
        ),
        (
            "phone is a number",
            with("recipient.phone", Some(json!(31612345678u64))),
            "recipient.phone",
        ),
        (
            "text is an object",
            with("content.body.text.text", Some(json!({}))),
            "content.body.text.text",
        ),
        (
            "priority is a string",
            with("priority", Some(json!("high"))),
            "priority",
        ),
        (
            "priority is a float",
            with("priority", Some(json!(1.5))),
            "priority",
        ),
        (
            "validity is a string",
            with("validity", Some(json!("60"))),
            "validity",
        ),
        (
            "validity is a float",
            with("validity", Some(json!(60.5))),
            "validity",
        ),
        ("tags is a string", with("tags", Some(json!("a,b"))), "tags"),
        ("tag is a number", with("tags", Some(json!([1]))), "tags"),
        (
            "ignore_quiet_hours is a string",
            with("ignore_quiet_hours", Some(json!("yes"))),
            "ignore_quiet_hours",
        ),
        (
            "cap_frequency is a number",
            with("cap_frequency", Some(json!(1))),
            "cap_frequency",
        ),
        (
            "use_case is a number",
            with("use_case", Some(json!(2))),
            "use_case",
        ),
        (
            "reference is a number",
            with("reference", Some(json!(42))),
            "reference",
        ),
        (
            "scheduled_for is a number",
            with("scheduled_for", Some(json!(1_700_000_000))),
            "scheduled_for",
        ),
        // Missing and extra fields.
        ("no channel", with("channel", None), "channel"),
        ("no recipient", with("recipient", None), "recipient"),
        ("no content", with("content", None), "content"),
        ("no phone", with("recipient.phone", None), "recipient.phone"),
        (
            "no body type",
            with("content.body.type", None),
            "content.body.type",
        ),
        (
            "extra top-level field",
            with("colour", Some(json!("red"))),
            "colour",
        ),
        (
            "extra content field",
            with("content.footer", Some(json!("x"))),
            "content",
        ),
        (
            "unknown channel",
            with("channel", Some(json!("nope"))),
            "channel",
        ),
        (
            "unknown use case",
            with("use_case", Some(json!("weekly"))),
            "use_case",
        ),
        // Both or neither of exclusive fields.
        (
            "body and template",
            with(
                "content.template",
                Some(json!({"projectId": "00000000-0000-0000-0000-000000000000", "version": "1"})),
            ),
            "content",
        ),
        (
            "neither body nor template",
            with("content", Some(json!({}))),
            "content",
        ),
        // Sizes.
        (
            "1 MB text",
            with("content.body.text.text", Some(json!(mb))),
            "content",
        ),
        (
            "1 MB phone",
            with("recipient.phone", Some(json!(format!("+{mb}")))),
            "recipient",
        ),
        (
            "1 MB reference",
            with("reference", Some(json!(mb))),
            "reference",
        ),
        ("10,000 tags", with("tags", Some(json!(tags))), "tags"),
        (
            "empty text",
            with("content.body.text.text", Some(json!(""))),
            "content.body.text.text",
        ),
        // Time zones and phone numbers.
        (
            "unknown zone",
            with("recipient.timezone", Some(json!("Mars/Olympus_Mons"))),
            "recipient.timezone",
        ),
        (
            "POSIX offset zone",
            with("recipient.timezone", Some(json!("+3"))),
            "recipient.timezone",
        ),
        (
            "empty zone",
            with("recipient.timezone", Some(json!(""))),
            "recipient.timezone",
        ),
        (
            "null zone",
            with("recipient.timezone", Some(Value::Null)),
            "recipient.timezone",
        ),
        (
            "SQL in the zone",
            with(
                "recipient.timezone",
                Some(json!("UTC'; DROP TABLE tidings.messages; --")),
            ),
            "recipient.timezone",
        ),
        // Zones PostgreSQL knows but the worker does not (issue 13, item 3).
        (
            "zone abbreviation",
            with("recipient.timezone", Some(json!("CEST"))),
            "recipient.timezone",
        ),
        (
            "POSIX rule zone",
            with("recipient.timezone", Some(json!("XYZ+3"))),
            "recipient.timezone",
        ),
        (
            "lower-case zone",
            with("recipient.timezone", Some(json!("europe/paris"))),
            "recipient.timezone",
        ),
        (
            "localtime zone",
            with("recipient.timezone", Some(json!("localtime"))),
            "recipient.timezone",
        ),
        // JSON the worker cannot read (issue 13, item 4).
        (
            "content 33 levels deep",
            with(
                "content.body.text.deep",
                Some(crate::enqueue_sql::nested(30)),
            ),
            "content",
        ),
        (
            "recipient 33 levels deep",
            with("recipient.deep", Some(crate::enqueue_sql::nested(32))),
            "recipient",
        ),
        (
            "national phone",
            with("recipient.phone", Some(json!("0612345678"))),
            "recipient.phone",
        ),
        (
            "phone with letters",
            with("recipient.phone", Some(json!("+3161234567a"))),
            "recipient.phone",
        ),
        (
            "phone too long",
            with("recipient.phone", Some(json!("+3161234567890123"))),
            "recipient.phone",
        ),
        (
            "phone +0",
            with("recipient.phone", Some(json!("+0612345678"))),
            "recipient.phone",
        ),
        // Timestamps and numbers at the limits.
        (
            "scheduled infinity",
            with("scheduled_for", Some(json!("infinity"))),
            "scheduled_for",
        ),
        (
            "scheduled -infinity",
            with("scheduled_for", Some(json!("-infinity"))),
            "scheduled_for",
        ),
        (
            "scheduled past year 294276",
            with("scheduled_for", Some(json!("294277-01-01T00:00:00Z"))),
            "scheduled_for",
        ),
        (
            "scheduled BC",
            with("scheduled_for", Some(json!("4714-11-24T00:00:00Z BC"))),
            "scheduled_for",
        ),
        (
            "scheduled month 13",
            with("scheduled_for", Some(json!("2026-13-01T00:00:00Z"))),
            "scheduled_for",
        ),
        (
            "scheduled without offset",
            with("scheduled_for", Some(json!("2026-01-01T00:00:00"))),
            "scheduled_for",
        ),
        (
            "scheduled 36 days ahead",
            with(
                "scheduled_for",
                Some(rfc3339(now + chrono::Duration::days(36))),
            ),
            "scheduled_for",
        ),
        ("validity 0", with("validity", Some(json!(0))), "validity"),
        ("validity -1", with("validity", Some(json!(-1))), "validity"),
        (
            "validity 30 days + 1 s",
            with("validity", Some(json!(2_592_001))),
            "validity",
        ),
        (
            "validity 1e30",
            with("validity", Some(json!(1e30))),
            "validity",
        ),
        (
            "validity beyond i64",
            with(
                "validity",
                Some(serde_json::from_str("99999999999999999999999").unwrap()),
            ),
            "validity",
        ),
        ("priority 10", with("priority", Some(json!(10))), "priority"),
        ("priority -1", with("priority", Some(json!(-1))), "priority"),
        (
            "cap_frequency on transactional",
            with("cap_frequency", Some(json!(true))),
            "cap_frequency",
        ),
        // SQL-looking strings where they are refused.
        (
            "SQL in the channel",
            with(
                "channel",
                Some(json!("sms'; DROP TABLE tidings.messages; --")),
            ),
            "channel",
        ),
        (
            "SQL in the body type",
            with("content.body.type", Some(json!("text' OR '1'='1"))),
            "content.body.type",
        ),
    ]
}

/// The SQLSTATE and message of an enqueue_many error.
fn db_error(err: sqlx::Error) -> (String, String) {
    match err {
        sqlx::Error::Database(db) => (
            db.code().unwrap_or_default().into_owned(),
            db.message().to_owned(),
        ),
        other => panic!("not a database error: {other}"),
    }
}

async fn enqueue_sql(pool: &PgPool, batch: Value) -> Result<Vec<uuid::Uuid>, (String, String)> {
    sqlx::query_scalar("SELECT tidings.enqueue_many($1)")
        .bind(batch)
        .fetch_all(pool)
        .await
        .map_err(db_error)
}

async fn messages(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tidings.messages")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn sql_refuses_each_bad_message_with_22023_naming_the_field(pool: PgPool) {
    sync(&pool, &config(None, "")).await;
    for (what, msg, field) in corpus() {
        let (code, message) = enqueue_sql(&pool, json!([msg])).await.expect_err(what);
        assert_eq!(code, "22023", "{what}: {message}");
        assert!(
            message.starts_with(field),
            "{what}: {message:?} should name {field}"
        );
        // In a batch, the error names the position and the field; the good neighbours are not written.
        let (code, message) = enqueue_sql(&pool, json!([good(), msg, good()]))
            .await
            .expect_err(what);
        assert_eq!(code, "22023", "{what}: {message}");
        assert!(
            message.starts_with(&format!("messages[1].{field}")),
            "{what}: {message:?}"
        );
    }
    assert_eq!(messages(&pool).await, 0, "nothing half-written");

    // Not a batch at all.
    for batch in [json!({}), json!("x"), json!(null), json!(1)] {
        let (code, message) = enqueue_sql(&pool, batch).await.unwrap_err();
        assert_eq!(
            (code.as_str(), message.starts_with("messages")),
            ("22023", true)
        );
    }
    // At the limits, still valid.
    let now = chrono::Utc::now();
    let edge = [
        with("validity", Some(json!(2_592_000))),
        with("validity", Some(json!(1))),
        with("priority", Some(json!(9))),
        with(
            "scheduled_for",
            Some(rfc3339(now + chrono::Duration::days(34))),
        ),
        with("scheduled_for", Some(json!("1970-01-01T00:00:00Z"))),
        with("recipient.phone", Some(json!("+123456789012345"))),
        with(
            "recipient.timezone",
            Some(json!("America/Argentina/Buenos_Aires")),
        ),
        with("tags", Some(json!(vec!["t".repeat(100); 10]))),
        with("content.body.text.text", Some(json!("x".repeat(10_000)))),
        // SQL-looking text is just text.
        with(
            "content.body.text.text",
            Some(json!("'); DROP TABLE tidings.messages; --")),
        ),
        with("reference", Some(json!("' OR 1=1 --"))),
    ];
    let ids = enqueue_sql(&pool, Value::Array(edge.to_vec()))
        .await
        .expect("messages at the limits are valid");
    assert_eq!(ids.len(), edge.len());
    assert_eq!(messages(&pool).await, edge.len() as i64);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_client_names_the_field_and_the_batch_position(pool: PgPool) {
    sync(&pool, &config(None, "")).await;
    for (what, msg, field) in corpus() {
        let err = tidings_client::enqueue_json(&pool, json!([good(), good(), msg]))
            .await
            .expect_err(what);
        match err {
            tidings_client::Error::Invalid {
                field: f, index, ..
            } => {
                assert!(f.starts_with(field), "{what}: field {f:?}, want {field}");
                assert_eq!(index, Some(2), "{what}");
            }
            other => panic!("{what}: {other}"),
        }
    }
    assert_eq!(messages(&pool).await, 0, "nothing half-written");
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn nul_bytes_are_refused_before_the_function_runs(pool: PgPool) {
    // PostgreSQL's jsonb cannot hold U+0000 in a string: the value is refused while the parameter is read
    // (SQLSTATE 22P05), before tidings.enqueue_many runs, so no field is named. Nothing is written either way.
    sync(&pool, &config(None, "")).await;
    let err = tidings_client::enqueue_json(
        &pool,
        json!([with("content.body.text.text", Some(json!("a\u{0}b")))]),
    )
    .await
    .unwrap_err();
    match err {
        tidings_client::Error::Database(sqlx::Error::Database(db)) => {
            assert_eq!(db.code().as_deref(), Some("22P05"), "{}", db.message());
        }
        other => panic!("{other}"),
    }
    // Invalid UTF-8 cannot reach the function: text parameters must be UTF-8 (22021).
    let err =
        sqlx::query("SELECT tidings.enqueue_many(convert_from('\\xff'::bytea, 'UTF8')::jsonb)")
            .execute(&pool)
            .await
            .unwrap_err();
    assert_eq!(db_error(err).0, "22021");
    assert_eq!(messages(&pool).await, 0);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_good_message_after_bad_ones_is_sent(pool: PgPool) {
    let config = config(None, "poll_interval = \"50ms\"");
    let store = sync(&pool, &config).await;
    let shutdown = Shutdown::new();
    let providers = tidings::provider::build_all(&config).unwrap();
    let worker = tokio::spawn(
        Worker::new(config, store)
            .providers(providers)
            .metrics(Metrics::new())
            .shutdown(shutdown.clone())
            .run(),
    );
    for (what, msg, _) in corpus().into_iter().take(20) {
        assert!(enqueue_sql(&pool, json!([msg])).await.is_err(), "{what}");
    }
    let id = tidings_client::enqueue_json(&pool, json!([good()]))
        .await
        .unwrap()[0];
    wait_until(Duration::from_secs(30), "the good message sent", || async {
        count(&pool, "sent").await == 1
    })
    .await;
    assert_eq!(live(&pool).await, 0);
    let status = tidings_client::status(&pool, id).await.unwrap().unwrap();
    assert_eq!(status.status, tidings_client::Status::Sent);
    shutdown.stop.cancel();
    worker.await.unwrap().unwrap();
}

/// Runs `tidings enqueue --file` on `lines`; returns (success, stderr).
async fn cli_enqueue(pool: &PgPool, lines: &[&[u8]], batch: usize) -> (bool, String) {
    let path = std::env::temp_dir().join(format!("tidings-bad-{}.jsonl", uuid::Uuid::now_v7()));
    std::fs::write(&path, lines.join(&b'\n')).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["enqueue", "--batch", &batch.to_string(), "--file"])
        .arg(&path)
        .env("DATABASE_URL", url_of(pool).await)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_cli_names_the_line_and_the_field(pool: PgPool) {
    sync(&pool, &config(None, "")).await;
    let good = good().to_string();
    let bad_priority = with("priority", Some(json!("high"))).to_string();
    let bad_phone = with("recipient.phone", Some(json!("0612"))).to_string();
    let cases: Vec<(Vec<&[u8]>, &str, &str)> = vec![
        (
            vec![good.as_bytes(), good.as_bytes(), bad_priority.as_bytes()],
            ":3:",
            "priority",
        ),
        (
            vec![good.as_bytes(), b"", bad_phone.as_bytes()],
            ":3:",
            "recipient.phone",
        ),
        (
            vec![good.as_bytes(), b"{\"channel\": \"sms\",", good.as_bytes()],
            ":2:",
            "not JSON",
        ),
        (vec![good.as_bytes(), b"[1, 2]"], ":2:", "message"),
        (
            vec![good.as_bytes(), b"{\"channel\": \"sms\xff\"}"],
            ":2:",
            "UTF-8",
        ),
    ];
    for (lines, line, field) in cases {
        let (ok, stderr) = cli_enqueue(&pool, &lines, 1000).await;
        assert!(!ok, "{stderr}");
        let stderr = stderr.trim();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(line) && stderr.contains(field),
            "{stderr:?} should name line {line} and {field}"
        );
    }
    assert_eq!(messages(&pool).await, 0, "a bad batch writes nothing");
    // With batches of one, the lines before the bad one stay enqueued, the bad one and those after do not.
    let lines: Vec<&[u8]> = vec![good.as_bytes(), bad_priority.as_bytes(), good.as_bytes()];
    let (ok, stderr) = cli_enqueue(&pool, &lines, 1).await;
    assert!(!ok && stderr.contains(":2:"), "{stderr}");
    assert_eq!(messages(&pool).await, 1);
}

#[test]
fn the_receipts_parser_refuses_invalid_utf8_and_oversized_bodies() {
    let bad_utf8 = b"{\"status\": \"delivered\", \"id\": \"\xff\xfe\"}";
    assert!(matches!(
        receipts::parse(bad_utf8),
        Err(receipts::ReceiptError::NotJson(_))
    ));
    // Deep nesting is refused by the JSON parser's recursion limit, not by a stack overflow.
    let deep = "[".repeat(100_000);
    assert!(matches!(
        receipts::parse(deep.as_bytes()),
        Err(receipts::ReceiptError::NotJson(_))
    ));
    // An oversized body (8 MiB) parses or fails with a named field, without panicking.
    let huge =
        json!({ "status": "delivered", "id": "x".repeat(8 << 20), "reference": 5 }).to_string();
    let err = receipts::parse(huge.as_bytes()).unwrap_err();
    assert!(err.to_string().starts_with("reference"), "{err}");
    let huge_garbage = vec![b'{'; 8 << 20];
    assert!(receipts::parse(&huge_garbage).is_err());
}

/// Random JSON: leaves biased towards the values the validators look for, nested up to three levels.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "+31612345678",
            "Europe/Paris",
            "text",
            "image",
            "file",
            "https://x/y.png",
            "00000000-0000-0000-0000-000000000000",
            "2026-01-01T00:00:00Z",
            "",
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(arb_key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "phone",
            "timezone",
            "body",
            "template",
            "type",
            "text",
            "image",
            "images",
            "file",
            "files",
            "mediaUrl",
            "contentType",
            "projectId",
            "version",
            "locale",
            "parameters",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,8}",
    ]
}

/// A message with random recipient and content, and random values for some of the other keys.
fn arb_message() -> impl Strategy<Value = Value> {
    let keys = [
        "scheduled_for",
        "validity",
        "use_case",
        "ignore_quiet_hours",
        "cap_frequency",
        "priority",
        "tags",
        "reference",
    ];
    (
        arb_json(),
        arb_json(),
        prop::collection::btree_map(prop::sample::select(keys.to_vec()), arb_json(), 0..3),
    )
        .prop_map(|(recipient, content, extra)| {
            let mut msg = json!({ "channel": "sms", "recipient": recipient, "content": content });
            for (k, v) in extra {
                msg[k] = v;
            }
            msg
        })
}

fn generate<T: std::fmt::Debug>(strategy: impl Strategy<Value = T>, cases: usize) -> Vec<T> {
    let mut runner = TestRunner::new(ProptestConfig::with_cases(cases as u32));
    (0..cases)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn random_json_is_accepted_or_refused_with_22023(pool: PgPool) {
    sync(&pool, &config(None, "")).await;
    for msg in generate(arb_message(), 200) {
        match sqlx::query_scalar::<_, Option<String>>(
            "SELECT tidings.check_message($1, 'sandbox', now())",
        )
        .bind(&msg)
        .fetch_one(&pool)
        .await
        {
            Ok(_) => {}
            Err(e) => panic!("check_message({msg}): {e}"),
        }
        let mut tx = pool.begin().await.unwrap();
        let result = sqlx::query_scalar::<_, uuid::Uuid>("SELECT tidings.enqueue_many($1)")
            .bind(json!([msg]))
            .fetch_all(&mut *tx)
            .await;
        tx.rollback().await.unwrap();
        if let Err(e) = result {
            let (code, message) = db_error(e);
            assert_eq!(code, "22023", "{msg}: {message}");
        }
    }
}

#[test]
fn receipts_parse_never_panics_on_arbitrary_bytes() {
    let bytes = prop::collection::vec(any::<u8>(), 0..512);
    let json_bytes = arb_json().prop_map(|v| {
        json!({ "payload": v.clone(), "status": v, "id": "x" })
            .to_string()
            .into_bytes()
    });
    for body in generate(bytes, 200)
        .into_iter()
        .chain(generate(json_bytes, 200))
    {
        let _ = receipts::parse(&body);
    }
}
