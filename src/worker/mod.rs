//! A worker process: producer, executors and completer, plus the LISTEN task and the maintenance services,
//! started together and shut down in order.
//!
//! Shutdown (SIGTERM/SIGINT): stop claiming; let in-flight sends finish for up to `grace`; then release what
//! is left (`accepted`, reason `released`); flush the completer; return.

pub mod completer;
pub mod executor;
pub mod producer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::config::Config;
use crate::error::Result;
use crate::maintenance::Maintenance;
use crate::metrics::Metrics;
use crate::policy::ChannelPolicy;
use crate::provider::Providers;
use crate::shutdown::Shutdown;
use crate::store::Store;
use completer::Completer;
use executor::{ChannelRuntime, Executor};
use producer::Producer;

/// The NOTIFY channel `tidings.enqueue_many` signals when it adds due messages.
pub const NOTIFY_CHANNEL: &str = "tidings";

/// One worker process's pool.
pub struct Worker {
    config: Config,
    store: Store,
    providers: Providers,
    metrics: Metrics,
    shutdown: Shutdown,
}

impl Worker {
    /// A worker over `store` with the adapters of `providers` (one per configured channel).
    pub fn new(
        config: Config,
        store: Store,
        providers: Providers,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> Self {
        Worker {
            config,
            store,
            providers,
            metrics,
            shutdown,
        }
    }

    /// Runs until `shutdown.stop` fires, then drains as described in the module docs.
    pub async fn run(self) -> Result<()> {
        let Worker {
            config,
            store,
            providers,
            metrics,
            shutdown,
        } = self;
        let w = &config.worker;
        let mut channels = BTreeMap::new();
        for (name, ch) in &config.channels {
            let provider = providers.get(name).cloned().ok_or_else(|| {
                crate::Error::Config(format!("channels.{name}: no adapter built"))
            })?;
            channels.insert(
                name.clone(),
                ChannelRuntime {
                    provider,
                    policy: ChannelPolicy::from_config(name, ch)?,
                    timeout: ch.timeout,
                    kind: ch.kind.clone(),
                    frequency_cap: ch.frequency_cap.as_ref().map(|f| (f.max, f.per)),
                    sent_duration: metrics.send_duration.with_label_values(&[name, "sent"]),
                },
            );
        }
        let unlimited: Vec<String> = config
            .channels
            .iter()
            .filter(|(_, c)| c.rate_per_sec.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        let limited: Vec<(String, f64)> = config
            .channels
            .iter()
            .filter_map(|(n, c)| c.rate_per_sec.map(|r| (n.clone(), r)))
            .collect();
        let executor = Arc::new(Executor {
            channels,
            store: store.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        });

        let wakeups: Vec<Arc<Notify>> = (0..w.claimers).map(|_| Arc::new(Notify::new())).collect();
        let listener = tokio::spawn(listen(store.clone(), wakeups.clone(), shutdown.clone()));
        let maintenance = tokio::spawn(
            Maintenance::new(store.clone(), metrics.clone(), &config).run(shutdown.stop.clone()),
        );

        // Bounded: when the database is slow, executors wait here, slots stay taken, claiming stops.
        let (tx, rx) = mpsc::channel(w.complete_batch * w.complete_parallelism * 2);
        let completer = tokio::spawn(
            Completer::new(
                store.clone(),
                metrics.clone(),
                w.complete_batch,
                w.complete_parallelism,
            )
            .run(rx),
        );
        // `claimers` producers share the slots (one by default: claim loops contend across the whole fleet,
        // see `WorkerConfig::claimers`).
        let slots = Arc::new(Semaphore::new(w.concurrency));
        let producers: Vec<_> = wakeups
            .into_iter()
            .map(|wakeup| {
                tokio::spawn(
                    Producer {
                        store: store.clone(),
                        executor: executor.clone(),
                        slots: slots.clone(),
                        wakeup,
                        completions: tx.clone(),
                        unlimited: unlimited.clone(),
                        limited: limited.clone(),
                        claim_batch: w.claim_batch,
                        lease: w.lease,
                        poll_interval: w.poll_interval,
                    }
                    .run(),
                )
            })
            .collect();
        drop(tx);
        tracing::info!(
            concurrency = w.concurrency,
            claimers = w.claimers,
            channels = config.channels.len(),
            "worker started"
        );
        let mut tasks = Vec::new();
        for p in producers {
            tasks.push(p.await.expect("producer task"));
        }
        let inflight =
            |tasks: &Vec<tokio::task::JoinSet<()>>| tasks.iter().map(|t| t.len()).sum::<usize>();

        // Stop: wait for in-flight sends up to the grace period, then abort them (they release their messages).
        tracing::info!(inflight = inflight(&tasks), grace = ?w.grace, "stopping: draining in-flight messages");
        let drained = tokio::time::timeout(w.grace, async {
            for t in tasks.iter_mut() {
                while t.join_next().await.is_some() {}
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = inflight(&tasks),
                "grace period over: releasing in-flight messages"
            );
            shutdown.abort.cancel();
            for t in tasks.iter_mut() {
                while t.join_next().await.is_some() {}
            }
        }
        // Every sender is gone with the tasks and the producer: the completer flushes and returns.
        if tokio::time::timeout(Duration::from_secs(30), completer)
            .await
            .is_err()
        {
            tracing::error!(
                "completer did not finish flushing; leases will expire and the rescuer takes over"
            );
        }
        shutdown.abort.cancel();
        let _ = listener.await;
        let _ = maintenance.await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// LISTENs for enqueue notifications and rings every producer's `wakeup`. Reconnects on failure; the poll
/// covers the gap.
async fn listen(store: Store, wakeups: Vec<Arc<Notify>>, shutdown: Shutdown) {
    let wake = || wakeups.iter().for_each(|w| w.notify_one());
    loop {
        let mut listener = match PgListener::connect_with(store.pool()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile");
                tokio::select! {
                    _ = shutdown.stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
            tokio::select! {
                _ = shutdown.stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        // Anything enqueued while (re)connecting is found by the claim this wake-up triggers.
        wake();
        loop {
            tokio::select! {
                _ = shutdown.stop.cancelled() => return,
                n = listener.recv() => match n {
                    Ok(_) => wake(),
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}
