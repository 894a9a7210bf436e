//! The worker's side of "what is accepted is sendable, exactly as enqueued" (issue 13): content reaches every
//! provider byte for byte, stored JSON the worker cannot parse is a classified outcome, provider answers are
//! read and stored bounded and without the recipient, absurd provider values are retried, not panics, and the
//! binary's log is plain text when stderr is not a terminal.
//!
//! Each test runs a real in-process worker against a capturing wiremock server, with rows as PostgreSQL holds
//! them. Where a test needs a stored document enqueue might refuse (a number out of `f64`'s range, nesting
//! deeper than the worker's parser goes, a number where a seed wants a string), it enqueues a plain message
//! and then writes the document into the row with an `UPDATE`: the adapters must cope with whatever the table
//! holds (rows enqueued before a rule existed included), and what enqueue accepts is tested in `enqueue_sql`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use sqlx::PgPool;
use tidings::config::Config;
use tidings::metrics::Metrics;
use tidings::provider::{self, Providers};
use tidings::shutdown::Shutdown;
use tidings::store::Store;
use tidings::worker::Worker;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{live, sync, url_of, wait_until};

const SEGMENT: &str = "0b7c2f5e-8a7d-4f8e-9a38-2f6d1c1e5a10";
const BIG: &str = "123456789012345678901234567890";
const PRECISE: &str = "0.1000000000000000055511151231257827";
const PHONE: &str = "+31612345678";

fn env() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("PB_BIRD_KEY", "bird-access-key-1"),
        ("PB_INSTAPLY_TOKEN", "instaply-token-2"),
        ("PB_INSIDER_TOKEN", "insider-token-3"),
        ("PB_INSIDER_USER", "insider-user-4"),
        ("PB_INSIDER_PASSWORD", "insider-password-5"),
        ("PB_PROMPT_KEY", "prompt-key-6"),
        ("PB_HOOK_SECRET", "hook-secret-7"),
    ])
}

/// The channel table of `kind` pointing at `base`, with the channel named `c`.
fn channel(kind: &str, base: &str) -> String {
    let settings = match kind {
        "bird_sms" => {
            "workspace_id = \"ws\"\nchannel_id = \"ch\"\naccess_key_env = \"PB_BIRD_KEY\""
        }
        "instaply_whatsapp" => "token_env = \"PB_INSTAPLY_TOKEN\"",
        "insider_push" => "access_token_env = \"PB_INSIDER_TOKEN\"",
        "insider_push_login" => {
            "userkey_env = \"PB_INSIDER_USER\"\npassword_env = \"PB_INSIDER_PASSWORD\""
        }
        "instant_app" => "org_channel_api_id = \"org-1\"\napi_key_env = \"PB_PROMPT_KEY\"",
        "webhook" => "secret_env = \"PB_HOOK_SECRET\"",
        other => panic!("{other}"),
    };
    let kind = kind.trim_end_matches("_login");
    let base = if kind == "webhook" {
        format!("{base}/webhook")
    } else {
        base.to_owned()
    };
    format!(
        "[worker]\npoll_interval = \"50ms\"\nconcurrency = 8\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [channels.c]\nkind = \"{kind}\"\nbase_url = \"{base}\"\ntimeout = \"5s\"\n{settings}\n"
    )
}

/// A message the SQL function accepts for `kind` (its stored documents may be replaced after, see above).
fn plain(kind: &str) -> (Value, Value) {
    match kind {
        "bird_sms" => (
            json!({ "phone": PHONE }),
            json!({ "body": { "type": "text", "text": { "text": "hello" } } }),
        ),
        "instaply_whatsapp" => (
            json!({ "customerThreadId": "t-1" }),
            json!({ "text": "hello" }),
        ),
        "insider_push" | "insider_push_login" => (
            json!({ "applicationIds": ["app-1"], "segmentId": SEGMENT }),
            json!({ "content": { "title": "Sale", "message": "Today only" } }),
        ),
        "instant_app" => (
            json!({ "phone": "+12125550123" }),
            json!({ "message": "hi", "instantAppSchemaApiId": "schema-1" }),
        ),
        "webhook" => (json!({ "user": "u-1" }), json!({ "text": "hi" })),
        other => panic!("{other}"),
    }
}

