//! The provider contract: every adapter against wiremock servers that check the exact request each seed defines,
//! every answer classified through the shared table, the Instaply template fallback, the webhook signature,
//! receipts, credentials never leaking, and every kind against the sandbox server. No database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tidings::app::sandbox_server::{Sandbox, SandboxOptions};
use tidings::config::{ChannelConfig, Config};
use tidings::message::Message;
use tidings::provider::{self, Provider, SendError};
use tidings::receipts::{self, Receipt, ReceiptBody, ReceiptError, ReceiptStatus};
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

// ---------------------------------------------------------------------------------------------------------------
// Fixtures

const SECRET: &str = "s3cr3t-Zq9xV7-never-print-me";
const THREAD: &str = "9999";
const SEGMENT: &str = "0b7c2f5e-8a7d-4f8e-9a38-2f6d1c1e5a10";
const TABLE: &str = "9e1d4c2b-1f0a-4b6c-8d7e-3a2b1c0d9e8f";
const BIRD_TEMPLATE_PROJECT: &str = "ce6a2fd6-b2fa-4f5a-a2cd-f3bd15883318";

/// The attempt's `now`, whole seconds so Retry-After arithmetic compares exactly.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()
}

fn message(channel: &str, recipient: Value, content: Value) -> Message {
    Message::example(
        channel,
        "transactional",
        recipient,
        content,
        now(),
        chrono::Duration::seconds(3600),
    )
}

/// A valid message of each kind (the shapes `tidings.check_message` admits).
fn sample(kind: &str) -> Message {
    match kind {
        "bird_sms" | "sandbox" => message(
            kind,
            json!({ "phone": "+31612345678" }),
            json!({ "body": { "type": "text", "text": { "text": "Your parcel arrives today" } } }),
        ),
        "instaply_whatsapp" => message(
            kind,
            json!({ "customerThreadId": THREAD }),
            json!({ "text": "Hello, I am a bot.", "contentSid": "HXdf71e8696fbd234e0115c69a542cb1" }),
        ),
        "insider_push" => message(
            kind,
            json!({ "applicationIds": ["app-1"], "segmentId": SEGMENT }),
            json!({ "content": { "title": "Sale", "message": "Today only" } }),
        ),
        "instant_app" => message(
            kind,
            json!({ "phone": "+12125550123" }),
            json!({
                "message": "Let's schedule a time to talk about voting rights!",
                "instantAppSchemaApiId": "schema-42",
                "instantAppParameters": { "topic": "voting rights" },
            }),
        ),
        "webhook" => message(kind, json!({ "user": 7 }), json!({ "text": "hi" })),
        other => panic!("no sample for {other}"),
    }
}

/// The channel settings of each kind, with every credential in an env var named `{KIND}_…`.
fn settings(kind: &str) -> &'static str {
    match kind {
        "bird_sms" => "workspace_id = \"ws1\"\nchannel_id = \"ch1\"\naccess_key_env = \"BIRD_KEY\"",
        "instaply_whatsapp" => "token_env = \"INSTAPLY_TOKEN\"",
        "insider_push" => "access_token_env = \"INSIDER_TOKEN\"",
        "instant_app" => {
            "org_channel_api_id = \"org-chan-1\"\napi_key_env = \"PROMPT_KEY\"\nopt_out_suffix = \"STOP2END\""
        }
        "webhook" => "secret_env = \"HOOK_SECRET\"",
        "sandbox" => "",
        other => panic!("no settings for {other}"),
    }
}

/// Where each kind sends (relative to the base URL).
fn send_path(kind: &str) -> &'static str {
    match kind {
        "bird_sms" => "/workspaces/ws1/channels/ch1/messages",
        "instaply_whatsapp" => "/api/send-message-to-customer-thread",
        "insider_push" => "/rest/push/sendInstant",
        "instant_app" => "/messages/send_to_customer",
        "webhook" => "/hook",
        other => panic!("no path for {other}"),
    }
}

/// The kinds with a provider API (sandbox is covered against the sandbox server).
const API_KINDS: &[&str] = &[
    "bird_sms",
    "instaply_whatsapp",
    "insider_push",
    "instant_app",
    "webhook",
];

