//! `tidings bench`: the burn-down benchmark (bulk-enqueue N, drain with the worker pool, verify in the
//! database) and the steady-rate latency mode. Timed the way `../shared/peers` times the other queues: drain
//! from the first completed message to the moment the database shows all N final.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tidings_client::NewMessage;
use uuid::Uuid;

use super::bench_store::BenchStore;
use super::sandbox_server::{Sandbox, SandboxOptions};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::telemetry::{Telemetry, TelemetryConfig};
use crate::worker::Worker;

const CHANNEL: &str = "bench";
const FUTURE_CHANNEL: &str = "bench-future";
/// The channel of the finished messages `--history-messages` puts in the history.
const HISTORY_CHANNEL: &str = "bench-history";

/// Which provider the benchmark drains to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchProvider {
    /// In-process no-op (measures the queue alone).
    Noop,
    /// The sandbox server over loopback HTTP.
    Sandbox,
}

/// `tidings bench` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Messages to enqueue and drain.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) messages: usize,
    /// Print one JSON object on the last line.
    #[arg(long)]
    pub(crate) json: bool,
    /// Worker pools (each with its own connection pool, as separate processes would have).
    #[arg(long, default_value_t = 1)]
    pub(crate) workers: usize,
    /// Messages in flight per worker [default: 4000 with the no-op provider, 256 over HTTP to the sandbox, where
    /// thousands of concurrent connections cost more than they bring].
    #[arg(long)]
    pub(crate) concurrency: Option<usize>,
    /// Most messages per claim (2000 and 2000 per completion, with 4000 in flight, drained 100,000 messages 16%
    /// faster than 1000, 1000 and 2000 here: 8 alternating rounds, README, Performance).
    #[arg(long, default_value_t = 2000)]
    pub(crate) claim_batch: usize,
    /// Claim loops per worker sharing its slots.
    #[arg(long, default_value_t = 1)]
    pub(crate) claimers: usize,
    /// Most outcomes per completion statement.
    #[arg(long, default_value_t = 2000)]
    pub(crate) complete_batch: usize,
    /// Completion statements in flight per worker.
    #[arg(long, default_value_t = 4)]
    pub(crate) complete_parallelism: usize,
    /// Messages per enqueue_many call.
    #[arg(long, default_value_t = 1000)]
    pub(crate) enqueue_batch: usize,
    /// Parallel enqueue connections (4 keeps both cores busy while each client serialises its next batch:
    /// 76-80k msgs/s here, against 66-68k with 2).
    #[arg(long, default_value_t = 4)]
    pub(crate) enqueue_connections: usize,
    /// Provider to drain to.
    #[arg(long, value_enum, default_value_t = BenchProvider::Noop)]
    pub(crate) provider: BenchProvider,
    /// With `--provider sandbox`: the sandbox waits this long before every answer, as a remote provider does
    /// (then a worker's throughput is bounded by its messages in flight, and more worker processes add up).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub(crate) provider_latency: Duration,
    /// Give every message a W3C traceparent (of a trace of its own), as a traced producer would; the worker's
    /// attempt spans then carry a link each. Traces are exported when the `OTEL_*` variables say so.
    #[arg(long)]
    pub(crate) traceparent: bool,
    /// Steady-rate latency mode: enqueue one message per call at this many per second (instead of bulk).
    #[arg(long)]
    pub(crate) rate: Option<u32>,
    /// How long the steady-rate mode enqueues.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Future-scheduled rows to add first (they stay in the claim index; the drain must not slow down). The table is
    /// then vacuumed, as a long-lived table holding them would have been, before the clock starts.
    #[arg(long, default_value_t = 0)]
    pub(crate) scheduled_rows: usize,
    /// Finished messages the history holds first (three events each, created over the last 7 days, on a channel
    /// of their own): the drain must not slow down with a long history. Added once; a later run with as many or
    /// fewer reuses them.
    #[arg(long, default_value_t = 0)]
    pub(crate) history_messages: usize,
}

