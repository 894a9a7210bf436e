//! Every adapter end to end: a message enqueued through SQL (`tidings.enqueue` with named parameters), a real
//! in-process [`Worker`], and a wiremock server that answers only the exact request the seed defines. Each test
//! asserts the message ends `sent` with the provider's id stored, and the request's fields.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use tidings::config::Config;
use tidings::metrics::Metrics;
use tidings::provider::{self, Providers};
use tidings::shutdown::Shutdown;
use tidings::store::Store;
use tidings::worker::Worker;
use uuid::Uuid;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{live, sync, url_of, wait_until};

const SEGMENT: &str = "0b7c2f5e-8a7d-4f8e-9a38-2f6d1c1e5a10";

/// The credentials every channel reads, by variable name: handed to `build_with`, never put in the process
/// environment.
fn env() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("E2E_BIRD_KEY", "bird-access-key-1"),
        ("E2E_INSTAPLY_TOKEN", "instaply-token-2"),
        ("E2E_INSIDER_TOKEN", "insider-token-3"),
        ("E2E_PROMPT_KEY", "prompt-key-4"),
        ("E2E_HOOK_SECRET", "hook-secret-5"),
    ])
}

/// A config with the worker tuned for tests and one channel table.
fn config(channel: &str) -> Config {
    Config::parse(&format!(
        "[worker]\npoll_interval = \"50ms\"\nconcurrency = 8\n[http]\nlisten = \"127.0.0.1:0\"\n{channel}"
    ))
    .unwrap()
}

/// `SELECT tidings.enqueue(channel => …, recipient => …, content => …, tags => …)`.
async fn enqueue(pool: &PgPool, channel: &str, recipient: Value, content: Value) -> Uuid {
    sqlx::query_scalar(
        "SELECT tidings.enqueue(channel => $1, recipient => $2, content => $3, tags => $4)",
    )
    .bind(channel)
    .bind(recipient)
    .bind(content)
    .bind(vec!["e2e".to_owned()])
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Runs a worker with `config`'s channels until no message is live.
async fn run_worker(pool: &PgPool, config: &Config) {
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
        Worker::new(config.clone(), store)
            .providers(providers)
            .metrics(Metrics::new())
            .shutdown(shutdown.clone())
            .run(),
    );
    wait_until(Duration::from_secs(30), "every message final", || async {
        live(pool).await == 0
    })
    .await;
    shutdown.stop.cancel();
    worker.await.unwrap().unwrap();
}