fn channel(kind: &str, base_url: &str, extra: &str, timeout: &str) -> ChannelConfig {
    // The webhook posts to base_url itself.
    let base = if kind == "webhook" {
        format!("{base_url}/hook")
    } else {
        base_url.to_owned()
    };
    let text = format!(
        "[channels.c]\nkind = \"{kind}\"\nbase_url = \"{base}\"\ntimeout = \"{timeout}\"\n{}\n{extra}\n",
        settings(kind)
    );
    Config::parse(&text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .channels
        .remove("c")
        .unwrap()
}

/// Every credential variable of every kind holds SECRET (or a value derived from it).
fn env(var: &str) -> Option<String> {
    match var {
        "HOOK_SECRET" => Some(format!("whsec_{}", base64_of(SECRET))),
        "BIRD_KEY" | "INSTAPLY_TOKEN" | "INSIDER_TOKEN" | "PROMPT_KEY" | "INSIDER_USER"
        | "INSIDER_PASSWORD" => Some(format!("{var}-{SECRET}")),
        _ => None,
    }
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn adapter(kind: &str, base_url: &str, extra: &str) -> Arc<dyn Provider> {
    adapter_with_timeout(kind, base_url, extra, "2s")
}

fn adapter_with_timeout(
    kind: &str,
    base_url: &str,
    extra: &str,
    timeout: &str,
) -> Arc<dyn Provider> {
    let client = provider::http::client().unwrap();
    provider::build_with("c", &channel(kind, base_url, extra, timeout), &client, &env).unwrap()
}

/// Mounts what a kind needs besides its send endpoint (Instaply's thread lookup: window open).
async fn mount_aux(kind: &str, server: &MockServer) {
    if kind == "instaply_whatsapp" {
        Mock::given(method("GET"))
            .and(path("/api/get-customer-thread-details"))
            .respond_with(ResponseTemplate::new(200).set_body_json(thread_details(true)))
            .mount(server)
            .await;
    }
}

fn thread_details(open: bool) -> Value {
    json!({ "customerChannel": "WHATSAPP", "status": "replied", "isMessagingWindowOpen": open })
}

/// A successful answer of each kind.
fn ok_body(kind: &str) -> Value {
    match kind {
        "bird_sms" => json!({ "id": "123e4567-e89b-12d3-a456-426614174000", "status": "accepted" }),
        "insider_push" => {
            json!({ "code": 0, "message": "Success", "data": { "trackingId": "t-1" } })
        }
        "instaply_whatsapp" => json!({ "messageId": 555001 }),
        _ => json!({ "id": "p-1" }),
    }
}

async fn requests_to(server: &MockServer, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == p)
        .collect()
}

fn header_of<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// Bird (seed 002)

#[tokio::test]
async fn bird_sends_the_seed_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/workspaces/ws1/channels/ch1/messages"))
        .and(header(
            "Authorization",
            format!("AccessKey BIRD_KEY-{SECRET}").as_str(),
        ))
        .and(header("Content-Type", "application/json"))
        .respond_with(ResponseTemplate::new(202).set_body_json(ok_body("bird_sms")))
        .expect(2)
        .mount(&server)
        .await;
    let bird = adapter("bird_sms", &server.uri(), "");
    let now = now();

    let mut m = sample("bird_sms");
    m.expires_at = now + chrono::Duration::seconds(100);
    m.tags = vec!["order".into(), "shipping".into()];
    m.ignore_quiet_hours = true;
    m.cap_frequency = true;
    m.use_case = "marketing".into();
    let accepted = bird.send(&m, now).await.unwrap();
    assert_eq!(
        accepted.provider_message_id.as_deref(),
        Some("123e4567-e89b-12d3-a456-426614174000")
    );

    let mut t = sample("bird_sms");
    t.content = json!({ "template": {
        "projectId": BIRD_TEMPLATE_PROJECT, "version": "latest", "locale": "en",
        "parameters": [ { "type": "string", "key": "name", "value": "Robert" } ] } })
    .into();
    bird.send(&t, now).await.unwrap();

    let sent = requests_to(&server, send_path("bird_sms")).await;
    let first: Value = sent[0].body_json().unwrap();
    assert_eq!(
        first["receiver"]["contacts"][0]["identifierValue"],
        "+31612345678"
    );
    assert_eq!(first["body"], m.content["body"]);
    assert!(first.get("template").is_none());
    assert_eq!(first["reference"], m.id.to_string());
    assert_eq!(first["tags"], json!(["order", "shipping"]));
    assert_eq!(
        first["validity"], 100,
        "the remaining validity, not the original"
    );
    assert_eq!(first["ignoreQuietHours"], true);
    assert_eq!(first["capFrequency"], true);
    assert_eq!(first["meta"]["extraInformation"]["useCase"], "marketing");

    let second: Value = sent[1].body_json().unwrap();
    assert_eq!(second["template"], t.content["template"]);
    assert_eq!(second["reference"], t.id.to_string());
    assert_eq!(second["validity"], 3600);
    for absent in ["body", "tags", "ignoreQuietHours", "capFrequency", "meta"] {
        assert!(
            second.get(absent).is_none(),
            "{absent} sent without being set"
        );
    }
}

