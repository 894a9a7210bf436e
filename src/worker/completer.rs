//! The completer: receives outcomes from executors and writes them in batches — one guarded
//! `UPDATE … FROM unnest(…)` plus the event rows per batch — with a few batches in flight at once.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::store::{Completion, Store};
use crate::telemetry::Telemetry;

/// Sender side, held by executors.
pub(crate) type CompletionSender = mpsc::Sender<Completion>;

/// Writes outcomes until every sender is dropped and the queue is drained; then returns.
pub(crate) struct Completer {
    store: Store,
    metrics: Metrics,
    batch: usize,
    parallelism: usize,
    telemetry: Option<Telemetry>,
}

impl Completer {
    /// A completer writing at most `batch` outcomes per statement, `parallelism` statements at once.
    pub(crate) fn new(store: Store, metrics: Metrics, batch: usize, parallelism: usize) -> Self {
        Completer {
            store,
            metrics,
            batch,
            parallelism,
            telemetry: None,
        }
    }

    /// Makes a `tidings.complete` span of each statement.
    pub(crate) fn traced(mut self, telemetry: Option<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Runs until `rx` is closed and empty. Each batch is retried until the database takes it: an outcome is
    /// never dropped while the process lives (if it dies, the lease expires and the rescuer takes over).
    ///
    /// Batching works like a database's group commit: an outcome that arrives while no statement is in flight
    /// is written at once (low latency when the queue is quiet); outcomes that arrive while one is in flight
    /// wait for it and go out together, and a further statement starts early only for a full batch. Flushing
    /// whatever had arrived whenever a statement slot was free sent hundreds of one-row statements per 100,000
    /// messages, each its own commit and WAL flush.
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<Completion>) {
        let mut flushes = JoinSet::new();
        let mut buf: Vec<Completion> = Vec::with_capacity(self.batch);
        let mut open = true;
        while open || !buf.is_empty() || !flushes.is_empty() {
            let room = self.batch - buf.len();
            tokio::select! {
                // A statement finished: its slot is free for what has accumulated meanwhile.
                Some(_) = flushes.join_next(), if !flushes.is_empty() => {}
                n = rx.recv_many(&mut buf, room), if open && room > 0 => {
                    open = n > 0;
                }
                // Closed, nothing in flight, nothing pending: only reachable when the loop is about to end.
                else => {}
            }
            while !buf.is_empty()
                && flushes.len() < self.parallelism
                && (flushes.is_empty() || buf.len() >= self.batch || !open)
            {
                let take = buf.len().min(self.batch);
                let rest = buf.split_off(take);
                let batch = std::mem::replace(&mut buf, rest);
                let store = self.store.clone();
                let metrics = self.metrics.clone();
                let telemetry = self.telemetry.clone();
                flushes.spawn(async move { flush(&store, &metrics, batch, telemetry).await });
            }
        }
    }
}

async fn flush(
    store: &Store,
    metrics: &Metrics,
    batch: Vec<Completion>,
    telemetry: Option<Telemetry>,
) {
    let started = std::time::SystemTime::now();
    let mut delay = Duration::from_millis(50);
    let mut tries = 0u32;
    let applied = loop {
        tries += 1;
        match store.message_complete_many(&batch).await {
            Ok(applied) => break applied,
            Err(e) => {
                tracing::warn!(error = %e, batch = batch.len(), "completion failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    let lost = batch.len() - applied.len();
    if let Some(t) = &telemetry {
        t.complete(started, batch.len(), applied.len(), tries);
    }
    if lost == 0 {
        count(metrics, batch.iter());
        return;
    }
    let applied: std::collections::HashSet<_> = applied.into_iter().collect();
    count(metrics, batch.iter().filter(|c| applied.contains(&c.id)));
    for c in &batch {
        if !applied.contains(&c.id) {
            metrics
                .completions_lost
                .with_label_values(&[&c.channel])
                .inc();
            tracing::warn!(message_id = %c.id, channel = %c.channel, outcome = ?c.outcome.status(),
                "outcome not written: the message was rescued or canceled meanwhile");
        }
    }
}

/// Counts written transitions, one metric lookup per distinct (channel, status, reason) of the batch.
fn count<'a>(metrics: &Metrics, written: impl Iterator<Item = &'a Completion>) {
    let mut tally: Vec<((&str, &str, &str), u64)> = Vec::new();
    for c in written {
        let key = (
            c.channel.as_str(),
            c.outcome.status().as_str(),
            c.outcome.reason(),
        );
        match tally.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => tally.push((key, 1)),
        }
    }
    for ((channel, status, reason), n) in tally {
        metrics
            .transitions
            .with_label_values(&[channel, status, reason])
            .inc_by(n);
    }
}
