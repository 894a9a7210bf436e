//! A worker process: producer, executors and completer, plus the LISTEN task, the maintenance services, the status
//! callbacks' deliverer (when the config asks for callbacks; its own slots) and (optionally) the inbound HTTP
//! listener, assembled in one place ([`Worker`]), started together and shut down in order.
//!
//! Shutdown (SIGTERM/SIGINT): stop claiming; let in-flight sends finish for up to `grace`; then release what
//! is left (`accepted`, reason `released`); flush the completer; return.

mod completer;
mod executor;
mod pauses;
mod producer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::callbacks::Deliverer;
use crate::config::Config;
use crate::error::Result;
use crate::maintenance::Maintenance;
use crate::metrics::Metrics;
use crate::provider::Providers;
use crate::receipts::Receipts;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::telemetry::Telemetry;
use completer::Completer;
use executor::{ChannelRuntime, Executor};
use producer::Producer;

/// The NOTIFY channel `tidings.enqueue_many` signals when it adds due messages.
pub(crate) const NOTIFY_CHANNEL: &str = "tidings";

/// How adapters and receipt listeners read credentials: the process environment, or a map (tests, demo).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// One worker process's pool: the one way to assemble and run a worker. The CLI, the demo, the benchmark and
/// the tests all start workers through it.
///
/// ```no_run
/// # async fn run(config: tidings::config::Config, store: tidings::store::Store) -> tidings::Result<()> {
/// use tidings::worker::Worker;
/// let running = Worker::new(config, store).serve_http().start().await?;
/// running.wait().await
/// # }
/// ```
pub struct Worker {
    config: Config,
    store: Store,
    providers: Option<Providers>,
    env: EnvLookup,
    metrics: Metrics,
    shutdown: Shutdown,
    http: Option<SocketAddr>,
    telemetry: Option<Telemetry>,
}

/// A started worker: its HTTP address (when it serves one) and the task running it.
pub struct RunningWorker {
    /// Where `/metrics`, `/healthz`, `/readyz` and `/receipts/{channel}` answer, when served.
    pub http_addr: Option<SocketAddr>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningWorker {
    /// Waits until the worker has stopped (after `shutdown.stop`) and drained.
    pub async fn wait(self) -> Result<()> {
        self.task
            .await
            .map_err(|e| crate::Error::Other(format!("worker task: {e}")))?
    }
}

impl Worker {
    /// A worker for the channels of `config` over `store`. By default its adapters read credentials from the
    /// process environment, it has its own metrics registry and shutdown pair, and it serves no HTTP.
    pub fn new(config: Config, store: Store) -> Self {
        Worker {
            config,
            store,
            providers: None,
            env: Arc::new(|var| std::env::var(var).ok()),
            metrics: Metrics::new(),
            shutdown: Shutdown::new(),
            http: None,
            telemetry: None,
        }
    }

    /// Makes trace spans (attempts, claims, completions) with this pipeline; without it, none are built.
    /// The caller keeps a clone to [`Telemetry::shutdown`] it after the worker has stopped.
    pub fn telemetry(mut self, telemetry: Option<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Reads credentials (adapters' and receipt secrets) through `env` instead of the process environment.
    pub fn env(mut self, env: EnvLookup) -> Self {
        self.env = env;
        self
    }

    /// Uses these adapters (one per configured channel) instead of building them from the config.
    pub fn providers(mut self, providers: Providers) -> Self {
        self.providers = Some(providers);
        self
    }

    /// Feeds this metrics registry.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Stops on this shutdown pair.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Also serves `/metrics`, `/healthz`, `/readyz` and `/receipts/{channel}` on the config's `[http] listen`.
    pub fn serve_http(self) -> Self {
        let listen = self.config.http.listen;
        self.serve_http_on(listen)
    }

    /// Like [`Worker::serve_http`], on `listen` (`127.0.0.1:0` picks a free port).
    pub fn serve_http_on(mut self, listen: SocketAddr) -> Self {
        self.http = Some(listen);
        self
    }

    /// Builds what is missing (adapters, receipt secrets), binds the HTTP listener, and starts the pool. Errors
    /// here (a bad channel setting, a missing credential, a taken port) come before anything is claimed.
    pub async fn start(self) -> Result<RunningWorker> {
        let Worker {
            config,
            store,
            providers,
            env,
            metrics,
            shutdown,
            http,
            telemetry,
        } = self;
        let lookup = |var: &str| env(var);
        let providers = match providers {
            Some(p) => p,
            None => crate::provider::build_all_with(&config, &lookup)?,
        };
        let callbacks = Deliverer::from_config(&config, store.clone(), metrics.clone(), &lookup)?;
        let (http_addr, server) = match http {
            Some(listen) => {
                let receipts = Receipts::from_config(&config, &lookup)?;
                let channels = receipts.channels().join(", ");
                let (addr, task) = crate::server::serve(
                    listen,
                    store.clone(),
                    metrics.clone(),
                    receipts,
                    shutdown.abort.clone(),
                )
                .await?;
                tracing::info!(%addr, receipt_channels = %channels, "serving /metrics, /healthz, /readyz, /receipts/{{channel}}");
                (Some(addr), Some(task))
            }
            None => (None, None),
        };
        let pool = Pool {
            config,
            store,
            providers,
            callbacks,
            metrics,
            shutdown: shutdown.clone(),
            telemetry,
        };
        let task = tokio::spawn(async move {
            let result = pool.run().await;
            shutdown.abort.cancel();
            if let Some(server) = server {
                let _ = server.await;
            }
            result
        });
        Ok(RunningWorker { http_addr, task })
    }

    /// Starts the worker and waits until it has stopped.
    pub async fn run(self) -> Result<()> {
        self.start().await?.wait().await
    }
}

/// The assembled pool, run by [`Worker::start`].
struct Pool {
    config: Config,
    store: Store,
    providers: Providers,
    callbacks: Option<Deliverer>,
    metrics: Metrics,
    shutdown: Shutdown,
    telemetry: Option<Telemetry>,
}

impl Pool {
    /// Runs until `shutdown.stop` fires, then drains as described in the module docs.
    async fn run(self) -> Result<()> {
        let Pool {
            config,
            store,
            providers,
            callbacks,
            metrics,
            shutdown,
            telemetry,
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
                    policy: ch.policy.clone(),
                    timeout: ch.timeout,
                    kind: ch.kind.clone(),
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
            pauses: Default::default(),
            store: store.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            telemetry: telemetry.clone(),
        });

        let wakeups: Vec<Arc<Notify>> = (0..w.claimers).map(|_| Arc::new(Notify::new())).collect();
        let listener = tokio::spawn(listen(store.clone(), wakeups.clone(), shutdown.clone()));
        let maintenance = tokio::spawn(
            Maintenance::new(store.clone(), metrics.clone(), &config).run(shutdown.stop.clone()),
        );
        // Status callbacks, with their own slots: a slow receiver never holds a sending slot.
        let callbacks = callbacks.map(|d| tokio::spawn(d.run(shutdown.clone())));

        // Bounded: when the database is slow, executors wait here, slots stay taken, claiming stops.
        let (tx, rx) = mpsc::channel(w.complete_batch * w.complete_parallelism * 2);
        let completer = tokio::spawn(
            Completer::new(
                store.clone(),
                metrics.clone(),
                w.complete_batch,
                w.complete_parallelism,
            )
            .traced(telemetry)
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
        if let Some(callbacks) = callbacks {
            let _ = callbacks.await;
        }
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