#[tokio::test]
async fn bird_rejected_status_is_permanent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({
            "id": "x", "status": "rejected", "reason": "receiver is blocked"
        })))
        .mount(&server)
        .await;
    let err = adapter("bird_sms", &server.uri(), "")
        .send(&sample("bird_sms"), now())
        .await
        .unwrap_err();
    match err {
        SendError::Permanent { reason, detail } => {
            assert_eq!(reason, "provider_rejected");
            assert_eq!(detail["provider_reason"], "receiver is blocked");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bird_invalid_content_is_permanent_not_a_panic() {
    let server = MockServer::start().await;
    let bird = adapter("bird_sms", &server.uri(), "");
    let mut m = sample("bird_sms");
    m.content = json!({ "body": {}, "template": {} }).into();
    assert!(
        matches!(bird.send(&m, now()).await, Err(SendError::Permanent { reason, .. }) if reason == "invalid_content")
    );
    m.recipient = json!({}).into();
    assert!(
        matches!(bird.send(&m, now()).await, Err(SendError::Permanent { reason, .. }) if reason == "invalid_content")
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------------------------
// The shared classification, for every adapter

#[derive(Debug)]
enum Expect {
    Ok,
    Permanent(&'static str),
    Transient(&'static str),
    RateLimited(i64),
}

#[tokio::test]
async fn every_answer_is_classified_for_every_kind() {
    for &kind in API_KINDS {
        let now = now();
        let date = httpdate::fmt_http_date((now + chrono::Duration::seconds(30)).into());
        let cases: Vec<(u16, Option<String>, Expect)> = vec![
            (200, None, Expect::Ok),
            (400, None, Expect::Permanent("http_400")),
            (401, None, Expect::Permanent("http_401")),
            (403, None, Expect::Permanent("http_403")),
            (404, None, Expect::Permanent("http_404")),
            (408, None, Expect::Transient("http_408")),
            (429, Some("7".into()), Expect::RateLimited(7)),
            (429, Some(date), Expect::RateLimited(30)),
            (500, None, Expect::Transient("http_500")),
            (503, None, Expect::Transient("http_503")),
        ];
        for (status, retry_after, expect) in cases {
            let server = MockServer::start().await;
            mount_aux(kind, &server).await;
            let mut answer = ResponseTemplate::new(status).set_body_json(if status == 200 {
                ok_body(kind)
            } else {
                json!({ "error": "nope" })
            });
            if let Some(r) = &retry_after {
                answer = answer.insert_header("Retry-After", r.as_str());
            }
            Mock::given(method("POST"))
                .and(path(send_path(kind)))
                .respond_with(answer)
                .expect(1..)
                .mount(&server)
                .await;
            let result = adapter(kind, &server.uri(), "")
                .send(&sample(kind), now)
                .await;
            let answered_by = chrono::Utc::now();
            let ok = match (&expect, &result) {
                (Expect::Ok, Ok(_)) => true,
                (Expect::Permanent(r), Err(SendError::Permanent { reason, detail })) => {
                    reason == r && detail["http_status"] == status
                }
                (Expect::Transient(r), Err(SendError::Transient { reason, .. })) => reason == r,
                // Retry-After counts from the answer's arrival (RFC 9110), between the send and its return.
                (Expect::RateLimited(secs), Err(SendError::RateLimited { retry_after, .. })) => {
                    let wait = chrono::Duration::seconds(*secs);
                    retry_after.is_some_and(|at| at >= now + wait && at <= answered_by + wait)
                }
                _ => false,
            };
            assert!(
                ok,
                "{kind} {status} {retry_after:?}: expected {expect:?}, got {result:?}"
            );
        }

        // A response slower than the channel timeout.
        let server = MockServer::start().await;
        mount_aux(kind, &server).await;
        Mock::given(method("POST"))
            .and(path(send_path(kind)))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
            .mount(&server)
            .await;
        let result = adapter_with_timeout(kind, &server.uri(), "", "300ms")
            .send(&sample(kind), now)
            .await;
        assert!(
            matches!(&result, Err(SendError::Transient { reason, .. }) if reason == "timeout"),
            "{kind} timeout: {result:?}"
        );

        // Nobody listening.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let result = adapter(kind, &url, "").send(&sample(kind), now).await;
        assert!(
            matches!(&result, Err(SendError::Transient { reason, .. }) if reason == "connect"),
            "{kind} refused: {result:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Instaply (seed 001): window check, template fallback, thread cache

async fn instaply_server(open: bool) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/get-customer-thread-details"))
        .and(query_param("customerThreadId", THREAD))
        .and(header("token", format!("INSTAPLY_TOKEN-{SECRET}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(thread_details(open)))
        .mount(&server)
        .await;
    server
}

async fn mount_instaply_send(server: &MockServer, status: u16) {
    Mock::given(method("POST"))
        .and(path("/api/send-message-to-customer-thread"))
        .and(header("token", format!("INSTAPLY_TOKEN-{SECRET}").as_str()))
        .respond_with(ResponseTemplate::new(status).set_body_json(json!({ "messageId": 555001 })))
        .mount(server)
        .await;
}

#[tokio::test]
async fn instaply_open_window_sends_free_text() {
    let server = instaply_server(true).await;
    mount_instaply_send(&server, 200).await;
    let m = sample("instaply_whatsapp");
    let accepted = adapter("instaply_whatsapp", &server.uri(), "")
        .send(&m, now())
        .await
        .unwrap();
    assert_eq!(accepted.provider_message_id.as_deref(), Some("555001"));
    assert_eq!(accepted.detail["fallback_template"], false);
    let sent = requests_to(&server, "/api/send-message-to-customer-thread").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].body_json::<Value>().unwrap(),
        json!({ "text": "Hello, I am a bot.", "customerThreadId": THREAD, "internal": false })
    );
    assert_eq!(header_of(&sent[0], "idempotency-key"), m.id.to_string());
}

#[tokio::test]
async fn instaply_closed_window_sends_the_template() {
    let server = instaply_server(false).await;
    mount_instaply_send(&server, 200).await;
    let accepted = adapter("instaply_whatsapp", &server.uri(), "")
        .send(&sample("instaply_whatsapp"), now())
        .await
        .unwrap();
    assert_eq!(accepted.detail["fallback_template"], true);
    assert_eq!(accepted.detail["sent_as"], "template");
    let sent = requests_to(&server, "/api/send-message-to-customer-thread").await;
    assert_eq!(
        sent[0].body_json::<Value>().unwrap(),
        json!({ "contentSid": "HXdf71e8696fbd234e0115c69a542cb1", "customerThreadId": THREAD, "internal": false })
    );
}

#[tokio::test]
async fn instaply_closed_window_without_template_is_rejected_unsent() {
    let server = instaply_server(false).await;
    mount_instaply_send(&server, 200).await;
    let mut m = sample("instaply_whatsapp");
    m.content = json!({ "text": "Hello" }).into();
    let err = adapter("instaply_whatsapp", &server.uri(), "")
        .send(&m, now())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SendError::Rejected { reason, .. } if reason == "window_closed"),
        "{err:?}"
    );
    assert!(
        requests_to(&server, "/api/send-message-to-customer-thread")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn instaply_template_only_needs_no_lookup() {
    let server = MockServer::start().await;
    mount_instaply_send(&server, 200).await;
    let mut m = sample("instaply_whatsapp");
    m.content = json!({ "contentSid": "HX1" }).into();
    let accepted = adapter("instaply_whatsapp", &server.uri(), "")
        .send(&m, now())
        .await
        .unwrap();
    assert_eq!(accepted.detail["sent_as"], "template");
    assert!(
        requests_to(&server, "/api/get-customer-thread-details")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn instaply_window_closing_between_check_and_send_falls_back_at_once() {
    let server = MockServer::start().await;
    // First lookup: open. Any later one: closed.
    Mock::given(method("GET"))
        .and(path("/api/get-customer-thread-details"))
        .respond_with(ResponseTemplate::new(200).set_body_json(thread_details(true)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/get-customer-thread-details"))
        .respond_with(ResponseTemplate::new(200).set_body_json(thread_details(false)))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/send-message-to-customer-thread"))
        .and(body_partial_json(json!({ "text": "Hello, I am a bot." })))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({ "error": "window closed" })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/send-message-to-customer-thread"))
        .and(body_partial_json(
            json!({ "contentSid": "HXdf71e8696fbd234e0115c69a542cb1" }),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "messageId": 2 })))
        .expect(1)
        .mount(&server)
        .await;
    let accepted = adapter("instaply_whatsapp", &server.uri(), "")
        .send(&sample("instaply_whatsapp"), now())
        .await
        .unwrap();
    assert_eq!(accepted.detail["fallback_template"], true);
    assert_eq!(accepted.provider_message_id.as_deref(), Some("2"));
    assert_eq!(
        requests_to(&server, "/api/get-customer-thread-details")
            .await
            .len(),
        2
    );

    // Without a template the same refusal ends rejected, carrying the refusal.
    let mut m = sample("instaply_whatsapp");
    m.content = json!({ "text": "Hello, I am a bot." }).into();
    m.recipient = json!({ "customerThreadId": "other" }).into();
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/api/get-customer-thread-details"))
        .respond_with(ResponseTemplate::new(200).set_body_json(thread_details(true)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/get-customer-thread-details"))
        .respond_with(ResponseTemplate::new(200).set_body_json(thread_details(false)))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({ "error": "window closed" })))
        .mount(&server)
        .await;
    let err = adapter("instaply_whatsapp", &server.uri(), "")
        .send(&m, now())
        .await
        .unwrap_err();
    match err {
        SendError::Rejected { reason, detail } => {
            assert_eq!(reason, "window_closed");
            assert_eq!(detail["refused_text"]["http_status"], 400);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn instaply_refusal_with_the_window_still_open_is_the_refusal() {
    let server = instaply_server(true).await;
    mount_instaply_send(&server, 422).await;
    let err = adapter("instaply_whatsapp", &server.uri(), "")
        .send(&sample("instaply_whatsapp"), now())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SendError::Permanent { reason, .. } if reason == "http_422"),
        "{err:?}"
    );
    assert_eq!(
        requests_to(&server, "/api/send-message-to-customer-thread")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn instaply_thread_details_are_cached() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/get-customer-thread-details"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(thread_details(true))
                .set_delay(Duration::from_millis(50)),
        )
        .expect(1)
        .mount(&server)
        .await;
    mount_instaply_send(&server, 200).await;
    let instaply = adapter("instaply_whatsapp", &server.uri(), "");
    let (a, b) = (sample("instaply_whatsapp"), sample("instaply_whatsapp"));
    instaply.send(&a, now()).await.unwrap();
    instaply.send(&b, now()).await.unwrap();
    // A concurrent burst shares the cached answer too.
    let burst: Vec<Message> = (0..5).map(|_| sample("instaply_whatsapp")).collect();
    let results = futures::future::join_all(burst.iter().map(|m| instaply.send(m, now()))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        requests_to(&server, "/api/get-customer-thread-details")
            .await
            .len(),
        1
    );
    assert_eq!(
        requests_to(&server, "/api/send-message-to-customer-thread")
            .await
            .len(),
        7
    );

    // A cold burst: concurrent first sends to a new thread share one lookup.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/get-customer-thread-details"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(thread_details(true))
                .set_delay(Duration::from_millis(100)),
        )
        .expect(1)
        .mount(&server)
        .await;
    mount_instaply_send(&server, 200).await;
    let instaply = adapter("instaply_whatsapp", &server.uri(), "");
    let results = futures::future::join_all(burst.iter().map(|m| instaply.send(m, now()))).await;
    assert!(results.iter().all(Result::is_ok));
}

#[tokio::test]
async fn instaply_updates_the_thread_status_after_sending() {
    let server = instaply_server(true).await;
    mount_instaply_send(&server, 200).await;
    Mock::given(method("POST"))
        .and(path("/api/update-thread-status"))
        .and(header("token", format!("INSTAPLY_TOKEN-{SECRET}").as_str()))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let mut m = sample("instaply_whatsapp");
    m.content["updateThreadStatus"] = json!("resolved");
    let accepted = adapter("instaply_whatsapp", &server.uri(), "")
        .send(&m, now())
        .await
        .unwrap();
    assert_eq!(accepted.detail["thread_status"]["updated"], true);
    let update = requests_to(&server, "/api/update-thread-status").await;
    assert_eq!(
        update[0].body_json::<Value>().unwrap(),
        json!({ "customerThreadId": THREAD, "status": "resolved" })
    );

    // A failed update does not undo (or retry) the send.
    let server = instaply_server(true).await;
    mount_instaply_send(&server, 200).await;
    Mock::given(method("POST"))
        .and(path("/api/update-thread-status"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let accepted = adapter("instaply_whatsapp", &server.uri(), "")
        .send(&m, now())
        .await
        .unwrap();
    assert_eq!(accepted.detail["thread_status"]["updated"], false);
    assert_eq!(accepted.detail["thread_status"]["reason"], "http_500");
}

// ---------------------------------------------------------------------------------------------------------------
// Insider SendInstantPush (seed 004)

#[tokio::test]
async fn insider_sends_the_instant_push_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/push/sendInstant"))
        .and(header(
            "Authorization",
            format!("Bearer INSIDER_TOKEN-{SECRET}").as_str(),
        ))
        .and(header("Content-Type", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("insider_push")))
        .expect(2)
        .mount(&server)
        .await;
    let insider = adapter("insider_push", &server.uri(), "");
    let mut m = sample("insider_push");
    m.content["onlyLastEngaged"] = json!(true);
    let accepted = insider.send(&m, now()).await.unwrap();
    assert_eq!(accepted.provider_message_id.as_deref(), Some("t-1"));

    let mut multi = sample("insider_push");
    multi.recipient = json!({ "applicationIds": ["a", "b"], "tableId": TABLE }).into();
    multi.content =
        json!({ "multiLangContent": { "en": { "title": "Hi" }, "fr": { "title": "Salut" } } })
            .into();
    insider.send(&multi, now()).await.unwrap();

    let sent = requests_to(&server, "/rest/push/sendInstant").await;
    let first: Value = sent[0].body_json().unwrap();
    assert_eq!(
        first,
        json!({
            "applicationIds": ["app-1"],
            "content": { "title": "Sale", "message": "Today only" },
            "segmentId": SEGMENT,
            "trackingId": m.id.to_string(),
            "useOnlyEngagedTokens": true,
        })
    );
    let second: Value = sent[1].body_json().unwrap();
    assert_eq!(
        second,
        json!({
            "applicationIds": ["a", "b"],
            "multiLangContent": multi.content["multiLangContent"],
            "tableId": TABLE,
            "trackingId": multi.id.to_string(),
        })
    );
}

#[tokio::test]
async fn insider_seed_statuses_and_provider_codes() {
    for (status, reason, meaning) in [
        (401, "http_401", "not authenticated: re-login"),
        (
            403,
            "http_403",
            "the API user is not authorized to use this API",
        ),
        (404, "http_404", "the template id was not found"),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        match adapter("insider_push", &server.uri(), "")
            .send(&sample("insider_push"), now())
            .await
        {
            Err(SendError::Permanent { reason: r, detail }) => {
                assert_eq!(r, reason);
                assert_eq!(detail["meaning"], meaning);
            }
            other => panic!("{status}: {other:?}"),
        }
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "code": 17, "message": "no tokens" })),
        )
        .mount(&server)
        .await;
    let err = adapter("insider_push", &server.uri(), "")
        .send(&sample("insider_push"), now())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SendError::Permanent { reason, .. } if reason == "provider_rejected"),
        "{err:?}"
    );
}

#[tokio::test]
async fn insider_logs_in_once_and_again_after_a_401() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/login"))
        .and(body_partial_json(json!({
            "userkey": format!("INSIDER_USER-{SECRET}"),
            "password": format!("INSIDER_PASSWORD-{SECRET}"),
        })))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "access_token": "tok-1", "expires_in": 3600 })),
        )
        .expect(2)
        .mount(&server)
        .await;
    // Two sends work with the first token; the third gets a 401 once, then works after a fresh login.
    Mock::given(method("POST"))
        .and(path("/rest/push/sendInstant"))
        .and(header("Authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("insider_push")))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rest/push/sendInstant"))
        .respond_with(ResponseTemplate::new(401))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rest/push/sendInstant"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("insider_push")))
        .mount(&server)
        .await;
    let login = "userkey_env = \"INSIDER_USER\"\npassword_env = \"INSIDER_PASSWORD\"";
    let client = provider::http::client().unwrap();
    let mut config = channel("insider_push", &server.uri(), "", "2s");
    config.settings.remove("access_token_env");
    for line in login.lines() {
        let (k, v) = line.split_once(" = ").unwrap();
        config
            .settings
            .insert(k.into(), toml::Value::String(v.trim_matches('"').into()));
    }
    let insider = provider::build_with("c", &config, &client, &env).unwrap();
    for _ in 0..3 {
        insider.send(&sample("insider_push"), now()).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Instant app (seed 000)

#[tokio::test]
async fn instant_app_sends_the_seed_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/messages/send_to_customer"))
        .and(header("X-API-Key", format!("PROMPT_KEY-{SECRET}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": "ia-1" })))
        .expect(2)
        .mount(&server)
        .await;
    let app = adapter("instant_app", &server.uri(), "");
    let m = sample("instant_app");
    assert_eq!(
        app.send(&m, now())
            .await
            .unwrap()
            .provider_message_id
            .as_deref(),
        Some("ia-1")
    );
    let mut already = sample("instant_app");
    already.recipient = json!({ "phone": "2125550123" }).into();
    already.content["message"] = json!("Reply STOP2END to stop");
    already
        .content
        .as_object_mut()
        .unwrap()
        .remove("instantAppParameters");
    app.send(&already, now()).await.unwrap();

    let sent = requests_to(&server, "/messages/send_to_customer").await;
    assert_eq!(
        sent[0].body_json::<Value>().unwrap(),
        json!({
            "message": "Let's schedule a time to talk about voting rights! STOP2END",
            "instantAppSchemaApiId": "schema-42",
            "orgChannelApiId": "org-chan-1",
            "customerChannelKey": "2125550123",
            "instantAppParameters": { "topic": "voting rights" },
        })
    );
    assert_eq!(header_of(&sent[0], "idempotency-key"), m.id.to_string());
    let second: Value = sent[1].body_json().unwrap();
    assert_eq!(
        second["message"], "Reply STOP2END to stop",
        "the suffix is not doubled"
    );
    assert_eq!(second["customerChannelKey"], "2125550123");
    assert_eq!(second["instantAppParameters"], json!({}));

    let mut bad = sample("instant_app");
    bad.recipient = json!({ "phone": "+442071234567" }).into();
    assert!(
        matches!(app.send(&bad, now()).await, Err(SendError::Permanent { reason, .. }) if reason == "invalid_content")
    );
}

#[tokio::test]
async fn instant_app_header_name_is_a_setting() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header(
            "Authorization",
            format!("Bearer PROMPT_KEY-{SECRET}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    adapter(
        "instant_app",
        &server.uri(),
        "api_key_header = \"Authorization\"\napi_key_prefix = \"Bearer \"",
    )
    .send(&sample("instant_app"), now())
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------------------------------
// Webhook

#[tokio::test]
async fn webhook_is_signed_the_standard_webhooks_way() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": "gw-1" })))
        .expect(1)
        .mount(&server)
        .await;
    let now = now();
    let mut m = sample("webhook");
    m.tags = vec!["a".into()];
    m.attempts = 2;
    let accepted = adapter("webhook", &server.uri(), "")
        .send(&m, now)
        .await
        .unwrap();
    assert_eq!(accepted.provider_message_id.as_deref(), Some("gw-1"));

    let request = &requests_to(&server, "/hook").await[0];
    assert_eq!(header_of(request, "webhook-id"), m.id.to_string());
    assert_eq!(
        header_of(request, "webhook-timestamp"),
        now.timestamp().to_string()
    );
    assert_eq!(header_of(request, "content-type"), "application/json");
    // Verify as a receiver would: the secret from the same env var, HMAC over id.timestamp.body.
    let key = provider::webhook::signing_key(&env("HOOK_SECRET").unwrap()).unwrap();
    assert_eq!(key, SECRET.as_bytes());
    let expected = provider::webhook::sign(&key, &m.id.to_string(), now.timestamp(), &request.body);
    assert_eq!(header_of(request, "webhook-signature"), expected);
    assert_eq!(
        request.body_json::<Value>().unwrap(),
        json!({
            "id": m.id.to_string(), "channel": "webhook", "recipient": { "user": 7 },
            "content": { "text": "hi" }, "use_case": "transactional", "tags": ["a"], "attempt": 3,
        })
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Credentials

/// Answers with everything it received: headers and body, as a careless provider's error page would.
struct Echo(u16);

impl Respond for Echo {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let headers: HashMap<String, String> = request
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        ResponseTemplate::new(self.0)
            .insert_header("Retry-After", "1")
            .set_body_json(json!({
                "headers": headers,
                "body": String::from_utf8_lossy(&request.body),
                "error": format!("invalid credential {}", headers.get("authorization").cloned().unwrap_or_default()),
            }))
    }
}

#[tokio::test]
async fn credentials_appear_in_no_error() {
    let mut login_settings =
        "userkey_env = \"INSIDER_USER\"\npassword_env = \"INSIDER_PASSWORD\"".to_owned();
    login_settings.push('\n');
    for &kind in API_KINDS.iter().chain(["insider_push_login"].iter()) {
        for status in [400, 401, 403, 404, 429, 500, 503] {
            let server = MockServer::start().await;
            let real_kind = if kind == "insider_push_login" {
                "insider_push"
            } else {
                kind
            };
            // Instaply: the lookup echoes too, so the error may come from it or from the send.
            Mock::given(wiremock::matchers::any())
                .respond_with(Echo(status))
                .mount(&server)
                .await;
            let mut config = channel(real_kind, &server.uri(), "", "2s");
            if kind == "insider_push_login" {
                config.settings.remove("access_token_env");
                for line in login_settings.lines() {
                    let (k, v) = line.split_once(" = ").unwrap();
                    config
                        .settings
                        .insert(k.into(), toml::Value::String(v.trim_matches('"').into()));
                }
            }
            let client = provider::http::client().unwrap();
            let adapter = provider::build_with("c", &config, &client, &env).unwrap();
            let err = adapter.send(&sample(real_kind), now()).await.unwrap_err();
            let text = format!("{err:?}");
            assert!(!text.contains(SECRET), "{kind} {status} leaks: {text}");
            assert!(
                !text.contains(&base64_of(SECRET)),
                "{kind} {status} leaks: {text}"
            );
        }
    }
}

#[test]
fn a_missing_credential_is_a_config_error_naming_it() {
    let client = provider::http::client().unwrap();
    for &kind in API_KINDS {
        let config = channel(kind, "http://127.0.0.1:9", "", "2s");
        let err = provider::build_with("c", &config, &client, &|_| None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("environment variable"), "{kind}: {err}");
        assert!(err.starts_with("config: channels.c."), "{kind}: {err}");
        // The process environment is what `build` reads; this variable is surely unset.
        let mut unset = config.clone();
        let env_keys: Vec<String> = unset
            .settings
            .keys()
            .filter(|k| k.ends_with("_env"))
            .cloned()
            .collect();
        for key in env_keys {
            unset.settings.insert(
                key,
                toml::Value::String("TIDINGS_TEST_SURELY_UNSET_VAR".into()),
            );
        }
        let err = provider::build_with("c", &unset, &client, &|var| std::env::var(var).ok())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("TIDINGS_TEST_SURELY_UNSET_VAR"),
            "{kind}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Receipts

#[test]
fn receipts_parse() {
    let delivered = br#"{"id":"p-1","reference":"r-1","status":"delivered","lastStatusAt":"2024-11-21T09:14:49.469Z"}"#;
    assert_eq!(
        receipts::parse(delivered).unwrap(),
        ReceiptBody::Receipt(Receipt {
            provider_message_id: Some("p-1".into()),
            reference: Some("r-1".into()),
            status: ReceiptStatus::Delivered,
            reason: None,
            at: Some("2024-11-21T09:14:49.469Z".parse().unwrap()),
        })
    );
    let failed = br#"{"service":"channels","event":"sms.outbound","payload":{"id":"p-2","status":"delivery_failed","failure":{"description":"Unsupported media type"}}}"#;
    match receipts::parse(failed).unwrap() {
        ReceiptBody::Receipt(r) => {
            assert_eq!(r.status, ReceiptStatus::DeliveryFailed);
            assert_eq!(r.reason.as_deref(), Some("Unsupported media type"));
            assert_eq!(r.reference, None);
        }
        other => panic!("{other:?}"),
    }
    for status in ["sent", "accepted", "processing", "scheduled"] {
        let body = format!(r#"{{"id":"p","status":"{status}"}}"#);
        assert_eq!(
            receipts::parse(body.as_bytes()).unwrap(),
            ReceiptBody::Ignored {
                status: status.into()
            }
        );
    }
    let field = |body: &[u8]| match receipts::parse(body).unwrap_err() {
        ReceiptError::InvalidField { field, .. } => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(br#"{"id":"p"}"#), "status");
    assert_eq!(
        field(br#"{"payload":{"id":"p","status":7}}"#),
        "payload.status"
    );
    assert_eq!(field(br#"{"status":"delivered"}"#), "id");
    assert_eq!(
        field(br#"{"id":"p","status":"delivered","lastStatusAt":"yesterday"}"#),
        "lastStatusAt"
    );
    assert!(matches!(
        receipts::parse(b"not json"),
        Err(ReceiptError::NotJson(_))
    ));
    assert!(matches!(
        receipts::parse(b"[1]"),
        Err(ReceiptError::NotJson(_))
    ));
}

#[test]
fn receipts_verify() {
    let secret = b"receipt-secret";
    let now = now();
    let ts = now.timestamp().to_string();
    let body = br#"{"id":"p-1","status":"delivered"}"#;
    let signature = receipts::sign(secret, &ts, body);
    assert_eq!(receipts::verify(secret, &ts, &signature, body, now), Ok(()));
    // Base64 of the same MAC, and a rotation list with an old signature first.
    let hex = signature.trim_start_matches("sha256=");
    let raw: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    assert_eq!(receipts::verify(secret, &ts, &b64, body, now), Ok(()));
    let rotated = format!("{} {signature}", receipts::sign(b"old", &ts, body));
    assert_eq!(receipts::verify(secret, &ts, &rotated, body, now), Ok(()));

    assert_eq!(
        receipts::verify(
            secret,
            &ts,
            &signature,
            br#"{"id":"p-1","status":"delivery_failed"}"#,
            now
        ),
        Err(ReceiptError::BadSignature)
    );
    assert_eq!(
        receipts::verify(b"other", &ts, &signature, body, now),
        Err(ReceiptError::BadSignature)
    );
    let old = (now - chrono::Duration::seconds(301))
        .timestamp()
        .to_string();
    assert_eq!(
        receipts::verify(secret, &old, &receipts::sign(secret, &old, body), body, now),
        Err(ReceiptError::Stale)
    );
    let ahead = (now + chrono::Duration::seconds(61))
        .timestamp()
        .to_string();
    assert_eq!(
        receipts::verify(
            secret,
            &ahead,
            &receipts::sign(secret, &ahead, body),
            body,
            now
        ),
        Err(ReceiptError::Stale)
    );
    let edge = (now - chrono::Duration::seconds(300))
        .timestamp()
        .to_string();
    assert_eq!(
        receipts::verify(
            secret,
            &edge,
            &receipts::sign(secret, &edge, body),
            body,
            now
        ),
        Ok(())
    );
    assert_eq!(
        receipts::verify(secret, "soon", &signature, body, now),
        Err(ReceiptError::BadTimestamp)
    );
    assert_eq!(
        receipts::verify(secret, &ts, "zz", body, now),
        Err(ReceiptError::MalformedSignature)
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Every kind against the sandbox server

#[tokio::test]
async fn every_kind_against_the_sandbox() {
    let sandbox = Sandbox::start(([127, 0, 0, 1], 0).into(), SandboxOptions::default())
        .await
        .unwrap();
    let base = sandbox.base_url();
    let mut sent = Vec::new();
    for &kind in API_KINDS.iter().chain(["sandbox"].iter()) {
        let client = provider::http::client().unwrap();
        let mut config = channel(kind, &base, "", "2s");
        if kind == "webhook" {
            config.base_url = Some(format!("{base}/webhook"));
        }
        let adapter = provider::build_with("c", &config, &client, &env).unwrap();
        let m = sample(kind);
        let accepted = adapter
            .send(&m, now())
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e:?}"));
        assert!(
            accepted.provider_message_id.is_some(),
            "{kind}: {accepted:?}"
        );
        sent.push((kind, m.id.to_string()));
    }
    let log = sandbox.requests();
    for (kind, id) in &sent {
        let send = log
            .iter()
            .find(|r| r.kind == *kind && r.route == "send")
            .unwrap_or_else(|| panic!("{kind} not logged: {log:?}"));
        assert_eq!(send.idempotency_id.as_deref(), Some(id.as_str()), "{kind}");
        assert!((200..300).contains(&send.status), "{kind}: {send:?}");
    }

    // Instaply: a closed window gets the template; without one the message is rejected.
    let instaply = adapter("instaply_whatsapp", &base, "");
    let mut m = sample("instaply_whatsapp");
    m.recipient = json!({ "customerThreadId": "closed-1" }).into();
    let accepted = instaply.send(&m, now()).await.unwrap();
    assert_eq!(accepted.detail["fallback_template"], true);
    m.content = json!({ "text": "hi" }).into();
    assert!(matches!(
        instaply.send(&m, now()).await,
        Err(SendError::Rejected { .. })
    ));

    // Fault injection flips while running.
    let bird = adapter("bird_sms", &base, "");
    sandbox.set_options(SandboxOptions {
        fail_429: 1.0,
        retry_after_secs: 9,
        ..Default::default()
    });
    let now = now();
    let answer = bird.send(&sample("bird_sms"), now).await;
    let answered_by = chrono::Utc::now();
    match answer {
        Err(SendError::RateLimited {
            retry_after: Some(at),
            ..
        }) => {
            // From the answer's arrival, which lies between the send and its return.
            let wait = chrono::Duration::seconds(9);
            assert!(at >= now + wait && at <= answered_by + wait, "{at}");
        }
        other => panic!("{other:?}"),
    }
    sandbox.set_options(SandboxOptions {
        fail_5xx: 1.0,
        ..Default::default()
    });
    assert!(
        matches!(bird.send(&sample("bird_sms"), now).await, Err(SendError::Transient { reason, .. }) if reason == "http_503")
    );
    sandbox.set_options(SandboxOptions {
        hang: 1.0,
        ..Default::default()
    });
    let quick = adapter_with_timeout("bird_sms", &base, "", "200ms");
    assert!(
        matches!(quick.send(&sample("bird_sms"), now).await, Err(SendError::Transient { reason, .. }) if reason == "timeout")
    );
    sandbox.set_options(SandboxOptions::default());
    bird.send(&sample("bird_sms"), now).await.unwrap();
    let statuses: Vec<u16> = sandbox
        .requests()
        .iter()
        .rev()
        .take(4)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [202, 0, 503, 429]);
    sandbox.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Issue 13, item 2: a valid message of the shape of every seed rule (the rows of docs/channels.md, "What enqueue
// checks", listed in `enqueue_sql::seed_rules`) reaches the provider as its seed document requires.

fn text_of(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn is_uuid(v: Option<&Value>) -> bool {
    text_of(v).is_some_and(|s| uuid::Uuid::parse_str(s).is_ok())
}

fn keys_within(v: &Value, allowed: &[&str]) -> bool {
    v.as_object()
        .is_some_and(|o| o.keys().all(|k| allowed.contains(&k.as_str())))
}

fn is_mime(v: Option<&Value>) -> bool {
    const TOP: &[&str] = &[
        "application",
        "audio",
        "font",
        "haptics",
        "image",
        "message",
        "model",
        "multipart",
        "text",
        "video",
    ];
    text_of(v)
        .and_then(|s| s.split_once('/'))
        .is_some_and(|(top, sub)| {
            TOP.contains(&top.to_ascii_lowercase().as_str())
                && !sub.is_empty()
                && sub
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
        })
}

fn is_http_url(v: Option<&Value>) -> bool {
    text_of(v).is_some_and(|s| s.starts_with("https://") || s.starts_with("http://"))
}

/// What a strict provider would refuse in a request `body` to the send endpoint of `kind`: the request rules of
/// the seed documents (002 Bird, 001 Instaply, 004 Insider, 000 instant app), as a list of broken rules.
fn seed_violations(kind: &str, body: &Value) -> Vec<&'static str> {
    let mut broken = Vec::new();
    let mut need = |ok: bool, rule: &'static str| {
        if !ok {
            broken.push(rule);
        }
    };
    match kind {
        "bird_sms" => {
            need(
                keys_within(
                    body,
                    &[
                        "receiver",
                        "reference",
                        "validity",
                        "body",
                        "template",
                        "tags",
                        "ignoreQuietHours",
                        "capFrequency",
                        "meta",
                    ],
                ),
                "only fields of the Send a message body",
            );
            let phone = text_of(body.pointer("/receiver/contacts/0/identifierValue")).unwrap_or("");
            need(
                phone.starts_with('+')
                    && (8..=16).contains(&phone.len())
                    && phone[1..].bytes().all(|b| b.is_ascii_digit()),
                "receiver.contacts[0].identifierValue: a phone number",
            );
            need(
                text_of(body.get("reference")).is_some(),
                "reference: a string",
            );
            need(
                body["validity"].as_u64().is_some_and(|v| v >= 1),
                "validity: whole seconds",
            );
            if let Some(tags) = body.get("tags") {
                need(
                    tags.as_array().is_some_and(|t| {
                        t.len() <= 10 && t.iter().all(|t| text_of(Some(t)).is_some())
                    }),
                    "tags: up to 10 strings",
                );
            }
            if body.get("capFrequency") == Some(&json!(true)) {
                need(
                    body.pointer("/meta/extraInformation/useCase") == Some(&json!("marketing")),
                    "capFrequency: only with meta.extraInformation.useCase marketing",
                );
            }
            need(
                body.get("body").is_some() != body.get("template").is_some(),
                "exactly one of body or template",
            );
            if let Some(b) = body.get("body") {
                let t = b["type"].as_str().unwrap_or("");
                need(
                    ["text", "image", "file"].contains(&t),
                    "body.type: text, image or file",
                );
                need(
                    keys_within(b, &["type", t]),
                    "body: type and its own part only",
                );
                let part = &b[t];
                let fields: &[&str] = match t {
                    "text" => &["text", "attachments", "actions", "metadata"],
                    "image" => &["images", "text", "metadata"],
                    _ => &["files", "text", "metadata"],
                };
                need(keys_within(part, fields), "body part: its own fields only");
                if let Some(m) = part.get("metadata") {
                    need(m.is_object(), "metadata: an object");
                }
                if t == "text" {
                    need(
                        text_of(part.get("text")).is_some_and(|s| s.chars().count() <= 10_000),
                        "text.text",
                    );
                } else {
                    if let Some(text) = part.get("text") {
                        need(text_of(Some(text)).is_some(), "media text: a string");
                    }
                    let items = part[format!("{t}s")]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    need((1..=10).contains(&items.len()), "media: 1 to 10 items");
                    need(
                        items.iter().all(|i| is_http_url(i.get("mediaUrl"))),
                        "media: an http(s) mediaUrl each",
                    );
                    if t == "file" {
                        need(
                            items.iter().all(|i| is_mime(i.get("contentType"))),
                            "files: a MIME contentType each",
                        );
                    }
                }
            }
            if let Some(t) = body.get("template") {
                need(
                    keys_within(
                        t,
                        &["projectId", "version", "locale", "parameters", "shortLinks"],
                    ),
                    "template: its own fields only",
                );
                need(is_uuid(t.get("projectId")), "template.projectId: a UUID");
                need(text_of(t.get("version")).is_some(), "template.version");
                need(text_of(t.get("locale")).is_some(), "template.locale");
                if let Some(p) = t.get("parameters") {
                    need(
                        p.as_array().is_some_and(|p| {
                            p.iter().all(|p| {
                                text_of(p.get("key")).is_some()
                                    && text_of(p.get("type")).is_some()
                                    && (p["type"] != "string" || p["value"].is_string())
                            })
                        }),
                        "template.parameters: {type, key, value}, a string value for type string",
                    );
                }
            }
        }
        "instaply_whatsapp" => {
            need(
                keys_within(
                    body,
                    &["customerThreadId", "text", "contentSid", "internal"],
                ),
                "only the seed's fields",
            );
            need(
                text_of(body.get("customerThreadId")).is_some(),
                "customerThreadId: a string",
            );
            need(
                text_of(body.get("text")).is_some() != text_of(body.get("contentSid")).is_some(),
                "exactly one of text or contentSid",
            );
            if let Some(internal) = body.get("internal") {
                need(internal.is_boolean(), "internal: a boolean");
            }
        }
        "insider_push" => {
            need(
                keys_within(
                    body,
                    &[
                        "applicationIds",
                        "segmentId",
                        "tableId",
                        "content",
                        "multiLangContent",
                        "trackingId",
                        "useOnlyEngagedTokens",
                    ],
                ),
                "only SendInstantPush fields (no scheduleDate: tidings schedules)",
            );
            need(
                body["applicationIds"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string)),
                "applicationIds: a non-empty array of strings",
            );
            need(
                body.get("segmentId").is_some() != body.get("tableId").is_some(),
                "segmentId XOR tableId",
            );
            need(
                is_uuid(body.get("segmentId").or(body.get("tableId"))),
                "segmentId / tableId: a UUID",
            );
            need(
                body.get("content").is_some() != body.get("multiLangContent").is_some(),
                "content XOR multiLangContent",
            );
            let content = body.get("content").or(body.get("multiLangContent"));
            need(
                content.is_some_and(|c| c.as_object().is_some_and(|o| !o.is_empty())),
                "content: a non-empty object",
            );
            if let Some(c) = body
                .get("content")
                .filter(|c| c.get("templateId").is_some())
            {
                need(
                    keys_within(c, &["templateId"]),
                    "content: only templateId with a template",
                );
            }
            need(is_uuid(body.get("trackingId")), "trackingId: a UUID");
            if let Some(flag) = body.get("useOnlyEngagedTokens") {
                need(flag.is_boolean(), "useOnlyEngagedTokens: a boolean");
            }
        }
        "instant_app" => {
            need(
                keys_within(
                    body,
                    &[
                        "message",
                        "instantAppSchemaApiId",
                        "orgChannelApiId",
                        "customerChannelKey",
                        "instantAppParameters",
                    ],
                ),
                "only send_to_customer fields",
            );
            need(text_of(body.get("message")).is_some(), "message");
            need(
                text_of(body.get("instantAppSchemaApiId")).is_some(),
                "instantAppSchemaApiId",
            );
            need(
                text_of(body.get("orgChannelApiId")).is_some(),
                "orgChannelApiId",
            );
            need(
                text_of(body.get("customerChannelKey"))
                    .is_some_and(|k| k.len() == 10 && k.bytes().all(|b| b.is_ascii_digit())),
                "customerChannelKey: the 10-digit number",
            );
            need(
                body["instantAppParameters"].as_object().is_some_and(|p| {
                    p.values()
                        .all(|v| v.is_string() || v.is_number() || v.is_boolean())
                }),
                "instantAppParameters: key-value pairs",
            );
        }
        "webhook" => {}
        other => panic!("no seed for {other}"),
    }
    broken
}

/// The parts of `content` the request of `kind` must carry unchanged, and where.
fn carried(kind: &str, content: &Value, body: &Value) -> Vec<(String, Value, Value)> {
    let pairs: Vec<(&str, &str)> = match kind {
        "bird_sms" => vec![("/body", "/body"), ("/template", "/template")],
        // An open window (the fake's answer) sends the text when there is one, else the template.
        "instaply_whatsapp" if content.get("text").is_some() => vec![("/text", "/text")],
        "instaply_whatsapp" => vec![("/contentSid", "/contentSid")],
        "insider_push" => vec![
            ("/content", "/content"),
            ("/multiLangContent", "/multiLangContent"),
        ],
        "instant_app" => vec![
            ("/instantAppSchemaApiId", "/instantAppSchemaApiId"),
            ("/instantAppParameters", "/instantAppParameters"),
        ],
        "webhook" => vec![("", "/content")],
        other => panic!("no seed for {other}"),
    };
    pairs
        .into_iter()
        .filter_map(|(from, to)| {
            let sent = content.pointer(from)?;
            Some((
                from.to_owned(),
                sent.clone(),
                body.pointer(to).cloned().unwrap_or(Value::Null),
            ))
        })
        .collect()
}

#[tokio::test]
async fn every_seed_rule_shape_reaches_the_provider_as_the_seed_requires() {
    let mut failures = Vec::new();
    for rule in crate::enqueue_sql::seed_rules() {
        let valid = &rule.valid;
        let kind = crate::enqueue_sql::kind_of(valid["channel"].as_str().unwrap());
        let server = MockServer::start().await;
        mount_aux(kind, &server).await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(ok_body(kind)))
            .mount(&server)
            .await;
        let mut m = message(kind, valid["recipient"].clone(), valid["content"].clone());
        m.use_case = valid["use_case"]
            .as_str()
            .unwrap_or("transactional")
            .to_owned();
        m.cap_frequency = valid["cap_frequency"] == json!(true);
        m.ignore_quiet_hours = valid["ignore_quiet_hours"] == json!(true);
        m.tags = valid["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|t| t.as_str().unwrap().to_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(validity) = valid["validity"].as_i64() {
            m.expires_at = now() + chrono::Duration::seconds(validity);
        }
        if let Err(e) = adapter(kind, &server.uri(), "").send(&m, now()).await {
            failures.push(format!("{}: not sent: {e:?}", rule.id));
            continue;
        }
        let sent = requests_to(&server, send_path(kind)).await;
        let [request] = sent.as_slice() else {
            failures.push(format!(
                "{}: {} requests to {}",
                rule.id,
                sent.len(),
                send_path(kind)
            ));
            continue;
        };
        let body: Value = request.body_json().unwrap();
        for broken in seed_violations(kind, &body) {
            failures.push(format!(
                "{}: the request breaks `{broken}`: {body}",
                rule.id
            ));
        }
        for (part, enqueued, sent) in carried(kind, &valid["content"], &body) {
            if enqueued != sent {
                failures.push(format!(
                    "{}: content{part} sent as {sent}, enqueued as {enqueued}",
                    rule.id
                ));
            }
        }
        if let Some(status) = valid["content"].get("updateThreadStatus") {
            let update = requests_to(&server, "/api/update-thread-status").await;
            let ok =
                update.len() == 1 && update[0].body_json::<Value>().unwrap()["status"] == *status;
            if !ok {
                failures.push(format!(
                    "{}: the thread status update did not follow",
                    rule.id
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
