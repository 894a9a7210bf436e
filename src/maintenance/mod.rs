//! Background services every worker runs: the rescuer (expired leases), the sweeper (overdue waiting
//! messages), the pruner (old finished rows) and the sampler (queue gauges). Several workers running them at
//! once is safe: each statement locks with SKIP LOCKED and works in bounded batches.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// Rows per maintenance statement: small enough never to hold locks for long.
const BATCH: i64 = 1000;

/// The maintenance services of one worker.
pub struct Maintenance {
    store: Store,
    metrics: Metrics,
    rescue_interval: Duration,
    prune_interval: Duration,
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
            retention: config.worker.retention,
            sample_interval: Duration::from_secs(5),
            channels: config.channels.keys().cloned().collect(),
        }
    }

    /// Runs every service until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut rescue = tokio::time::interval(self.rescue_interval);
        let mut prune = tokio::time::interval(self.prune_interval);
        let mut sample = tokio::time::interval(self.sample_interval);
        for t in [&mut rescue, &mut prune, &mut sample] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = rescue.tick() => {
                    self.rescue().await;
                    self.sweep().await;
                }
                _ = prune.tick() => self.prune().await,
                _ = sample.tick() => self.sample().await,
            }
        }
    }

    /// Makes messages whose lease expired claimable again (or finishes them when attempts or validity ran out).
    pub async fn rescue(&self) {
        loop {
            match self.store.message_rescue(BATCH).await {
                Ok(0) => return,
                Ok(n) => {
                    self.metrics
                        .maintenance_rows
                        .with_label_values(&["rescue"])
                        .inc_by(n);
                    tracing::warn!(rescued = n, "leases expired: messages handed back");
                    if (n as i64) < BATCH {
                        return;
                    }
                }
                Err(e) => return tracing::warn!(error = %e, "rescuer failed"),
            }
        }
    }

    /// Expires waiting messages whose validity passed.
    pub async fn sweep(&self) {
        loop {
            match self.store.message_sweep_expired(BATCH).await {
                Ok(n) => {
                    self.metrics
                        .maintenance_rows
                        .with_label_values(&["sweep"])
                        .inc_by(n);
                    if (n as i64) < BATCH {
                        return;
                    }
                }
                Err(e) => return tracing::warn!(error = %e, "sweeper failed"),
            }
        }
    }

    /// Deletes finished messages older than the retention, one small batch at a time.
    pub async fn prune(&self) {
        let before = Utc::now()
            - chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        let mut total = 0;
        loop {
            match self.store.message_prune(before, BATCH).await {
                Ok(n) => {
                    self.metrics
                        .maintenance_rows
                        .with_label_values(&["prune"])
                        .inc_by(n as u64);
                    total += n;
                    if n < BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruner failed");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(pruned = total, "old finished messages deleted");
        }
    }

    /// Refreshes the gauges sampled from the database.
    pub async fn sample(&self) {
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
        if let Ok(rows) = self.store.stats_oldest_due().await {
            for ch in &self.channels {
                let age = rows.iter().find(|(c, _)| c == ch).map_or(0.0, |(_, a)| *a);
                m.oldest_due.with_label_values(&[ch]).set(age);
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
