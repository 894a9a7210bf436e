//! OpenTelemetry traces, in one room: the `OTEL_*` settings, the OTLP/HTTP exporter, and the spans the worker
//! makes — one per attempt (`tidings.send {channel}`, linked to the producer's `traceparent`), one per claim
//! batch (`tidings.claim`) and one per completion batch (`tidings.complete`).
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set: then the worker holds
//! no [`Telemetry`] and does no trace work on the hot path beyond an `Option` check per claim (which then leaves
//! the trace columns out of the claim), per message (which then runs the attempt with no span context in its
//! future) and per completion batch. When on, the
//! SDK's sampler decides at the start of each span, before any attribute is built, so a 1% sampler costs an id
//! and a coin flip per message for the other 99%.
//!
//! Spans are made with the `opentelemetry` API on a tracer provider that belongs to a worker (built by the
//! caller, handed to [`crate::worker::Worker::telemetry`]), not on a process-wide one: several workers in one
//! process (the tests, the benchmark's pools) each export where they were told, and nothing here installs a
//! global. The `tracing` subscriber stays the log's.
//!
//! What a span never carries: the recipient, the content, a provider's answer body, a credential. The
//! attributes are ids, names, numbers and the reason words of the event rows.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};

use crate::error::{Error, Result};
use crate::message::Message;
use crate::outcome::Outcome;

/// The instrumentation scope of every span tidings makes.
const SCOPE: &str = "tidings";

/// Trace settings, from the standard `OTEL_*` variables ([`TelemetryConfig::from_env`]) or built by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// Where spans are POSTed (OTLP/HTTP, protobuf). `None`: the exporter resolves the endpoint from
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`).
    pub endpoint: Option<String>,
    /// `service.name` of the exported resource (`OTEL_SERVICE_NAME`, default `tidings`).
    pub service_name: String,
    /// Which traces are kept (`OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, default `parentbased_always_on`).
    pub sampler: SamplerConfig,
    /// How long the exporter waits between batches (`OTEL_BSP_SCHEDULE_DELAY`, default 5 s).
    pub schedule_delay: Duration,
}

/// The samplers of the OpenTelemetry specification (`OTEL_TRACES_SAMPLER`). Every span tidings makes is a
/// root, so the `parentbased_` forms behave like their delegates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerConfig {
    /// `always_on`, `parentbased_always_on`.
    AlwaysOn,
    /// `always_off`, `parentbased_always_off`.
    AlwaysOff,
    /// `traceidratio`, `parentbased_traceidratio`, with the ratio (`OTEL_TRACES_SAMPLER_ARG`, default 1.0).
    Ratio(f64),
}

impl TelemetryConfig {
    /// Settings exporting to `endpoint` (the full URL of the traces path), everything sampled, a short batch
    /// delay: what the tests and a local trace viewer want.
    pub fn to_endpoint(endpoint: impl Into<String>) -> Self {
        TelemetryConfig {
            endpoint: Some(endpoint.into()),
            service_name: SCOPE.to_owned(),
            sampler: SamplerConfig::AlwaysOn,
            schedule_delay: Duration::from_millis(200),
        }
    }

