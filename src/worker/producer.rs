//! The producer: claims due messages — never more than its free slots — and starts an executor task for each.
//! Wakes on NOTIFY (enqueue of a due message), on a slot freeing up after a full claim, and on a poll timer as
//! the safety net (and for scheduled messages becoming due).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::completer::CompletionSender;
use super::executor::Executor;
use crate::store::{ClaimParams, Store};

/// Claims and dispatches until the stop signal.
pub(crate) struct Producer {
    /// Database.
    pub(crate) store: Store,
    /// Shared executor state.
    pub(crate) executor: Arc<Executor>,
    /// Free slots: one permit per message this process may hold.
    pub(crate) slots: Arc<Semaphore>,
    /// Rung by the LISTEN task on every notification (one per producer).
    pub(crate) wakeup: Arc<Notify>,
    /// Where outcomes go.
    pub(crate) completions: CompletionSender,
    /// Channels without a rate limit (claimed together).
    pub(crate) unlimited: Vec<String>,
    /// Rate-limited channels and their `rate_per_sec` (claimed with tokens from their shared bucket).
    pub(crate) limited: Vec<(String, f64)>,
    /// Most rows per claim.
    pub(crate) claim_batch: usize,
    /// Lease duration.
    pub(crate) lease: Duration,
    /// Poll interval.
    pub(crate) poll_interval: Duration,
}