/// What the benchmark measured.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct BenchResult {
    /// tidings version.
    pub(crate) version: &'static str,
    /// `burn-down` or `steady-rate`.
    pub(crate) mode: &'static str,
    /// Messages enqueued.
    pub(crate) messages: usize,
    /// Bulk enqueue rate (burn-down) or the offered rate (steady-rate).
    pub(crate) enqueue_per_sec: f64,
    /// Messages per second from the first completion to all final in the database.
    pub(crate) drain_per_sec: f64,
    /// Burn-down: enqueue → sent p50 (queueing included). Steady-rate: committed enqueue → claim p50.
    pub(crate) latency_p50_ms: f64,
    /// Same, p99.
    pub(crate) latency_p99_ms: f64,
    /// Messages not final (or not sent) at the end: must be 0.
    pub(crate) lost: i64,
    /// Worker pools.
    pub(crate) workers: usize,
    /// Concurrency per worker.
    pub(crate) concurrency: usize,
    /// Provider mode.
    pub(crate) provider: String,
    /// Peak resident memory of this process, MiB (the workers run in it).
    pub(crate) peak_rss_mib: f64,
    /// Burn-down: CPU time this process (the worker pools, plus the benchmark's own polling) spent per message
    /// drained, in microseconds — the cycles a worker takes from a database on the same cores. 0 when unknown.
    pub(crate) worker_cpu_us_per_msg: f64,
}

/// Runs the benchmark against `DATABASE_URL` and prints the result.
pub async fn run(args: BenchArgs) -> Result<()> {
    let result = measure(&args).await?;
    println!("messages           {}", result.messages);
    println!(
        "mode               {} ({} provider, {} worker(s) x {} in flight)",
        result.mode, result.provider, result.workers, result.concurrency
    );
    println!("enqueue            {:.0} msgs/s", result.enqueue_per_sec);
    println!("drain              {:.0} msgs/s", result.drain_per_sec);
    println!(
        "latency p50 / p99  {:.1} ms / {:.1} ms",
        result.latency_p50_ms, result.latency_p99_ms
    );
    println!("lost               {}", result.lost);
    println!("peak RSS           {:.0} MiB", result.peak_rss_mib);
    if result.worker_cpu_us_per_msg > 0.0 {
        println!(
            "worker CPU         {:.1} us per message drained",
            result.worker_cpu_us_per_msg
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&result).expect("json"));
    }
    if result.lost != 0 {
        return Err(Error::Other(format!("{} messages not sent", result.lost)));
    }
    Ok(())
}

/// Runs the benchmark and returns the figures.
pub(crate) async fn measure(args: &BenchArgs) -> Result<BenchResult> {
    if args.messages == 0 && args.rate.is_none() {
        return Err(Error::Config("--messages: must be at least 1".into()));
    }
    if !args.provider_latency.is_zero() && args.provider == BenchProvider::Noop {
        return Err(Error::Config(
            "--provider-latency: needs --provider sandbox".into(),
        ));
    }
    let url = super::database_url()?;
    let store = Store::connect(&url, (args.enqueue_connections as u32 + 2).max(4)).await?;
    store.migrate().await?;
    let sandbox = match args.provider {
        BenchProvider::Noop => None,
        BenchProvider::Sandbox => Some(
            Sandbox::start(
                "127.0.0.1:0".parse().expect("addr"),
                SandboxOptions {
                    latency: args.provider_latency,
                    ..SandboxOptions::default()
                },
            )
            .await?,
        ),
    };
    let config = bench_config(args, sandbox.as_ref().map(Sandbox::base_url))?;
    store.channel_sync(&config).await?;
    BenchStore(&store).reset(&[CHANNEL, FUTURE_CHANNEL]).await?;
    if args.scheduled_rows > 0 {
        prefill_future(&store, args.scheduled_rows).await?;
        // Rows that have waited for their date in a real table were vacuumed long ago. Without this, the
        // first autovacuum of the drain scans all of them (every page is still not all-visible), taking CPU from
        // the drain, and the run measures the prefill instead of the claim index.
        BenchStore(&store).vacuum().await?;
    }

    if args.history_messages > 0 {
        BenchStore(&store)
            .fill_history(HISTORY_CHANNEL, args.history_messages as i64, 7)
            .await?;
    }

    let telemetry = TelemetryConfig::from_env()?
        .map(|c| Telemetry::start(&c))
        .transpose()?;
    let result = match args.rate {
        None => burn_down(args, &url, &store, &config, &telemetry).await?,
        Some(rate) => steady_rate(args, rate, &url, &store, &config, &telemetry).await?,
    };
    if let Some(t) = telemetry {
        t.shutdown().await;
    }
    if let Some(s) = sandbox {
        s.stop().await;
    }
    store.pool().close().await;
    Ok(result)
}

fn bench_config(args: &BenchArgs, sandbox: Option<String>) -> Result<Config> {
    let provider = match &sandbox {
        None => "mode = \"noop\"".to_owned(),
        Some(base) => format!("base_url = \"{base}\""),
    };
    Config::parse(&format!(
        r#"
        [worker]
        concurrency = {}
        claim_batch = {}
        claimers = {}
        complete_batch = {}
        complete_parallelism = {}
        poll_interval = "100ms"
        max_connections = 8
        [channels.{CHANNEL}]
        kind = "sandbox"
        {provider}
        [channels.{FUTURE_CHANNEL}]
        kind = "sandbox"
        mode = "noop"
        "#,
        concurrency(args),
        args.claim_batch,
        args.claimers,
        args.complete_batch,
        args.complete_parallelism
    ))
}