async fn enqueue(pool: &PgPool, kind: &str) -> Uuid {
    let (recipient, content) = plain(kind);
    sqlx::query_scalar("SELECT tidings.enqueue(channel => 'c', recipient => $1, content => $2)")
        .bind(recipient)
        .bind(content)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Writes stored documents into a row (JSON text, parsed by PostgreSQL into `jsonb`).
async fn store_documents(pool: &PgPool, id: Uuid, recipient: Option<&str>, content: Option<&str>) {
    sqlx::query(
        "UPDATE tidings.messages SET recipient = coalesce($2::jsonb, recipient), \
         content = coalesce($3::jsonb, content) WHERE id = $1",
    )
    .bind(id)
    .bind(recipient)
    .bind(content)
    .execute(pool)
    .await
    .unwrap();
}

/// `expr` (e.g. `content->'template'`) of a row, as PostgreSQL writes it.
async fn stored_text(pool: &PgPool, id: Uuid, expr: &str) -> String {
    sqlx::query_scalar(&format!(
        "SELECT ({expr})::text FROM tidings.messages WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Runs a worker over `config_toml`'s channel until `done` holds.
async fn run_worker_until<F, Fut>(pool: &PgPool, config_toml: &str, what: &str, done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let config = Config::parse(config_toml).unwrap();
    sync(pool, &config).await;
    let env = env();
    let lookup = |var: &str| env.get(var).map(|v| (*v).to_owned());
    let client = provider::http::client().unwrap();
    let providers: Providers = config
        .channels
        .iter()
        .map(|(name, ch)| {
            let adapter = provider::build_with(name, ch, &client, &lookup).unwrap();
            (name.clone(), adapter)
        })
        .collect();
    let store = Store::connect(&url_of(pool).await, 4).await.unwrap();
    let shutdown = Shutdown::new();
    let worker = tokio::spawn(
        Worker::new(config, store)
            .providers(providers)
            .metrics(Metrics::new())
            .shutdown(shutdown.clone())
            .run(),
    );
    wait_until(Duration::from_secs(30), what, done).await;
    shutdown.stop.cancel();
    worker.await.unwrap().unwrap();
}

async fn run_worker(pool: &PgPool, config_toml: &str) {
    run_worker_until(pool, config_toml, "every message final", || async {
        live(pool).await == 0
    })
    .await;
}

/// (status, reason, detail) of a message's last event.
async fn last_event(pool: &PgPool, id: Uuid) -> (String, String, Value) {
    sqlx::query_as(
        "SELECT status::text, reason, coalesce(detail, 'null') FROM tidings.message_events \
         WHERE message_id = $1 ORDER BY at DESC, status DESC LIMIT 1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Answers every request with `status` and `body` (JSON).
async fn answering(server: &MockServer, status: u16, body: Value) {
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(server)
        .await;
}

/// The top-level members of a request body, as the text that went over the wire.
fn members(request: &Request) -> BTreeMap<String, Box<RawValue>> {
    serde_json::from_slice(&request.body).unwrap()
}

fn request_to(requests: &[Request], p: &str) -> Request {
    let matching: Vec<&Request> = requests.iter().filter(|r| r.url.path() == p).collect();
    assert_eq!(matching.len(), 1, "exactly one request to {p}");
    matching[0].clone()
}

/// (kind, stored recipient, stored content, send path, [(request member, stored expression)]).
type Case<'a> = (
    &'a str,
    Option<&'a str>,
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
);

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn content_reaches_every_provider_byte_for_byte(pool: PgPool) {
    let template = format!(
        r#"{{"template": {{"projectId": "ce6a2fd6-b2fa-4f5a-a2cd-f3bd15883318", "version": "latest", "locale": "en",
            "parameters": [{{"type": "number", "key": "big", "value": {BIG}}},
                           {{"type": "number", "key": "precise", "value": {PRECISE}}}]}}}}"#
    );
    let push = format!(
        r#"{{"content": {{"title": "Sale", "message": "Today only", "badge": {BIG}, "ratio": {PRECISE}}}}}"#
    );
    let instant = format!(
        r#"{{"message": "hi", "instantAppSchemaApiId": "schema-1",
            "instantAppParameters": {{"amount": {PRECISE}, "order": {BIG}, "note": "x"}}}}"#
    );
    let hook_recipient = format!(r#"{{"user": {BIG}}}"#);
    let hook_content = format!(r#"{{"text": "hi", "n": [{BIG}, {PRECISE}, 1e2]}}"#);
    let thread = format!(r#"{{"customerThreadId": {BIG}}}"#);
    let cases: Vec<Case> = vec![
        (
            "bird_sms",
            None,
            &template,
            "/workspaces/ws/channels/ch/messages",
            vec![("template", "content->'template'")],
        ),
        (
            "insider_push",
            None,
            &push,
            "/rest/push/sendInstant",
            vec![("content", "content->'content'")],
        ),
        (
            "instant_app",
            None,
            &instant,
            "/messages/send_to_customer",
            vec![("instantAppParameters", "content->'instantAppParameters'")],
        ),
        (
            "webhook",
            Some(&hook_recipient),
            &hook_content,
            "/webhook",
            vec![("recipient", "recipient"), ("content", "content")],
        ),
        (
            "instaply_whatsapp",
            Some(&thread),
            r#"{"text": "Your table is ready"}"#,
            "/api/send-message-to-customer-thread",
            vec![],
        ),
    ];
    for (kind, recipient, content, send_path, compare) in cases {
        sqlx::query("DELETE FROM tidings.message_events")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("DELETE FROM tidings.messages")
            .execute(&pool)
            .await
            .unwrap();
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/get-customer-thread-details"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({ "isMessagingWindowOpen": true })),
            )
            .mount(&server)
            .await;
        answering(&server, 200, json!({ "id": "p-1", "code": 0 })).await;
        let config = channel(kind, &server.uri());
        sync(&pool, &Config::parse(&config).unwrap()).await;
        let id = enqueue(&pool, kind).await;
        store_documents(&pool, id, recipient, Some(content)).await;

        run_worker(&pool, &config).await;

        let (status, reason, _) = last_event(&pool, id).await;
        assert_eq!((status.as_str(), kind), ("sent", kind), "{reason}");
        let requests = server.received_requests().await.unwrap();
        let request = request_to(&requests, send_path);
        let wire = String::from_utf8(request.body.clone()).unwrap();
        assert!(wire.contains(BIG), "{kind}: {wire}");
        let sent = members(&request);
        for (member, expr) in compare {
            assert_eq!(
                sent[member].get(),
                stored_text(&pool, id, expr).await,
                "{kind}: {member} exactly as stored"
            );
        }
        if kind == "instaply_whatsapp" {
            // A numeric thread id keeps its digits (it goes out as the string Instaply's API takes).
            assert_eq!(sent["customerThreadId"].get(), format!("\"{BIG}\""));
        } else {
            assert!(wire.contains(PRECISE), "{kind}: {wire}");
        }
    }
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn stored_json_the_worker_cannot_parse_is_a_classified_outcome(pool: PgPool) {
    let server = MockServer::start().await;
    answering(
        &server,
        202,
        json!({ "id": "bird-1", "status": "accepted" }),
    )
    .await;
    let config = channel("bird_sms", &server.uri());
    sync(&pool, &Config::parse(&config).unwrap()).await;
    let deep = format!(
        r#"{{"phone": "{PHONE}", "x": {}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let huge = format!(r#"{{"phone": "{PHONE}", "x": 1e400}}"#);
    let too_deep = enqueue(&pool, "bird_sms").await;
    store_documents(&pool, too_deep, Some(&deep), None).await;
    let out_of_range = enqueue(&pool, "bird_sms").await;
    store_documents(&pool, out_of_range, Some(&huge), None).await;
    // Content the adapter only copies is never parsed into a tree: it goes out as stored, however deep.
    let deep_body = format!(
        r#"{{"body": {{"type": "text", "text": {{"text": "hi"}}, "x": {}1{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let deep_content = enqueue(&pool, "bird_sms").await;
    store_documents(&pool, deep_content, None, Some(&deep_body)).await;

    run_worker(&pool, &config).await;

    for (id, error) in [
        (too_deep, "recursion limit exceeded"),
        (out_of_range, "number out of range"),
    ] {
        let (status, reason, detail) = last_event(&pool, id).await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("sending_failed", "unreadable_content"),
            "{detail}"
        );
        assert_eq!(detail["field"], "recipient");
        assert_eq!(detail["error"], error);
        assert!(
            detail["line"].is_u64() && detail["column"].is_u64(),
            "{detail}"
        );
        assert!(!detail.to_string().contains("31612345678"), "{detail}");
    }
    assert_eq!(last_event(&pool, deep_content).await.0, "sent");
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "only the readable message was sent");
    assert_eq!(
        members(&requests[0])["body"].get(),
        stored_text(&pool, deep_content, "content->'body'").await
    );
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn provider_answers_are_read_bounded_and_stored_without_the_recipient(pool: PgPool) {
    let server = MockServer::start().await;
    let config = channel("bird_sms", &server.uri());
    sync(&pool, &Config::parse(&config).unwrap()).await;
    let huge_refusal = enqueue(&pool, "bird_sms").await;
    let huge_accept = enqueue(&pool, "bird_sms").await;
    let echo = enqueue(&pool, "bird_sms").await;
    let echo_retry = enqueue(&pool, "bird_sms").await;
    let body_of = |id: Uuid| wiremock::matchers::body_partial_json(json!({ "reference": id }));
    // 4 MiB, the recipient all over it.
    let huge = format!(
        r#"{{"error": "{}"}}"#,
        format!("receiver {PHONE} is not reachable; ").repeat(120_000)
    );
    assert!(huge.len() > 4 << 20);
    Mock::given(body_of(huge_refusal))
        .respond_with(ResponseTemplate::new(400).set_body_raw(huge.clone(), "application/json"))
        .mount(&server)
        .await;
    Mock::given(body_of(huge_accept))
        .respond_with(ResponseTemplate::new(202).set_body_raw(huge, "application/json"))
        .mount(&server)
        .await;
    // The recipient echoed in every form: as given, without '+', URL-encoded, in a key, cut by the excerpt.
    let echoed = json!({
        "error": format!("invalid receiver {PHONE}"),
        "receiver": { "identifierValue": PHONE, "digits": "31612345678", "query": "to=%2B31612345678" },
        PHONE: "unknown",
    });
    Mock::given(body_of(echo))
        .respond_with(ResponseTemplate::new(422).set_body_json(&echoed))
        .mount(&server)
        .await;
    let cut = format!("{}{PHONE}", "x".repeat(http_excerpt() - 6));
    Mock::given(body_of(echo_retry))
        .respond_with(ResponseTemplate::new(503).set_body_string(cut))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    answering(
        &server,
        202,
        json!({ "id": "bird-1", "status": "accepted" }),
    )
    .await;

    run_worker(&pool, &config).await;

    let (status, reason, detail) = last_event(&pool, huge_refusal).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("sending_failed", "http_400")
    );
    assert_eq!(detail["http_status"], 400);
    assert_eq!(detail["truncated"], true, "{detail}");
    assert!(detail.to_string().len() < 1024, "bounded: {detail}");
    assert!(!detail.to_string().contains("31612345678"), "{detail}");

    assert_eq!(last_event(&pool, huge_accept).await.0, "sent");

    let (status, reason, detail) = last_event(&pool, echo).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("sending_failed", "http_422")
    );
    let text = detail.to_string();
    assert!(!text.contains("31612345678"), "{text}");
    assert!(text.contains("invalid receiver ***"), "{text}");

    let retried: Value = sqlx::query_scalar(
        "SELECT detail FROM tidings.message_events WHERE message_id = $1 AND reason = 'http_503'",
    )
    .bind(echo_retry)
    .fetch_one(&pool)
    .await
    .unwrap();
    let excerpt = retried["excerpt"].as_str().unwrap();
    assert!(excerpt.len() <= http_excerpt(), "{}", excerpt.len());
    assert!(
        excerpt.ends_with("x***"),
        "a cut-off phone is scrubbed too: {excerpt}"
    );
    assert_eq!(last_event(&pool, echo_retry).await.0, "sent");

    // And what a producer reads through tidings.events: the same scrubbed, bounded details.
    let events: Value = sqlx::query_scalar(
        "SELECT coalesce(json_agg(e), '[]') FROM tidings.message_events e WHERE message_id = ANY($1)",
    )
    .bind(vec![huge_refusal, echo, echo_retry])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!events.to_string().contains("31612345678"));
}

