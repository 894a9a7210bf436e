//! Traces (issue 18): a message enqueued with a known `traceparent` is sent through a webhook that answers 503
//! once; an OTLP/HTTP receiver started here (axum, decoding `ExportTraceServiceRequest` with the OpenTelemetry
//! proto types) gets one `tidings.send {channel}` span per attempt, each linked to the producer's trace, with the
//! attempt's attributes, and neither the recipient nor the content anywhere in what was exported. A malformed
//! trace context is refused at enqueue (SQL 22023, client `Invalid`, API 422).
//!
//! Each worker here has its own tracer provider ([`Worker::telemetry`]) and its own receiver, so these tests
//! run beside any other in the same process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;
use sqlx::PgPool;
use tidings::config::Config;
use tidings::shutdown::Shutdown;
use tidings::store::{ClaimParams, Store};
use tidings::telemetry::{Telemetry, TelemetryConfig};
use tidings::worker::Worker;
use tidings_client::NewMessage;
use uuid::Uuid;
use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{sync, wait_until};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const PHONE: &str = "+31687654321";
const CONTENT: &str = "your parcel 7781 is on its way";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-01")
}

/// An OTLP/HTTP traces endpoint on a free port: keeps every request body as received.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(body);
                    // An empty ExportTraceServiceResponse: everything accepted.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://{addr}/v1/traces"),
            bodies,
        }
    }

    /// Every span received so far, decoded.
    fn spans(&self) -> Vec<Span> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                ExportTraceServiceRequest::decode(b.as_ref())
                    .expect("OTLP protobuf")
                    .resource_spans
            })
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    }

    /// The service names of the exported resources.
    fn service_names(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                ExportTraceServiceRequest::decode(b.as_ref())
                    .unwrap()
                    .resource_spans
            })
            .filter_map(|r| r.resource)
            .flat_map(|r| r.attributes)
            .filter(|kv| kv.key == "service.name")
            .filter_map(|kv| text(kv.value.and_then(|v| v.value)))
            .collect()
    }

    /// All bytes received, concatenated.
    fn raw(&self) -> Vec<u8> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.to_vec())
            .collect()
    }
}

fn text(v: Option<AnyValue>) -> Option<String> {
    match v? {
        AnyValue::StringValue(s) => Some(s),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// A span's attributes as text.
fn attributes(span: &Span) -> BTreeMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), text(kv.value.clone()?.value)?)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn webhook_config(base: &str) -> Config {
    Config::parse(&format!(
        "[worker]\npoll_interval = \"50ms\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [channels.hooks]\nkind = \"webhook\"\nbase_url = \"{base}\"\nsecret_env = \"HOOK_SECRET\"\ntimeout = \"2s\"\n\
         [channels.hooks.backoff]\nbase = \"10ms\"\ncap = \"20ms\"\n"
    ))
    .unwrap()
}

/// Starts a worker over `webhook_config`'s channel (its signing secret from the environment) with `telemetry`.
async fn start_traced(
    config: Config,
    store: Store,
    telemetry: &Telemetry,
) -> (Shutdown, tidings::worker::RunningWorker) {
    let shutdown = Shutdown::new();
    let running = Worker::new(config, store)
        .env(Arc::new(|var| {
            (var == "HOOK_SECRET").then(|| "s3cret".to_owned())
        }))
        .telemetry(Some(telemetry.clone()))
        .shutdown(shutdown.clone())
        .start()
        .await
        .unwrap();
    (shutdown, running)
}

