//! The fleet's background services: the rescuer (expired leases), the sweeper (overdue waiting messages), the
//! history (finished messages moved out of the hot table; day partitions created and dropped), the sampler (queue
//! gauges) and the rollup (per-minute counts of status changes for the dashboard and the 24-hour stats). Every
//! worker runs this loop, but only the leader does the work: the process holding the maintenance lock (see
//! `store::Leadership`); the others try to take it every few seconds and take over within about half a minute
//! when the leader dies or is cut off (a killed process at once). Each service is also safe when two processes
//! overlap (SKIP LOCKED, bounded batches), so a leadership change mid-pass harms nothing.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Leadership, Store};

/// Rows per maintenance statement: small enough never to hold locks for long.
const BATCH: i64 = 1000;

/// Day partitions of the history created ahead of need (a leader that is down for a while finds them there).
const HISTORY_DAYS_AHEAD: i32 = 3;

/// Counting the live messages may take at most this share of the sampler's time.
const COUNT_SHARE: u32 = 100;

/// How often a worker that does not lead tries to take the leadership, and the leader checks it still holds it
/// (at most; a shorter rescue interval is used instead).
const ELECT_INTERVAL: Duration = Duration::from_secs(5);

/// How often the per-minute counts of status changes are brought up to date.
const ROLLUP_INTERVAL: Duration = Duration::from_secs(15);

/// How long the per-minute counts are kept (the chart and the stats show the last 24 hours).
const ROLLUP_KEEP: Duration = Duration::from_secs(8 * 24 * 3600);

/// The longest wait between two counts of the live messages.
const COUNT_MAX_WAIT: Duration = Duration::from_secs(300);

/// When to count the live messages again, given how long the last count took. Counting reads every waiting
/// message (a million scheduled ones take about 0.2 s, and every worker samples), so the wait grows with the cost:
/// at least `interval`, long enough that counting takes at most 1% of the time, at most 5 minutes. The cheap
/// gauges (oldest due, paused) are still refreshed every `interval`.
pub(crate) fn next_count_after(interval: Duration, took: Duration) -> Duration {
    took.saturating_mul(COUNT_SHARE)
        .clamp(interval, COUNT_MAX_WAIT.max(interval))
}

/// The maintenance services of one worker.
pub struct Maintenance {
    store: Store,
    metrics: Metrics,
    rescue_interval: Duration,
    prune_interval: Duration,
    history_after: Duration,
    retention: Duration,
    sample_interval: Duration,
    channels: Vec<String>,
}

impl Maintenance {
    /// Services configured from `[worker]`.
    pub fn new(store: Store, metrics: Metrics, config: &Config) -> Self {
        Maintenance {
            store,
            metrics,
            rescue_interval: config.worker.rescue_interval,
            prune_interval: config.worker.prune_interval,
            history_after: config.worker.history_after,
            retention: config.worker.retention,
            sample_interval: Duration::from_secs(5),
            channels: config.channels.keys().cloned().collect(),
        }
    }