fn concurrency(args: &BenchArgs) -> usize {
    args.concurrency.unwrap_or(match args.provider {
        BenchProvider::Noop => 4000,
        BenchProvider::Sandbox => 256,
    })
}

fn message(i: usize, channel: &str) -> NewMessage {
    NewMessage::sms(channel, format!("+3161{:07}", i % 10_000_000)).text("hello from tidings bench")
}

/// With `--traceparent`, the message with a trace context of its own, as a traced producer would send it.
fn traced(message: NewMessage, traceparent: bool) -> NewMessage {
    if !traceparent {
        return message;
    }
    let (trace, span) = (Uuid::new_v4().simple(), Uuid::new_v4().simple());
    message.traceparent(format!("00-{trace}-{}-01", &span.to_string()[..16]))
}

async fn prefill_future(store: &Store, n: usize) -> Result<()> {
    let at = Utc::now() + chrono::Duration::days(30);
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let batch: Vec<NewMessage> = chunk
            .iter()
            .map(|i| message(*i, FUTURE_CHANNEL).scheduled_for(at))
            .collect();
        tidings_client::enqueue_many(store.pool(), &batch).await?;
    }
    Ok(())
}

/// Starts the worker pools; returns their shutdown handle, join handles and metrics.
fn start_workers(
    args: &BenchArgs,
    url: &str,
    config: &Config,
    telemetry: &Option<Telemetry>,
) -> (
    Shutdown,
    Vec<tokio::task::JoinHandle<Result<()>>>,
    Vec<Metrics>,
) {
    let shutdown = Shutdown::new();
    let mut handles = Vec::new();
    let mut all_metrics = Vec::new();
    for _ in 0..args.workers {
        let mut config = config.clone();
        config.channels.remove(FUTURE_CHANNEL);
        let metrics = Metrics::new();
        all_metrics.push(metrics.clone());
        let shutdown = shutdown.clone();
        let url = url.to_owned();
        let telemetry = telemetry.clone();
        handles.push(tokio::spawn(async move {
            let store = Store::connect(&url, config.worker.max_connections).await?;
            Worker::new(config, store)
                .telemetry(telemetry)
                .metrics(metrics)
                .shutdown(shutdown)
                .run()
                .await
        }));
    }
    (shutdown, handles, all_metrics)
}

/// Final outcomes of the benchmark channel the completers have committed, across the pools (an atomic read).
fn written(metrics: &[Metrics]) -> u64 {
    metrics
        .iter()
        .map(|m| {
            m.transitions
                .with_label_values(&[CHANNEL, "sent", "provider_accepted"])
                .get()
        })
        .sum()
}

/// Messages whose provider call finished, across the pools (an atomic read, no database).
fn handled(metrics: &[Metrics]) -> u64 {
    metrics
        .iter()
        .map(|m| {
            m.send_duration
                .with_label_values(&[CHANNEL, "sent"])
                .get_sample_count()
        })
        .sum()
}