async fn status_of(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status::text FROM tidings.messages WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn each_attempt_is_a_span_linked_to_the_producers_trace(pool: PgPool) {
    let otlp = Receiver::start().await;
    let gateway = MockServer::start().await;
    let config = webhook_config(&gateway.uri());
    let store = sync(&pool, &config).await;

    let id = NewMessage::raw(
        "hooks",
        json!({ "phone": PHONE }),
        json!({ "text": CONTENT }),
    )
    .traceparent(traceparent())
    .tracestate("congo=t61rcWkgMzE")
    .enqueue(&pool)
    .await
    .unwrap();
    // Another message without a trace context: its spans carry no producer link.
    let plain = NewMessage::raw(
        "hooks",
        json!({ "phone": PHONE }),
        json!({ "text": CONTENT }),
    )
    .enqueue(&pool)
    .await
    .unwrap();

    // The gateway: 503 once for the traced message, then accepted.
    Mock::given(method("POST"))
        .and(header("webhook-id", id.to_string()))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&gateway)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": "gw-1" })))
        .with_priority(2)
        .mount(&gateway)
        .await;

    let telemetry = Telemetry::start(&TelemetryConfig::to_endpoint(&otlp.url)).unwrap();
    let (shutdown, running) = start_traced(config, store, &telemetry).await;
    wait_until(Duration::from_secs(30), "both messages sent", || async {
        status_of(&pool, id).await == "sent" && status_of(&pool, plain).await == "sent"
    })
    .await;
    shutdown.stop.cancel();
    running.wait().await.unwrap();
    // Exports what is still queued.
    telemetry.shutdown().await;

    let spans = otlp.spans();
    let id_text = id.to_string();
    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| attributes(s).get("messaging.message.id") == Some(&id_text))
        .collect();
    attempts.sort_by_key(|s| attributes(s)["tidings.attempt"].parse::<i64>().unwrap());
    assert_eq!(attempts.len(), 2, "one span per attempt: {attempts:#?}");
    for (n, span) in attempts.iter().enumerate() {
        assert_eq!(span.name, "tidings.send hooks");
        let a = attributes(span);
        assert_eq!(a["tidings.attempt"], (n + 1).to_string());
        assert_eq!(a["messaging.destination.name"], "hooks");
        assert_eq!(a["tidings.channel.kind"], "webhook");
        assert_eq!(a["tidings.use_case"], "transactional");
        assert_eq!(a["messaging.system"], "tidings");
        // Linked to the producer's context (its own trace is new: a link, not a parent).
        let producer: Vec<_> = span
            .links
            .iter()
            .filter(|l| hex(&l.trace_id) == TRACE_ID)
            .collect();
        assert_eq!(producer.len(), 1, "{:#?}", span.links);
        assert_eq!(hex(&producer[0].span_id), PARENT_ID);
        assert_eq!(producer[0].trace_state, "congo=t61rcWkgMzE");
        assert_ne!(hex(&span.trace_id), TRACE_ID);
        assert!(span.parent_span_id.is_empty(), "an attempt is a root span");
    }
    let (first, second) = (attributes(attempts[0]), attributes(attempts[1]));
    assert_eq!(first["tidings.outcome"], "scheduled");
    assert_eq!(first["http.response.status_code"], "503");
    assert_eq!(first["tidings.deferral.reason"], "http_503");
    assert_eq!(first["error.type"], "http_503");
    assert!(first.contains_key("tidings.deferred_until"));
    assert_eq!(second["tidings.outcome"], "sent");
    assert_eq!(second["http.response.status_code"], "200");
    assert!(!second.contains_key("tidings.deferral.reason"));

    // The message without a trace context: spans of its own, no producer link.
    let plain_text = plain.to_string();
    let plain_spans: Vec<&Span> = spans
        .iter()
        .filter(|s| attributes(s).get("messaging.message.id") == Some(&plain_text))
        .collect();
    assert_eq!(plain_spans.len(), 1);
    for s in &plain_spans {
        assert!(s.links.iter().all(|l| hex(&l.trace_id) != TRACE_ID));
    }

    // The webhook carried each attempt span's own traceparent.
    let sent: Vec<String> = gateway
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| {
            r.headers
                .get("webhook-id")
                .is_some_and(|v| v.to_str().unwrap() == id_text)
        })
        .map(|r| {
            r.headers
                .get("traceparent")
                .expect("traceparent header")
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let expected: Vec<String> = attempts
        .iter()
        .map(|s| format!("00-{}-{}-01", hex(&s.trace_id), hex(&s.span_id)))
        .collect();
    assert_eq!(sent, expected);

    // Claim and completion batches are spans of their own; each attempt links to its claim's.
    let claims: Vec<&Span> = spans.iter().filter(|s| s.name == "tidings.claim").collect();
    assert!(
        claims
            .iter()
            .any(|c| attributes(c)["messaging.batch.message_count"] != "0")
    );
    for attempt in &attempts {
        let claim = attempt
            .links
            .iter()
            .find(|l| hex(&l.trace_id) != TRACE_ID)
            .expect("a link to the claim");
        assert!(
            claims.iter().any(|c| c.span_id == claim.span_id),
            "the linked claim span was exported"
        );
    }
    let completes: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "tidings.complete")
        .collect();
    let written: i64 = completes
        .iter()
        .map(|s| {
            attributes(s)["tidings.complete.written"]
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(written, 3, "three outcomes written (two attempts and one)");
    assert!(otlp.service_names().iter().all(|n| n == "tidings"));

    // Nothing of the recipient or the content in anything exported.
    let raw = otlp.raw();
    for secret in [PHONE, "687654321", CONTENT, "7781", "s3cret"] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret:?} found in the OTLP export"
        );
    }
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_sampler_that_keeps_nothing_exports_nothing_and_still_propagates(pool: PgPool) {
    let otlp = Receiver::start().await;
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&gateway)
        .await;
    let config = webhook_config(&gateway.uri());
    let store = sync(&pool, &config).await;
    let id = NewMessage::raw("hooks", json!({}), json!({}))
        .traceparent(traceparent())
        .enqueue(&pool)
        .await
        .unwrap();
    let settings = TelemetryConfig {
        sampler: tidings::telemetry::SamplerConfig::AlwaysOff,
        ..TelemetryConfig::to_endpoint(&otlp.url)
    };
    let telemetry = Telemetry::start(&settings).unwrap();
    let (shutdown, running) = start_traced(config, store, &telemetry).await;
    wait_until(Duration::from_secs(30), "message sent", || async {
        status_of(&pool, id).await == "sent"
    })
    .await;
    shutdown.stop.cancel();
    running.wait().await.unwrap();
    telemetry.shutdown().await;
    assert!(otlp.spans().is_empty(), "no span kept");
    // The gateway still gets a (not sampled) trace context to join or ignore.
    let requests = gateway.received_requests().await.unwrap();
    let tp = requests[0]
        .headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
}