    /// Runs every service until `stop`.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut rescue = tokio::time::interval(self.rescue_interval);
        let mut prune = tokio::time::interval(self.prune_interval);
        let mut sample = tokio::time::interval(self.sample_interval);
        let mut rollup = tokio::time::interval(ROLLUP_INTERVAL);
        let mut elect = tokio::time::interval(self.rescue_interval.min(ELECT_INTERVAL));
        let mut leader: Option<Leadership> = None;
        for t in [
            &mut rescue,
            &mut prune,
            &mut sample,
            &mut rollup,
            &mut elect,
        ] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        // The first count comes one to two intervals after start, at random: a deploy restarts every worker at
        // once, and they should not all read the whole backlog in the same second (nor while they start draining).
        let mut count_at =
            tokio::time::Instant::now() + self.sample_interval.mul_f64(1.0 + rand::random::<f64>());
        loop {
            let leads = leader.is_some();
            tokio::select! {
                _ = stop.cancelled() => {
                    // Resigning closes the connection: the next leader need not wait for a dead one's.
                    if let Some(l) = leader.take() {
                        l.resign().await;
                    }
                    self.metrics.leader.set(0);
                    return;
                }
                _ = elect.tick() => leader = self.elect(leader).await,
                _ = rescue.tick(), if leads => {
                    self.rescue().await;
                    self.sweep().await;
                }
                _ = prune.tick(), if leads => self.history().await,
                _ = rollup.tick(), if leads => self.roll_up().await,
                _ = sample.tick(), if leads => {
                    let now = tokio::time::Instant::now();
                    if now >= count_at {
                        self.sample_counts().await;
                        count_at = now + next_count_after(self.sample_interval, now.elapsed());
                    }
                    self.sample_gauges().await;
                }
            }
        }
    }

    /// Keeps the leadership while its connection answers, or tries to take it; sets `tidings_leader`.
    async fn elect(&self, held: Option<Leadership>) -> Option<Leadership> {
        let leader = match held {
            Some(mut l) => {
                if l.holds().await {
                    Some(l)
                } else {
                    tracing::warn!("lost the maintenance leadership (its connection failed)");
                    // The queue gauges stop being refreshed here: zero them rather than report stale values
                    // beside the new leader's.
                    self.metrics.queue_messages.reset();
                    self.metrics.oldest_due.reset();
                    None
                }
            }
            None => match self.store.leader_try().await {
                Ok(Some(l)) => {
                    tracing::info!("this worker now runs the fleet's maintenance (leader)");
                    Some(l)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "maintenance election failed");
                    None
                }
            },
        };
        self.metrics.leader.set(i64::from(leader.is_some()));
        leader
    }

    /// Runs one bounded maintenance statement (`step`: at most [`BATCH`] rows) again until a run changes fewer
    /// rows than that or fails, and counts the rows under `task` in `tidings_maintenance_rows_total`. Returns how
    /// many rows changed in all.
    async fn in_batches<Fut>(&self, task: &str, mut step: impl FnMut() -> Fut) -> u64
    where
        Fut: std::future::Future<Output = crate::error::Result<u64>>,
    {
        let mut total = 0;
        loop {
            match step().await {
                Ok(n) => {
                    self.metrics
                        .maintenance_rows
                        .with_label_values(&[task])
                        .inc_by(n);
                    total += n;
                    if n < BATCH as u64 {
                        return total;
                    }
                }
                Err(e) => {
                    tracing::warn!(task, error = %e, "maintenance statement failed");
                    return total;
                }
            }
        }
    }

    /// Makes messages whose lease expired claimable again (or finishes them when attempts or validity ran out).
    pub(crate) async fn rescue(&self) {
        let n = self
            .in_batches("rescue", || self.store.message_rescue(BATCH))
            .await;
        if n > 0 {
            tracing::warn!(rescued = n, "leases expired: messages handed back");
        }
    }

    /// Expires waiting messages whose validity passed.
    pub(crate) async fn sweep(&self) {
        self.in_batches("sweep", || self.store.message_sweep_expired(BATCH))
            .await;
    }

    /// Brings the per-minute counts up to date: one pass, or several while catching up on a long history
    /// (each pass counts at most an hour), unless another process is at it.
    pub async fn roll_up(&self) {
        for _ in 0..48 {
            match self.store.event_rollup(ROLLUP_KEEP).await {
                Ok(Some(done)) if Utc::now() - done > chrono::Duration::minutes(3) => continue,
                Ok(_) => return,
                Err(e) => return tracing::warn!(error = %e, "rollup failed"),
            }
        }
    }

    /// Maintains the history: creates the day partitions ahead (and drops those past the retention), then moves
    /// every finished message that may move out of the hot table, one bounded batch (one transaction) at a time,
    /// walking the hot table once from its oldest message. Resumable by construction: a pass that stops (a leader
    /// change, a restart) has committed what it moved, and the next pass walks again from the start.
    pub async fn history(&self) {
        match self
            .store
            .history_partitions(self.retention, HISTORY_DAYS_AHEAD)
            .await
        {
            Ok(changes) => {
                for c in changes {
                    tracing::info!(day = %c.day, action = %c.action, "history partition");
                    let task = if c.action == "dropped" {
                        "history_drop_day"
                    } else {
                        "history_create_day"
                    };
                    self.metrics
                        .maintenance_rows
                        .with_label_values(&[task])
                        .inc();
                }
            }
            // Without the partitions the move below fails too (nowhere to put the rows): it is tried anyway, and
            // the next pass tries both again.
            Err(e) => tracing::warn!(error = %e, "history partitions could not be maintained"),
        }
        let before = Utc::now()
            - chrono::Duration::from_std(self.history_after).unwrap_or(chrono::Duration::MAX);
        let mut after = None;
        let mut total = 0;
        loop {
            match self.store.history_move(before, after, BATCH).await {
                Ok(batch) => {
                    self.metrics
                        .maintenance_rows
                        .with_label_values(&["history_move"])
                        .inc_by(batch.moved as u64);
                    total += batch.moved;
                    match batch.resume_after {
                        Some(id) => after = Some(id),
                        None => break,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "history mover failed");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(moved = total, "finished messages moved to the history");
        }
        let callbacks_before = Utc::now()
            - chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        self.in_batches("callback_prune", || {
            self.store.callback_prune(callbacks_before, BATCH)
        })
        .await;
    }

    /// Refreshes every gauge sampled from the database.
    pub async fn sample(&self) {
        self.sample_counts().await;
        self.sample_gauges().await;
    }

    /// Live messages by channel and status (the one sample whose cost grows with the backlog).
    async fn sample_counts(&self) {
        let m = &self.metrics;
        if let Ok(rows) = self.store.stats_live().await {
            for ch in &self.channels {
                for status in ["accepted", "scheduled", "processing"] {
                    let n = rows
                        .iter()
                        .find(|r| &r.channel == ch && r.status == status)
                        .map_or(0, |r| r.count);
                    m.queue_messages.with_label_values(&[ch, status]).set(n);
                }
            }
        }
    }

    /// The gauges that cost the same whatever the backlog: oldest due message, paused channels.
    async fn sample_gauges(&self) {
        let m = &self.metrics;
        if let Ok(rows) = self.store.stats_oldest_due().await {
            for ch in &self.channels {
                let age = rows.iter().find(|(c, _)| c == ch).map_or(0.0, |(_, a)| *a);
                m.oldest_due.with_label_values(&[ch]).set(age);
            }
        }
        // Fallback steps logged since the last sample, by any worker's transaction: taken (deleted) here, so
        // each is counted once across the fleet.
        if let Ok(rows) = self.store.fallback_log_take().await {
            for r in rows {
                m.fallback_steps
                    .with_label_values(&[&r.event, &r.trigger, &r.from_channel, &r.to_channel])
                    .inc_by(u64::try_from(r.count).unwrap_or(0));
            }
        }
        if let Ok(paused) = self.store.channel_paused().await {
            for ch in &self.channels {
                let is = paused.iter().any(|p| &p.channel == ch);
                m.channel_paused.with_label_values(&[ch]).set(i64::from(is));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_takes_at_most_a_hundredth_of_the_time() {
        let five = Duration::from_secs(5);
        assert_eq!(next_count_after(five, Duration::from_millis(3)), five);
        assert_eq!(
            next_count_after(five, Duration::from_millis(220)),
            Duration::from_secs(22)
        );
        assert_eq!(
            next_count_after(five, Duration::from_secs(10)),
            COUNT_MAX_WAIT
        );
        // A configured interval longer than the cap is kept.
        let hour = Duration::from_secs(3600);
        assert_eq!(next_count_after(hour, Duration::from_secs(10)), hour);
    }
}