    /// The settings of the process environment; `Ok(None)` when traces are off (no OTLP endpoint is set, or
    /// `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`). A value tidings cannot honour is an error
    /// naming the variable.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Like [`TelemetryConfig::from_env`], reading variables through `var` (empty values count as unset).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let bad = |name: &str, rule: &str| Error::Config(format!("{name}: {rule}"));
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match var("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(bad(
                    "OTEL_TRACES_EXPORTER",
                    &format!("must be otlp or none, not {other:?}"),
                ));
            }
        }
        if var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
            && var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = var(name) {
                if protocol.trim() != "http/protobuf" {
                    return Err(bad(
                        name,
                        &format!(
                            "must be http/protobuf (the one OTLP transport of this build), not {protocol:?}"
                        ),
                    ));
                }
                break; // the signal's own setting wins over the general one
            }
        }
        let ratio = || -> Result<f64> {
            match var("OTEL_TRACES_SAMPLER_ARG") {
                None => Ok(1.0),
                Some(arg) => arg
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        bad(
                            "OTEL_TRACES_SAMPLER_ARG",
                            "must be a number from 0 to 1 (the share of traces kept)",
                        )
                    }),
            }
        };
        let sampler = match var("OTEL_TRACES_SAMPLER").as_deref().map(str::trim) {
            None | Some("always_on") | Some("parentbased_always_on") => SamplerConfig::AlwaysOn,
            Some("always_off") | Some("parentbased_always_off") => SamplerConfig::AlwaysOff,
            Some("traceidratio") | Some("parentbased_traceidratio") => {
                SamplerConfig::Ratio(ratio()?)
            }
            Some(other) => {
                return Err(bad(
                    "OTEL_TRACES_SAMPLER",
                    &format!(
                        "must be one of always_on, always_off, traceidratio, parentbased_always_on, \
                         parentbased_always_off, parentbased_traceidratio, not {other:?}"
                    ),
                ));
            }
        };
        let schedule_delay = match var("OTEL_BSP_SCHEDULE_DELAY") {
            None => Duration::from_secs(5),
            Some(ms) => Duration::from_millis(ms.trim().parse().map_err(|_| {
                bad(
                    "OTEL_BSP_SCHEDULE_DELAY",
                    "must be a whole number of milliseconds",
                )
            })?),
        };
        Ok(Some(TelemetryConfig {
            // The exporter reads the endpoint variables itself (with the specification's path rules).
            endpoint: None,
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| SCOPE.to_owned()),
            sampler,
            schedule_delay,
        }))
    }
}

/// A running trace pipeline: the tracer the worker's spans come from, and the provider that batches and
/// exports them (on its own thread). Cheap to clone; [`Telemetry::shutdown`] exports what is left.
#[derive(Clone, Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::SdkTracer,
}

