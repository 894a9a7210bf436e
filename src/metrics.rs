//! Prometheus metrics of one worker process. Label values are bounded: channel names, status and reason words,
//! HTTP codes — never message ids or recipients.
//!
//! Built on the `prometheus` crate: it gives a registry per worker (tests run several workers in one process
//! without their counters mixing), typed vectors, and the process collector, with no global recorder to install.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric tidings exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Status changes written, by channel, new status and reason.
    pub transitions: IntCounterVec,
    /// Provider HTTP requests by channel and answer code (`200`, `429`, `timeout`, …).
    pub provider_requests: IntCounterVec,
    /// Time spent in the provider call, by channel and outcome (`sent`, `retry`, `failed`, …).
    pub send_duration: HistogramVec,
    /// Due time → claim, by channel.
    pub dispatch_lag: HistogramVec,
    /// Live messages by channel and status, sampled from the database.
    pub queue_messages: IntGaugeVec,
    /// Age of the oldest due-but-unclaimed message, by channel, sampled from the database.
    pub oldest_due: GaugeVec,
    /// 1 while a channel is paused after a 429.
    pub channel_paused: IntGaugeVec,
    /// Messages held by this process, by channel.
    pub inflight: IntGaugeVec,
    /// Rows per claim statement.
    pub claim_batch_size: Histogram,
    /// Outcomes not written because the message had been rescued or canceled meanwhile.
    pub completions_lost: IntCounterVec,
    /// Rows changed by the maintenance services, by task (`rescue`, `sweep`, `prune`).
    pub maintenance_rows: IntCounterVec,
    /// 1 on the worker that runs the fleet's maintenance (the leader), 0 on the others.
    pub leader: IntGauge,
    /// Status callbacks delivered (a 2xx), by the status they told.
    pub callback_deliveries: IntCounterVec,
    /// Failed callback POSTs, by error (`http_<status>`, `timeout`, `connect`, `transport`).
    pub callback_failures: IntCounterVec,
    /// Callbacks given up after `[callbacks] max_age`.
    pub callback_given_up: IntCounter,
    /// Callbacks not yet delivered nor given up, sampled from the database.
    pub callback_outbox_pending: IntGauge,
    /// Seconds since the transition of the oldest pending callback, sampled from the database.
    pub callback_outbox_oldest: Gauge,
    /// Fallback steps created and sent, by trigger and channel pair (counted from the database's log).
    pub fallback_steps: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric (and the process collector) registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency_buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let lag_buckets = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0,
            900.0,
        ];
        let m = Metrics {
            transitions: IntCounterVec::new(
                Opts::new("tidings_transitions_total", "Message status changes written, by new status and reason."),
                &["channel", "status", "reason"],
            )
            .expect("metric"),
            provider_requests: IntCounterVec::new(
                Opts::new("tidings_provider_requests_total", "Provider requests by answer code (HTTP status, timeout, connect)."),
                &["channel", "code"],
            )
            .expect("metric"),
            send_duration: HistogramVec::new(
                HistogramOpts::new("tidings_send_duration_seconds", "Time spent calling the provider for one message.")
                    .buckets(latency_buckets),
                &["channel", "outcome"],
            )
            .expect("metric"),
            dispatch_lag: HistogramVec::new(
                HistogramOpts::new("tidings_dispatch_lag_seconds", "Time from a message becoming due to its claim.")
                    .buckets(lag_buckets),
                &["channel"],
            )
            .expect("metric"),
            queue_messages: IntGaugeVec::new(
                Opts::new("tidings_queue_messages", "Live messages by status (accepted, scheduled, processing), sampled from the database."),
                &["channel", "status"],
            )
            .expect("metric"),
            oldest_due: GaugeVec::new(
                Opts::new("tidings_oldest_due_seconds", "Age of the oldest due message not yet claimed."),
                &["channel"],
            )
            .expect("metric"),
            channel_paused: IntGaugeVec::new(
                Opts::new("tidings_channel_paused", "1 while the channel is paused after a 429, for every worker."),
                &["channel"],
            )
            .expect("metric"),
            inflight: IntGaugeVec::new(
                Opts::new("tidings_inflight", "Messages held by this worker process."),
                &["channel"],
            )
            .expect("metric"),
            claim_batch_size: Histogram::with_opts(
                HistogramOpts::new("tidings_claim_batch_size", "Messages taken per claim statement.")
                    .buckets(vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0]),
            )
            .expect("metric"),
            completions_lost: IntCounterVec::new(
                Opts::new("tidings_completions_lost_total", "Outcomes not written because the lease was lost (rescued or canceled meanwhile)."),
                &["channel"],
            )
            .expect("metric"),
            maintenance_rows: IntCounterVec::new(
                Opts::new("tidings_maintenance_rows_total", "Rows changed by this worker's maintenance services: rescue (expired leases handed back), sweep (waiting messages expired), prune (finished messages deleted)."),
                &["task"],
            )
            .expect("metric"),
            leader: IntGauge::new(
                "tidings_leader",
                "1 on the worker process that runs the fleet's maintenance (rescue, sweep, prune, rollup, queue gauges), 0 on the others.",
            )
            .expect("metric"),
            callback_deliveries: IntCounterVec::new(
                Opts::new("tidings_callback_deliveries_total", "Status callbacks delivered (answered 2xx), by the status they told."),
                &["status"],
            )
            .expect("metric"),
            callback_failures: IntCounterVec::new(
                Opts::new("tidings_callback_failures_total", "Failed status callback POSTs, by error (http_<status>, timeout, connect, transport)."),
                &["error"],
            )
            .expect("metric"),
            callback_given_up: IntCounter::new(
                "tidings_callback_given_up_total",
                "Status callbacks given up: still failing [callbacks] max_age after their transition.",
            )
            .expect("metric"),
            callback_outbox_pending: IntGauge::new(
                "tidings_callback_outbox_pending",
                "Status callbacks neither delivered nor given up, sampled from the database.",
            )
            .expect("metric"),
            callback_outbox_oldest: Gauge::new(
                "tidings_callback_outbox_oldest_seconds",
                "Seconds since the transition of the oldest pending status callback, sampled from the database.",
            )
            .expect("metric"),
            fallback_steps: IntCounterVec::new(
                Opts::new("tidings_fallback_steps_total", "Fallback steps created (event=created) and handed to their provider (event=sent), by what triggered them (rejected, sending_failed, expired, undelivered) and the channel pair. Counted from the database by whichever worker samples first."),
                &["event", "trigger", "from", "to"],
            )
            .expect("metric"),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.transitions.clone()))
            .expect("register");
        r.register(Box::new(m.provider_requests.clone()))
            .expect("register");
        r.register(Box::new(m.send_duration.clone()))
            .expect("register");
        r.register(Box::new(m.dispatch_lag.clone()))
            .expect("register");
        r.register(Box::new(m.queue_messages.clone()))
            .expect("register");
        r.register(Box::new(m.oldest_due.clone()))
            .expect("register");
        r.register(Box::new(m.channel_paused.clone()))
            .expect("register");
        r.register(Box::new(m.inflight.clone())).expect("register");
        r.register(Box::new(m.claim_batch_size.clone()))
            .expect("register");
        r.register(Box::new(m.completions_lost.clone()))
            .expect("register");
        r.register(Box::new(m.maintenance_rows.clone()))
            .expect("register");
        r.register(Box::new(m.leader.clone())).expect("register");
        for c in [
            Box::new(m.callback_deliveries.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.callback_failures.clone()),
            Box::new(m.callback_given_up.clone()),
            Box::new(m.callback_outbox_pending.clone()),
            Box::new(m.callback_outbox_oldest.clone()),
        ] {
            r.register(c).expect("register");
        }
        r.register(Box::new(m.fallback_steps.clone()))
            .expect("register");
        // Present from the start at 0, so `increase()` sees the first rescue.
        for task in ["rescue", "sweep", "prune"] {
            m.maintenance_rows.with_label_values(&[task]);
        }
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("register");
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}