fn http_excerpt() -> usize {
    // provider::http::BODY_EXCERPT (a literal, so this file also builds against the code before the fix)
    512
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn an_absurd_token_lifetime_is_retried_not_a_panic(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/login"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"access_token": "tok-1", "expires_in": 18446744073709551615}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    answering(&server, 200, json!({ "code": 0 })).await;
    let config = channel("insider_push_login", &server.uri());
    sync(&pool, &Config::parse(&config).unwrap()).await;
    let id = enqueue(&pool, "insider_push_login").await;

    run_worker_until(&pool, &config, "the attempt's outcome", || async {
        !last_event(&pool, id).await.0.starts_with("accepted")
            && last_event(&pool, id).await.0 != "processing"
    })
    .await;

    let (status, reason, detail) = last_event(&pool, id).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("scheduled", "login_failed"),
        "{detail}"
    );
    assert_eq!(detail["stage"], "login");
    let sends = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/rest/push/sendInstant")
        .count();
    assert_eq!(sends, 0);
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn logs_are_plain_text_when_stderr_is_not_a_terminal(pool: PgPool) {
    // A channel over plain http to a host that is not loopback, allowed: the start says so, loudly.
    let config = "[http]\nlisten = \"127.0.0.1:0\"\n[channels.c]\nkind = \"sandbox\"\n\
                  base_url = \"http://192.0.2.1:9\"\nallow_insecure_http = true\ntimeout = \"1s\"\n";
    let config_path = std::env::temp_dir().join(format!("tidings-pb-{}.toml", Uuid::now_v7()));
    std::fs::write(&config_path, config).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["worker", "--config"])
        .arg(&config_path)
        .env("DATABASE_URL", url_of(&pool).await)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    // Up to the line saying the worker serves: every start-up line is written by then.
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).await.unwrap() == 0 {
                return false;
            }
            log.push_str(&line);
            if line.contains("serving /metrics") {
                return true;
            }
        }
    })
    .await
    .unwrap_or(false);
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    stderr.read_to_string(&mut log).await.unwrap();
    let _ = std::fs::remove_file(&config_path);
    assert!(started, "the worker started: {log}");
    assert!(status.success(), "{status}: {log}");
    assert!(
        !log.contains('\x1b'),
        "no ANSI escape in a piped log: {log:?}"
    );
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("allow_insecure_http")
            && l.contains("cleartext")),
        "{log}"
    );
}

#[test]
fn the_compose_config_still_parses() {
    // Its channel is plain http to the compose network's sandbox: allowed there, explicitly.
    Config::parse(include_str!("../../ops/tidings.compose.toml")).unwrap();
}

#[test]
fn the_sharded_example_configs_still_parse() {
    // docs/sharding.md's worked example: each shard's own channels.
    for toml in [
        include_str!("../../ops/sharded/shard-a.toml"),
        include_str!("../../ops/sharded/shard-b.toml"),
    ] {
        Config::parse(toml).unwrap();
    }
}