impl Producer {
    /// Runs until `executor.shutdown.stop` fires; returns the executor tasks still running.
    pub(crate) async fn run(self) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        let stop = self.executor.shutdown.stop.clone();
        let concurrency = self.slots.available_permits();
        // Claim when at least this many slots are free: big batches under load, immediate claims when idle.
        let low_water = (self.claim_batch.min(concurrency) / 4).max(1);
        let mut buckets: Vec<Bucket> = self
            .limited
            .iter()
            .map(|(c, r)| Bucket::new(c, *r))
            .collect();
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let free = self.slots.available_permits();
            if free < low_water {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    permits = self.slots.acquire_many(low_water as u32) => drop(permits),
                }
                continue;
            }
            match self
                .round(free.min(self.claim_batch), &mut buckets, &mut tasks)
                .await
            {
                Ok(Round { full: true, .. }) => {
                    failures = 0;
                    continue; // probably more due right now
                }
                Ok(Round { wake_in, .. }) => {
                    failures = 0;
                    let wait = wake_in.map_or(self.poll_interval, |w| w.min(self.poll_interval));
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = self.wakeup.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(e) => {
                    failures += 1;
                    let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    tracing::warn!(error = %e, retry_in = ?backoff, "claim failed");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
        tasks
    }

    /// One claim round over every channel: the unlimited ones in one statement, then each rate-limited one
    /// with the tokens its shared bucket grants.
    async fn round(
        &self,
        mut want: usize,
        buckets: &mut [Bucket],
        tasks: &mut JoinSet<()>,
    ) -> crate::Result<Round> {
        let mut round = Round {
            full: false,
            wake_in: None,
        };
        // Channels this process saw paused are left out at once (the claim skips the others' pauses itself).
        let now = Utc::now();
        let pauses = &self.executor.pauses;
        let unpaused: Vec<String>;
        let unlimited = if self.unlimited.iter().any(|c| pauses.is_paused(c, now)) {
            unpaused = self
                .unlimited
                .iter()
                .filter(|c| !pauses.is_paused(c, now))
                .cloned()
                .collect();
            &unpaused
        } else {
            &self.unlimited
        };
        if !unlimited.is_empty() {
            let (got, reserved) = self.claim(unlimited, want, tasks).await?;
            // Full, or no slot left to reserve (another producer took them): either way, go round again.
            round.full |= got == reserved;
            want -= got;
        }
        for bucket in buckets.iter_mut() {
            if want == 0 {
                round.full = true;
                break;
            }
            if pauses.is_paused(&bucket.channel, now) {
                continue;
            }
            let granted = self
                .store
                .rate_take(&bucket.channel, want as i64, bucket.refill, bucket.burst)
                .await? as usize;
            let got = if granted > 0 {
                self.claim(std::slice::from_ref(&bucket.channel), granted, tasks)
                    .await?
                    .0
            } else {
                0
            };
            if got < granted {
                self.store
                    .rate_return(&bucket.channel, (granted - got) as i64, bucket.burst)
                    .await?;
                bucket.backlog = false; // drained: no need to come back before a NOTIFY or the poll
            } else if granted > 0 {
                bucket.backlog = true;
            }
            if bucket.backlog && granted < want {
                // Limited by tokens, not by work: come back when a useful batch of tokens has accrued.
                let wait = Duration::from_secs_f64((bucket.burst / bucket.refill).clamp(0.01, 1.0));
                round.wake_in = Some(round.wake_in.map_or(wait, |w: Duration| w.min(wait)));
            }
            want -= got;
        }
        Ok(round)
    }

    /// Claims up to `want` messages of `channels` and starts an executor task for each; returns how many.
    async fn claim(
        &self,
        channels: &[String],
        want: usize,
        tasks: &mut JoinSet<()>,
    ) -> crate::Result<(usize, usize)> {
        // Reserve the slots first: several producers share them, and a claim never takes more than it holds.
        let free = want.min(self.slots.available_permits());
        let Some(mut reserved) = (free > 0)
            .then(|| self.slots.clone().try_acquire_many_owned(free as u32).ok())
            .flatten()
        else {
            return Ok((0, 0));
        };
        let want = free;
        let params = ClaimParams {
            limit: want as i64,
            lease_id: Uuid::now_v7(),
            lease: self.lease,
            channels,
        };
        // With traces on, the claim's span (when it was kept), for each attempt's link, and the messages' trace
        // contexts; with traces off, neither.
        let (claimed, claim_span) = match &self.executor.telemetry {
            None => (self.store.message_claim_untraced(&params).await?, None),
            Some(t) => {
                let started = std::time::SystemTime::now();
                let claimed = self.store.message_claim(&params).await;
                let span = t.claim(started, want, channels, claimed.as_ref().map(Vec::len));
                (claimed?, span)
            }
        };
        let got = claimed.len();
        let metrics = &self.executor.metrics;
        metrics.claim_batch_size.observe(got as f64);
        let now = Utc::now();
        // Metric handles resolved once per channel of the batch, not once per message.
        let mut handles: Vec<(String, prometheus::Histogram, prometheus::IntGauge)> = Vec::new();
        for message in claimed {
            let permit = reserved
                .split(1)
                .expect("one reserved slot per claimed message");
            let i = match handles.iter().position(|(c, _, _)| *c == message.channel) {
                Some(i) => i,
                None => {
                    handles.push((
                        message.channel.clone(),
                        metrics.dispatch_lag.with_label_values(&[&message.channel]),
                        metrics.inflight.with_label_values(&[&message.channel]),
                    ));
                    handles.len() - 1
                }
            };
            let (_, lag_histogram, inflight) = &handles[i];
            let lag = (now - message.run_at)
                .num_microseconds()
                .unwrap_or(0)
                .max(0) as f64
                / 1e6;
            lag_histogram.observe(lag);
            let inflight = inflight.clone();
            inflight.inc();
            let executor = self.executor.clone();
            let completions = self.completions.clone();
            // Boxed: the attempt's future is a few kilobytes (timeouts, the adapter call, the frequency check),
            // and tokio moves a task's future by value when it stores it and when it reads the result; the box
            // is moved instead (the measurement is in the README's Performance section). Traced or not is
            // decided here, once per message: the untraced task is the attempt alone, with no span context in it.
            match &self.executor.telemetry {
                None => tasks.spawn(Box::pin(async move {
                    let completion = executor.run(message).await;
                    // The slot frees once the completer has the outcome: a slow database slows claiming.
                    let _ = completions.send(completion).await;
                    inflight.dec();
                    drop(permit);
                })),
                Some(_) => {
                    let claim_span = claim_span.clone();
                    tasks.spawn(Box::pin(async move {
                        let completion = executor.run_traced(message, claim_span).await;
                        let _ = completions.send(completion).await;
                        inflight.dec();
                        drop(permit);
                    }))
                }
            };
        }
        // Unused reserved slots are released when `reserved` drops.
        Ok((got, want))
    }
}

/// What a claim round found.
struct Round {
    /// Every slot offered was filled: claim again at once.
    full: bool,
    /// A rate-limited channel has a backlog and will have tokens again after this long.
    wake_in: Option<Duration>,
}

/// A rate-limited channel's view of its shared token bucket.
///
/// `rate_per_sec` is a hard ceiling for claims over any one-second window. Tokens are taken at claim time, and a send
/// happens a moment later, so the bucket keeps one burst of headroom for that jitter: at most `burst` tokens
/// are saved up (1/20 s worth) and it refills at `rate - 2 x burst` per second. Claims therefore stay below
/// `rate - burst` in any second, and sustained throughput is 90% of `rate_per_sec`.
struct Bucket {
    channel: String,
    burst: f64,
    refill: f64,
    /// The last round used every token it got (there may be more due).
    backlog: bool,
}

impl Bucket {
    fn new(channel: &str, rate: f64) -> Self {
        let burst = (rate / 20.0).max(1.0);
        let refill = if rate > 3.0 * burst {
            rate - 2.0 * burst
        } else {
            rate / 3.0
        };
        Bucket {
            channel: channel.to_owned(),
            burst,
            refill,
            backlog: true,
        }
    }
}