impl Telemetry {
    /// Builds the exporter and the provider. Must be called within a Tokio runtime or not, either works: the
    /// exporter's HTTP client and the batching run on the SDK's own thread.
    pub fn start(config: &TelemetryConfig) -> Result<Self> {
        use opentelemetry_otlp::WithExportConfig;
        // Headers (OTEL_EXPORTER_OTLP_HEADERS), timeout and compression: the exporter reads their variables.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
        let exporter = match &config.endpoint {
            Some(endpoint) => exporter.with_endpoint(endpoint.clone()),
            None => exporter,
        }
        .build()
        .map_err(|e| Error::Config(format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}")))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(config.schedule_delay)
                    .build(),
            )
            .build();
        let sampler = match config.sampler {
            SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
            SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
            SamplerConfig::Ratio(r) => Sampler::TraceIdRatioBased(r),
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(sampler)))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer(SCOPE);
        Ok(Telemetry { provider, tracer })
    }

    /// Exports the spans still queued and stops the exporter; later spans are dropped. Blocks while it
    /// exports, so it runs on a blocking thread.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "trace exporter shutdown");
        }
    }

    /// Exports the spans queued so far (blocks like [`Telemetry::shutdown`]).
    pub async fn flush(&self) {
        let provider = self.provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
    }

    /// The span of one attempt at `message` on a channel of `kind`, started now: a consumer span named
    /// `tidings.send {channel}`, linked to the claim batch that took the message and to the producer's trace
    /// (the message's `traceparent`). Attributes are set only when the sampler kept the span.
    pub(crate) fn attempt(
        &self,
        message: &Message,
        kind: &str,
        claim: Option<&SpanContext>,
    ) -> Context {
        let mut span = self
            .tracer
            .span_builder("tidings.send")
            .with_kind(SpanKind::Consumer)
            .start_with_context(&self.tracer, &Context::new());
        if span.is_recording() {
            span.update_name(format!("tidings.send {}", message.channel));
            span.set_attributes([
                KeyValue::new("messaging.system", SCOPE),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.operation.name", "send"),
                KeyValue::new("messaging.message.id", message.id.to_string()),
                KeyValue::new("messaging.destination.name", message.channel.clone()),
                KeyValue::new("tidings.channel.kind", kind.to_owned()),
                KeyValue::new("tidings.attempt", i64::from(message.attempt())),
                KeyValue::new("tidings.use_case", message.use_case.clone()),
            ]);
            if let Some(producer) = message
                .traceparent
                .as_deref()
                .and_then(|tp| remote_context(tp, message.tracestate.as_deref()))
            {
                span.add_link(producer, vec![KeyValue::new("tidings.link", "producer")]);
            }
            if let Some(claim) = claim {
                span.add_link(claim.clone(), vec![KeyValue::new("tidings.link", "claim")]);
            }
        }
        Context::new().with_span(span)
    }

    /// The span of one claim statement that took `result` messages (or failed), from `started` to now; its
    /// context when the sampler kept it (the attempts link to it). A claim that found nothing makes no span:
    /// an idle worker polls every second and that is no news.
    pub(crate) fn claim(
        &self,
        started: SystemTime,
        limit: usize,
        channels: &[String],
        result: std::result::Result<usize, &Error>,
    ) -> Option<SpanContext> {
        if matches!(result, Ok(0)) {
            return None;
        }
        let mut span = self
            .tracer
            .span_builder("tidings.claim")
            .with_kind(SpanKind::Client)
            .with_start_time(started)
            .start_with_context(&self.tracer, &Context::new());
        if !span.is_recording() {
            return None;
        }
        span.set_attributes([
            KeyValue::new("messaging.system", SCOPE),
            KeyValue::new("messaging.operation.type", "receive"),
            KeyValue::new("messaging.operation.name", "claim"),
            KeyValue::new("tidings.claim.limit", limit as i64),
            KeyValue::new(
                "tidings.claim.channels",
                opentelemetry::Value::Array(
                    channels
                        .iter()
                        .map(|c| opentelemetry::StringValue::from(c.clone()))
                        .collect::<Vec<_>>()
                        .into(),
                ),
            ),
        ]);
        match result {
            Ok(n) => span.set_attribute(KeyValue::new("messaging.batch.message_count", n as i64)),
            Err(e) => span.set_status(Status::error(e.to_string())),
        }
        let cx = span.span_context().clone();
        span.end();
        Some(cx)
    }

    /// The span of one completion statement, from `started` to now: `batch` outcomes, `written` of them
    /// applied (the rest found their lease lost), after `tries` tries.
    pub(crate) fn complete(&self, started: SystemTime, batch: usize, written: usize, tries: u32) {
        let mut span = self
            .tracer
            .span_builder("tidings.complete")
            .with_kind(SpanKind::Client)
            .with_start_time(started)
            .start_with_context(&self.tracer, &Context::new());
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("messaging.system", SCOPE),
                KeyValue::new("messaging.operation.type", "settle"),
                KeyValue::new("messaging.operation.name", "complete"),
                KeyValue::new("messaging.batch.message_count", batch as i64),
                KeyValue::new("tidings.complete.written", written as i64),
                KeyValue::new("tidings.complete.lost", (batch - written) as i64),
                KeyValue::new("tidings.complete.tries", i64::from(tries)),
            ]);
        }
        span.end();
    }
}

/// Ends an attempt span with its outcome: the new status, the event's reason word, the provider's HTTP status
/// when there was one, and for a deferral or retry its reason and the instant it waits for. A provider failure
/// or a terminal failure marks the span as an error.
pub(crate) fn attempted(cx: &Context, outcome: &Outcome) {
    let span = cx.span();
    if span.is_recording() {
        let status = outcome.status();
        span.set_attribute(KeyValue::new("tidings.outcome", status.as_str()));
        span.set_attribute(KeyValue::new(
            "tidings.outcome.reason",
            outcome.reason().to_owned(),
        ));
        let detail = match outcome {
            Outcome::Sent { detail, .. }
            | Outcome::Retry { detail, .. }
            | Outcome::Finished { detail, .. } => Some(detail),
            Outcome::Released => None,
        };
        if let Some(code) = detail
            .and_then(|d| d.get("http_status"))
            .and_then(|s| s.as_i64())
        {
            span.set_attribute(KeyValue::new("http.response.status_code", code));
        }
        match outcome {
            Outcome::Retry {
                at,
                reason,
                spend_attempt,
                ..
            } => {
                span.set_attribute(KeyValue::new("tidings.deferral.reason", reason.clone()));
                span.set_attribute(KeyValue::new("tidings.deferred_until", at.to_rfc3339()));
                if *spend_attempt {
                    span.set_attribute(KeyValue::new("error.type", reason.clone()));
                    span.set_status(Status::error(reason.clone()));
                }
            }
            Outcome::Finished { status, reason, .. }
                if *status == tidings_client::Status::SendingFailed =>
            {
                span.set_attribute(KeyValue::new("error.type", reason.clone()));
                span.set_status(Status::error(reason.clone()));
            }
            _ => {}
        }
    }
    span.end();
}