async fn burn_down(
    args: &BenchArgs,
    url: &str,
    store: &Store,
    config: &Config,
    telemetry: &Option<Telemetry>,
) -> Result<BenchResult> {
    let n = args.messages;
    // Enqueue: each connection builds its next batch just before sending it (building is part of a client's
    // cost, and holding a million messages in memory would hide the worker's own footprint).
    let batch = args.enqueue_batch.max(1);
    BenchStore(store)
        .warm(args.enqueue_connections.max(1))
        .await?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let traceparent = args.traceparent;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.enqueue_connections.max(1) {
        let next = next.clone();
        let pool = store.pool().clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(batch, std::sync::atomic::Ordering::Relaxed);
                if start >= n {
                    return Ok::<(), tidings_client::Error>(());
                }
                let messages: Vec<NewMessage> = (start..(start + batch).min(n))
                    .map(|i| traced(message(i, CHANNEL), traceparent))
                    .collect();
                tidings_client::enqueue_many(&pool, &messages).await?;
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| Error::Other(e.to_string()))??;
    }
    let enqueue_secs = t.elapsed().as_secs_f64();

    let (shutdown, handles, metrics) = start_workers(args, url, config, telemetry);
    let deadline = Instant::now() + Duration::from_secs(600);
    // First completion: the first provider call to finish (the harness's "first handler completion").
    let first = loop {
        if handled(&metrics) > 0 {
            break Instant::now();
        }
        if Instant::now() > deadline {
            return Err(Error::Other("no message was handled within 600 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let cpu_first = process_cpu_seconds();
    // Drained: the completer has committed a final outcome for every message (it counts only the rows its
    // statement changed, after the commit). An atomic read: polling the database for live rows here cost a walk
    // of the claim and lease indexes, still full of the drained rows' entries, 65 ms per poll on 100,000 messages,
    // inside the measured time and on the same cores.
    while written(&metrics) < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut done = Instant::now();
    let cpu_done = process_cpu_seconds();
    // The database must agree (every message final); should it not yet, the drain ends when it does.
    while BenchStore(store).live(CHANNEL).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        done = Instant::now();
    }
    shutdown.stop.cancel();
    for h in handles {
        h.await.map_err(|e| Error::Other(e.to_string()))??;
    }
    let (_, sent, _) = BenchStore(store).counts(CHANNEL).await?;
    let (p50, p99) = BenchStore(store).latency(CHANNEL).await?;
    Ok(BenchResult {
        version: env!("CARGO_PKG_VERSION"),
        mode: "burn-down",
        messages: n,
        enqueue_per_sec: n as f64 / enqueue_secs,
        drain_per_sec: n as f64 / (done - first).as_secs_f64().max(1e-6),
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        lost: n as i64 - sent,
        workers: args.workers,
        concurrency: concurrency(args),
        provider: format!("{:?}", args.provider).to_lowercase(),
        peak_rss_mib: peak_rss_mib(),
        worker_cpu_us_per_msg: match (cpu_first, cpu_done) {
            (Some(a), Some(b)) => (b - a) * 1e6 / n as f64,
            _ => 0.0,
        },
    })
}

async fn steady_rate(
    args: &BenchArgs,
    rate: u32,
    url: &str,
    store: &Store,
    config: &Config,
    telemetry: &Option<Telemetry>,
) -> Result<BenchResult> {
    if rate == 0 {
        return Err(Error::Config("--rate: must be at least 1".into()));
    }
    let (shutdown, handles, _metrics) = start_workers(args, url, config, telemetry);
    // Let the pools connect and LISTEN before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = (rate as f64 * args.duration.as_secs_f64()).round() as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let traceparent = args.traceparent;
    let t = Instant::now();
    for i in 0..total {
        tick.tick().await;
        let pool = store.pool().clone();
        tasks.spawn(async move {
            let id = traced(message(i, CHANNEL), traceparent)
                .enqueue(&pool)
                .await?;
            Ok::<(Uuid, DateTime<Utc>), tidings_client::Error>((id, Utc::now()))
        });
    }
    let offered = total as f64 / t.elapsed().as_secs_f64();
    let mut committed = Vec::with_capacity(total);
    while let Some(r) = tasks.join_next().await {
        committed.push(r.map_err(|e| Error::Other(e.to_string()))??);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while BenchStore(store).live(CHANNEL).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.stop.cancel();
    for h in handles {
        h.await.map_err(|e| Error::Other(e.to_string()))??;
    }
    let ids: Vec<Uuid> = committed.iter().map(|(id, _)| *id).collect();
    let started: std::collections::HashMap<Uuid, DateTime<Utc>> =
        BenchStore(store).started(&ids).await?.into_iter().collect();
    // Committed enqueue (the client saw the commit) → the worker started the attempt (claim).
    let mut lat: Vec<f64> = committed
        .iter()
        .filter_map(|(id, at)| {
            started
                .get(id)
                .map(|s| ((*s - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0).max(0.0))
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    let (_, sent, _) = BenchStore(store).counts(CHANNEL).await?;
    Ok(BenchResult {
        version: env!("CARGO_PKG_VERSION"),
        mode: "steady-rate",
        messages: total,
        enqueue_per_sec: offered,
        drain_per_sec: offered,
        latency_p50_ms: pct(0.50),
        latency_p99_ms: pct(0.99),
        lost: total as i64 - sent,
        workers: args.workers,
        concurrency: concurrency(args),
        provider: format!("{:?}", args.provider).to_lowercase(),
        peak_rss_mib: peak_rss_mib(),
        worker_cpu_us_per_msg: 0.0,
    })
}

/// User plus system CPU time of this process so far (Linux `/proc/self/stat`, clock ticks of 10 ms).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces): utime and stime are the
    // 12th and 13th of them.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// VmHWM of this process (Linux), in MiB; 0 elsewhere.
pub(crate) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