/// A worker with traces off claims without the trace context (two columns fewer per message), and every other
/// column still lands in its field; the claim of a worker with traces on carries it.
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_claim_carries_the_trace_context_only_for_a_traced_worker(pool: PgPool) {
    let config = webhook_config("http://127.0.0.1:9");
    let store = sync(&pool, &config).await;
    let message = || {
        NewMessage::raw(
            "hooks",
            json!({ "phone": PHONE }),
            json!({ "text": CONTENT }),
        )
        .traceparent(traceparent())
        .tracestate("congo=t61rcWkgMzE")
        .priority(3)
    };
    let first = message().enqueue(&pool).await.unwrap();
    let second = message().enqueue(&pool).await.unwrap();
    let channels = vec!["hooks".to_owned()];
    let params = ClaimParams {
        limit: 1,
        lease_id: Uuid::now_v7(),
        lease: Duration::from_secs(60),
        channels: &channels,
    };

    let untraced = store.message_claim_untraced(&params).await.unwrap();
    assert_eq!(untraced.len(), 1);
    let m = &untraced[0];
    assert_eq!((m.id, m.channel.as_str()), (first, "hooks"));
    assert_eq!(
        (m.priority, m.lease_id, m.suppressed),
        (3, params.lease_id, false)
    );
    assert_eq!(
        (m.traceparent.as_deref(), m.tracestate.as_deref()),
        (None, None)
    );

    let traced = store.message_claim(&params).await.unwrap();
    assert_eq!(traced.len(), 1);
    let m = &traced[0];
    assert_eq!((m.id, m.priority, m.suppressed), (second, 3, false));
    assert_eq!(m.traceparent.as_deref(), Some(traceparent().as_str()));
    assert_eq!(m.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_malformed_trace_context_is_refused_at_enqueue(pool: PgPool) {
    let config = webhook_config("http://127.0.0.1:9");
    sync(&pool, &config).await;
    // SQL: 22023 naming the field.
    for (tp, ts, field) in [
        ("garbage", None, "traceparent"),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            None,
            "traceparent",
        ),
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            None,
            "traceparent",
        ),
        (
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            None,
            "traceparent",
        ),
        (
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
            "traceparent",
        ),
        (&traceparent(), Some("bad\u{1}state"), "tracestate"),
    ] {
        let err = sqlx::query(
            "SELECT tidings.enqueue('hooks', '{}', '{}', traceparent => $1, tracestate => $2)",
        )
        .bind(tp)
        .bind(ts)
        .execute(&pool)
        .await
        .unwrap_err();
        let db = err.as_database_error().unwrap();
        assert_eq!(db.code().as_deref(), Some("22023"), "{tp}");
        assert!(
            db.message().starts_with(&format!("{field}: must be a W3C")),
            "{}",
            db.message()
        );
    }
    let err = sqlx::query("SELECT tidings.enqueue('hooks', '{}', '{}', tracestate => 'a=1')")
        .execute(&pool)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().message(),
        "tracestate: only allowed with a traceparent"
    );
    // A valid one is stored as given.
    let id: Uuid = sqlx::query_scalar(
        "SELECT tidings.enqueue('hooks', '{}', '{}', traceparent => $1, tracestate => 'congo=t61rcWkgMzE')",
    )
    .bind(traceparent())
    .fetch_one(&pool)
    .await
    .unwrap();
    let stored: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT traceparent, tracestate FROM tidings.messages WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        (Some(traceparent()), Some("congo=t61rcWkgMzE".into()))
    );

    // The client crate: a typed Invalid naming the field.
    match NewMessage::raw("hooks", json!({}), json!({}))
        .traceparent("00-nope")
        .enqueue(&pool)
        .await
    {
        Err(tidings_client::Error::Invalid { field, .. }) => assert_eq!(field, "traceparent"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_api_takes_the_trace_context_from_the_request_headers(pool: PgPool) {
    let config = Config::parse(
        "[api]\nlisten = \"127.0.0.1:0\"\n[channels.hooks]\nkind = \"webhook\"\nbase_url = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let store = sync(&pool, &config).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, _task) = tidings::api::start(&config, store, &|_| None, stop.clone())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value, tp: Option<&str>| {
        let mut r = http.post(format!("http://{addr}{path}")).json(&body);
        if let Some(tp) = tp {
            r = r
                .header("traceparent", tp)
                .header("tracestate", "congo=t61rcWkgMzE");
        }
        r.send()
    };
    let stored = |id: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (Option<String>, Option<String>)>(
                "SELECT traceparent, tracestate FROM tidings.messages WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let message = json!({ "channel": "hooks", "recipient": {}, "content": {} });
    let tp = traceparent();

    // The header is stored with the message.
    let r = post("/v1/messages", message.clone(), Some(&tp))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id: Uuid = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        stored(id).await,
        (Some(tp.clone()), Some("congo=t61rcWkgMzE".into()))
    );

    // A batch: the header for each message without its own; a message's own field wins (with no header state).
    let own = format!("00-{}-{PARENT_ID}-00", "1".repeat(32));
    let mut with_own = message.clone();
    with_own["traceparent"] = json!(own);
    let r = post(
        "/v1/messages/batch",
        json!({ "messages": [message.clone(), with_own] }),
        Some(&tp),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let ids: Vec<Uuid> =
        serde_json::from_value(r.json::<serde_json::Value>().await.unwrap()["ids"].clone())
            .unwrap();
    assert_eq!(stored(ids[0]).await.0, Some(tp.clone()));
    assert_eq!(stored(ids[1]).await, (Some(own), None));

    // No header: nothing stored.
    let r = post("/v1/messages", message.clone(), None).await.unwrap();
    let id: Uuid = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(stored(id).await, (None, None));

    // Malformed, in the header or the body: 422 naming the field.
    let r = post(
        "/v1/messages",
        message.clone(),
        Some("00-not-a-traceparent"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "traceparent", "{body}");
    let mut bad = message.clone();
    bad["traceparent"] = json!("nope");
    let r = post(
        "/v1/messages/batch",
        json!({ "messages": [message, bad] }),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "traceparent", "{body}");
    assert_eq!(body["error"]["index"], 1, "{body}");
    stop.cancel();
}