/// The span context of a W3C `traceparent` (validated at enqueue) and its `tracestate`; `None` when it cannot
/// be read (a tracestate that does not parse is dropped, the link is kept).
pub(crate) fn remote_context(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let mut parts = traceparent.split('-');
    let (_version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = tracestate
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let cx = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        state,
    );
    cx.is_valid().then_some(cx)
}

/// The `traceparent` header of the span current in this task (the attempt's, while the adapter runs), for
/// providers that take one; `None` when traces are off.
pub(crate) fn current_traceparent() -> Option<String> {
    // Read in place: with traces off there is no context to clone, only the empty one to look at.
    Context::map_current(|cx| {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(TelemetryConfig::from_vars(vars(&[])).unwrap(), None);
        assert_eq!(
            TelemetryConfig::from_vars(vars(&[("OTEL_SERVICE_NAME", "x")])).unwrap(),
            None
        );
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let set = [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                off,
            ];
            assert_eq!(TelemetryConfig::from_vars(vars(&set)).unwrap(), None);
        }
    }

    #[test]
    fn settings_from_the_standard_variables() {
        let c = TelemetryConfig::from_vars(vars(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://jaeger:4318/v1/traces",
            ),
            ("OTEL_SERVICE_NAME", "tidings-worker"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.service_name, "tidings-worker");
        assert_eq!(c.sampler, SamplerConfig::Ratio(0.01));
        assert_eq!(c.schedule_delay, Duration::from_secs(5));
        let c =
            TelemetryConfig::from_vars(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318")]))
                .unwrap()
                .unwrap();
        assert_eq!(c.sampler, SamplerConfig::AlwaysOn);
        assert_eq!(c.service_name, "tidings");
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318");
        for (set, name) in [
            (("OTEL_TRACES_SAMPLER", "sometimes"), "OTEL_TRACES_SAMPLER:"),
            (
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                "OTEL_EXPORTER_OTLP_PROTOCOL:",
            ),
            (("OTEL_TRACES_EXPORTER", "zipkin"), "OTEL_TRACES_EXPORTER:"),
            (
                ("OTEL_BSP_SCHEDULE_DELAY", "5s"),
                "OTEL_BSP_SCHEDULE_DELAY:",
            ),
        ] {
            let e = TelemetryConfig::from_vars(vars(&[endpoint, set])).unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
        }
        let e = TelemetryConfig::from_vars(vars(&[
            endpoint,
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("OTEL_TRACES_SAMPLER_ARG: must be a number from 0 to 1"),
            "{e}"
        );
    }

    #[test]
    fn remote_context_of_a_traceparent() {
        let cx = remote_context(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            Some("congo=t61rcWkgMzE"),
        )
        .unwrap();
        assert_eq!(
            cx.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(cx.span_id().to_string(), "b7ad6b7169203331");
        assert!(cx.is_sampled() && cx.is_remote());
        assert_eq!(cx.trace_state().get("congo"), Some("t61rcWkgMzE"));
        // A later version's extra fields are ignored; an unparseable tracestate is dropped, the link kept.
        let cx = remote_context(
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra",
            Some("not a tracestate"),
        )
        .unwrap();
        assert!(!cx.is_sampled());
        assert!(
            remote_context(
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                None
            )
            .is_none()
        );
        assert!(remote_context("garbage", None).is_none());
    }
}