/// (status, provider_message_id) of a message.
async fn outcome(pool: &PgPool, id: Uuid) -> (String, Option<String>) {
    sqlx::query_as("SELECT status::text, provider_message_id FROM tidings.messages WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The `sent` event's detail.
async fn sent_detail(pool: &PgPool, id: Uuid) -> Value {
    sqlx::query_scalar(
        "SELECT detail FROM tidings.message_events WHERE message_id = $1 AND status = 'sent'",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn only_request(requests: Vec<Request>, p: &str) -> Request {
    let mut matching: Vec<Request> = requests.into_iter().filter(|r| r.url.path() == p).collect();
    assert_eq!(matching.len(), 1, "exactly one request to {p}");
    matching.remove(0)
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn bird_sms_end_to_end(pool: PgPool) {
    let server = MockServer::start().await;
    let config = config(&format!(
        "[channels.sms]\nkind = \"bird_sms\"\nbase_url = \"{}\"\nworkspace_id = \"ws-1\"\nchannel_id = \"ch-1\"\naccess_key_env = \"E2E_BIRD_KEY\"\n",
        server.uri()
    ));
    sync(&pool, &config).await;
    let content =
        json!({ "body": { "type": "text", "text": { "text": "Your parcel arrives today" } } });
    let id = enqueue(
        &pool,
        "sms",
        json!({ "phone": "+31612345678" }),
        content.clone(),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/workspaces/ws-1/channels/ch-1/messages"))
        .and(header("authorization", "AccessKey bird-access-key-1"))
        .and(wiremock::matchers::body_partial_json(json!({
            "receiver": { "contacts": [ { "identifierValue": "+31612345678" } ] },
            "reference": id,
            "body": content["body"],
            "tags": ["e2e"],
        })))
        .respond_with(
            ResponseTemplate::new(202)
                .set_body_json(json!({ "id": "bird-msg-1", "status": "accepted" })),
        )
        .expect(1)
        .mount(&server)
        .await;

    run_worker(&pool, &config).await;

    assert_eq!(
        outcome(&pool, id).await,
        ("sent".into(), Some("bird-msg-1".into()))
    );
    let request = only_request(
        server.received_requests().await.unwrap(),
        "/workspaces/ws-1/channels/ch-1/messages",
    );
    let body: Value = request.body_json().unwrap();
    // Exactly the seed's fields: no quiet-hours or frequency flags the message did not set.
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["body", "receiver", "reference", "tags", "validity"]);
    // Default transactional validity is 36 h; what is left when sent is just under it.
    let validity = body["validity"].as_i64().unwrap();
    assert!((129_000..=129_600).contains(&validity), "{validity}");
    server.verify().await;
}

async fn instaply_server(thread: &str, open: bool) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/get-customer-thread-details"))
        .and(query_param("customerThreadId", thread))
        .and(header("token", "instaply-token-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "customerChannel": "WHATSAPP", "status": "waiting", "isMessagingWindowOpen": open,
        })))
        .expect(1..)
        .mount(&server)
        .await;
    server
}

fn instaply_config(server: &MockServer) -> Config {
    config(&format!(
        "[channels.whatsapp]\nkind = \"instaply_whatsapp\"\nbase_url = \"{}\"\ntoken_env = \"E2E_INSTAPLY_TOKEN\"\n",
        server.uri()
    ))
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn instaply_whatsapp_open_window_sends_text(pool: PgPool) {
    let server = instaply_server("thread-open", true).await;
    let config = instaply_config(&server);
    sync(&pool, &config).await;
    let id = enqueue(
        &pool,
        "whatsapp",
        json!({ "customerThreadId": "thread-open" }),
        json!({ "text": "Your table is ready", "contentSid": "HXtemplate1" }),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/api/send-message-to-customer-thread"))
        .and(header("token", "instaply-token-2"))
        .and(header("idempotency-key", id.to_string().as_str()))
        .and(body_json(json!({
            "text": "Your table is ready", "customerThreadId": "thread-open", "internal": false,
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "messageId": 555001 })))
        .expect(1)
        .mount(&server)
        .await;

    run_worker(&pool, &config).await;

    assert_eq!(
        outcome(&pool, id).await,
        ("sent".into(), Some("555001".into()))
    );
    let detail = sent_detail(&pool, id).await;
    assert_eq!(detail["sent_as"], "text");
    assert_eq!(detail["fallback_template"], false);
    server.verify().await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn instaply_whatsapp_closed_window_falls_back_to_the_template(pool: PgPool) {
    let server = instaply_server("closed-7", false).await;
    let config = instaply_config(&server);
    sync(&pool, &config).await;
    let with_template = enqueue(
        &pool,
        "whatsapp",
        json!({ "customerThreadId": "closed-7" }),
        json!({ "text": "Your table is ready", "contentSid": "HXtemplate1" }),
    )
    .await;
    let without = enqueue(
        &pool,
        "whatsapp",
        json!({ "customerThreadId": "closed-7" }),
        json!({ "text": "Free text only" }),
    )
    .await;
    // Only the template may go out: a free-text send would not match and answer 404.
    Mock::given(method("POST"))
        .and(path("/api/send-message-to-customer-thread"))
        .and(header("token", "instaply-token-2"))
        .and(header(
            "idempotency-key",
            with_template.to_string().as_str(),
        ))
        .and(body_json(json!({
            "contentSid": "HXtemplate1", "customerThreadId": "closed-7", "internal": false,
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "messageId": 555002 })))
        .expect(1)
        .mount(&server)
        .await;

    run_worker(&pool, &config).await;

    assert_eq!(
        outcome(&pool, with_template).await,
        ("sent".into(), Some("555002".into()))
    );
    let detail = sent_detail(&pool, with_template).await;
    assert_eq!(detail["sent_as"], "template");
    assert_eq!(detail["fallback_template"], true);

    assert_eq!(outcome(&pool, without).await, ("rejected".into(), None));
    let reason: String = sqlx::query_scalar(
        "SELECT reason FROM tidings.message_events WHERE message_id = $1 AND status = 'rejected'",
    )
    .bind(without)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(reason, "window_closed");
    server.verify().await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn insider_push_end_to_end(pool: PgPool) {
    let server = MockServer::start().await;
    let config = config(&format!(
        "[channels.push]\nkind = \"insider_push\"\nbase_url = \"{}\"\naccess_token_env = \"E2E_INSIDER_TOKEN\"\n",
        server.uri()
    ));
    sync(&pool, &config).await;
    let id = enqueue(
        &pool,
        "push",
        json!({ "applicationIds": ["app-1", "app-2"], "segmentId": SEGMENT }),
        json!({ "content": { "title": "Sale", "message": "Today only" }, "onlyLastEngaged": true }),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/rest/push/sendInstant"))
        .and(header("authorization", "Bearer insider-token-3"))
        .and(body_json(json!({
            "applicationIds": ["app-1", "app-2"],
            "segmentId": SEGMENT,
            "content": { "title": "Sale", "message": "Today only" },
            "useOnlyEngagedTokens": true,
            "trackingId": id,
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "code": 0, "message": "Success", "data": { "trackingId": id },
        })))
        .expect(1)
        .mount(&server)
        .await;

    run_worker(&pool, &config).await;

    assert_eq!(
        outcome(&pool, id).await,
        ("sent".into(), Some(id.to_string()))
    );
    server.verify().await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn instant_app_end_to_end(pool: PgPool) {
    let server = MockServer::start().await;
    let config = config(&format!(
        "[channels.instant]\nkind = \"instant_app\"\nbase_url = \"{}\"\norg_channel_api_id = \"org-chan-1\"\napi_key_env = \"E2E_PROMPT_KEY\"\nopt_out_suffix = \"STOP2END\"\n",
        server.uri()
    ));
    sync(&pool, &config).await;
    let id = enqueue(
        &pool,
        "instant",
        json!({ "phone": "+12125550123" }),
        json!({
            "message": "Let's schedule a time to talk!",
            "instantAppSchemaApiId": "schema-42",
            "instantAppParameters": { "topic": "voting rights" },
        }),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/messages/send_to_customer"))
        .and(header("x-api-key", "prompt-key-4"))
        .and(header("idempotency-key", id.to_string().as_str()))
        .and(body_json(json!({
            "message": "Let's schedule a time to talk! STOP2END",
            "instantAppSchemaApiId": "schema-42",
            "orgChannelApiId": "org-chan-1",
            "customerChannelKey": "2125550123",
            "instantAppParameters": { "topic": "voting rights" },
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": "ia-1001" })))
        .expect(1)
        .mount(&server)
        .await;

    run_worker(&pool, &config).await;

    assert_eq!(
        outcome(&pool, id).await,
        ("sent".into(), Some("ia-1001".into()))
    );
    server.verify().await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn webhook_end_to_end(pool: PgPool) {
    let server = MockServer::start().await;
    let config = config(&format!(
        "[channels.hook]\nkind = \"webhook\"\nbase_url = \"{}/hook\"\nsecret_env = \"E2E_HOOK_SECRET\"\n",
        server.uri()
    ));
    sync(&pool, &config).await;
    let recipient = json!({ "user": 7 });
    let content = json!({ "text": "hi", "nested": { "n": [1, 2] } });
    let id = enqueue(&pool, "hook", recipient.clone(), content.clone()).await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .and(header("webhook-id", id.to_string().as_str()))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "id": id,
            "channel": "hook",
            "recipient": recipient,
            "content": content,
            "use_case": "transactional",
            "tags": ["e2e"],
            "attempt": 1,
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": "gw-9" })))
        .expect(1)
        .mount(&server)
        .await;

    run_worker(&pool, &config).await;

    assert_eq!(
        outcome(&pool, id).await,
        ("sent".into(), Some("gw-9".into()))
    );
    // The signature covers exactly the bytes received.
    let request = only_request(server.received_requests().await.unwrap(), "/hook");
    let header_of = |name: &str| request.headers.get(name).unwrap().to_str().unwrap();
    let timestamp: i64 = header_of("webhook-timestamp").parse().unwrap();
    assert_eq!(
        header_of("webhook-signature"),
        provider::webhook::sign(b"hook-secret-5", &id.to_string(), timestamp, &request.body)
    );
    server.verify().await;
}
