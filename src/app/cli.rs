//! What the `tidings` subcommands do (argument parsing lives in `main.rs`).

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use uuid::Uuid;

use super::database_url;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::telemetry::{Telemetry, TelemetryConfig};
use crate::worker::Worker;

/// Loads the config file, or the defaults when no file is given.
pub fn load_config(path: Option<&Path>) -> Result<Config> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

/// `tidings migrate`: applies migrations, then writes the config's channels.
pub async fn migrate(config: &Config) -> Result<()> {
    let store = Store::connect(&database_url()?, 2).await?;
    store.migrate().await?;
    store.channel_sync(config).await?;
    println!(
        "migrations applied; {} channel(s) synced from the config",
        config.channels.len()
    );
    Ok(())
}

/// `tidings worker`: runs a worker pool until SIGTERM/SIGINT, serving `/metrics`, `/healthz`, `/readyz` and
/// `/receipts/{channel}` (for the channels with `receipt_secret_env`).
pub async fn worker(config: Config) -> Result<()> {
    // Signals first: SIGTERM during start-up (say, a deploy rolling back at once) is a clean exit, not a kill.
    let shutdown = Shutdown::new();
    let signal = crate::shutdown::signal_listener();
    let stop = shutdown.stop.clone();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("signal received: stopping");
        stop.cancel();
    });
    if config.channels.is_empty() {
        return Err(Error::Config(
            "no [channels.NAME] table: the worker would have nothing to send".into(),
        ));
    }
    let start = async {
        let store = Store::connect(&database_url()?, config.worker.max_connections).await?;
        if !store.migrations_current().await.unwrap_or(false) {
            return Err(Error::Config(
                "the database is not migrated to this version: run `tidings migrate` first".into(),
            ));
        }
        store.channel_sync(&config).await?;
        Ok(store)
    };
    let store = tokio::select! {
        store = start => store?,
        _ = shutdown.stop.cancelled() => return Ok(()),
    };
    // Traces: only when the OTEL_* variables ask for them (read before the worker claims anything, so a bad
    // value stops the start).
    let telemetry = TelemetryConfig::from_env()?
        .map(|c| Telemetry::start(&c))
        .transpose()?;
    if telemetry.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP (OTEL_* variables)");
    }
    let result = Worker::new(config, store)
        .shutdown(shutdown)
        .telemetry(telemetry.clone())
        .serve_http()
        .run()
        .await;
    if let Some(t) = telemetry {
        t.shutdown().await;
    }
    result
}

/// `tidings serve`: the HTTP API of `[api]` until SIGTERM/SIGINT.
pub async fn serve(config: Config) -> Result<()> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signal = crate::shutdown::signal_listener();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("signal received: stopping");
        stop.cancel();
    });
    let store = Store::connect(&database_url()?, config.api.max_connections).await?;
    crate::api::serve(config, store, shutdown).await
}

/// `tidings enqueue --file msgs.jsonl`: one JSON message per line (the keys of `tidings.enqueue`), sent in
/// batches; a bad line stops the run with its line number, and earlier batches stay enqueued.
pub async fn enqueue_file(path: &Path, batch: usize, progress: bool) -> Result<u64> {
    let store = Store::connect(&database_url()?, 2).await?;
    let file =
        std::fs::File::open(path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = if progress {
        indicatif::ProgressBar::new(size)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {msg} ({elapsed}, eta {eta})",
        )
        .expect("template"),
    );
    let reader = std::io::BufReader::new(file);
    let mut rows: Vec<serde_json::Value> = Vec::with_capacity(batch);
    // The file line of each row: blank lines may sit between the rows of one batch.
    let mut lines: Vec<usize> = Vec::with_capacity(batch);
    let mut total = 0u64;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::Other(format!("{}:{}: {e}", path.display(), i + 1)))?;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| Error::Other(format!("{}:{}: not JSON: {e}", path.display(), i + 1)))?;
        rows.push(value);
        lines.push(i + 1);
        if rows.len() == batch {
            total += send_batch(&store, &rows, path, &lines).await?;
            bar.set_message(format!("{total} enqueued"));
            rows.clear();
            lines.clear();
        }
    }
    if !rows.is_empty() {
        total += send_batch(&store, &rows, path, &lines).await?;
    }
    bar.finish_and_clear();
    Ok(total)
}

async fn send_batch(
    store: &Store,
    rows: &[serde_json::Value],
    path: &Path,
    lines: &[usize],
) -> Result<u64> {
    let result =
        tidings_client::enqueue_json(store.pool(), serde_json::Value::Array(rows.to_vec())).await;
    match result {
        Ok(ids) => Ok(ids.len() as u64),
        Err(tidings_client::Error::Invalid { field, rule, index }) => Err(Error::Other(format!(
            "{}:{}: {field}: {rule}",
            path.display(),
            lines[index.unwrap_or(0).min(lines.len() - 1)]
        ))),
        Err(tidings_client::Error::Database(e)) => Err(e.into()),
        Err(e) => Err(Error::Other(e.to_string())),
    }
}

/// `tidings status ID`: the message and its full timeline.
pub async fn status(id: &str, json: bool) -> Result<bool> {
    let id: Uuid = id
        .parse()
        .map_err(|_| Error::Other(format!("ID: {id:?} is not a UUID")))?;
    let store = Store::connect(&database_url()?, 2).await?;
    let Some(message) = store.message_get(id).await? else {
        return Ok(false);
    };
    let events = store.message_events(id).await?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "message": message, "events": events })
        )?;
        return Ok(true);
    }
    for key in [
        "id",
        "channel",
        "status",
        "use_case",
        "priority",
        "attempts",
        "max_attempts",
        "run_at",
        "expires_at",
        "scheduled_for",
        "reference",
        "provider_message_id",
        "last_error",
        "tags",
        "created_at",
    ] {
        let v = &message[key];
        if !v.is_null() {
            writeln!(
                out,
                "{key:>20}  {}",
                v.as_str().map_or_else(|| v.to_string(), str::to_owned)
            )?;
        }
    }
    writeln!(
        out,
        "{:>20}  {}",
        "recipient",
        crate::mask::mask_recipient(&message["recipient"])
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<27} {:<16} {:<22} {:>7}  detail",
        "at", "status", "reason", "attempt"
    )?;
    // Providers echo the receiver in error bodies, which the events keep: mask it there too.
    let phone = message["recipient"]["phone"].as_str().unwrap_or("");
    let mask = |text: String| crate::mask::mask_phone_in(&text, phone).unwrap_or(text);
    for e in events {
        writeln!(
            out,
            "{:<27} {:<16} {:<22} {:>7}  {}",
            e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            e.status.as_str(),
            e.reason,
            e.attempt.map_or(String::new(), |a| a.to_string()),
            mask(e.detail.map_or(String::new(), |d| d.to_string()))
        )?;
    }
    Ok(true)
}

/// `tidings stats`: live counts, the last 24 h, oldest due age, paused channels, last errors.
pub async fn stats(json: bool) -> Result<()> {
    let store = Store::connect(&database_url()?, 2).await?;
    let live = store.stats_live().await?;
    let recent = store.stats_recent(Duration::from_secs(24 * 3600)).await?;
    let oldest = store.stats_oldest_due().await?;
    let paused = store.channel_paused().await?;
    let errors = store.stats_last_errors(10).await?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "live": live, "last_24h": recent,
                "oldest_due_seconds": oldest.iter().map(|(c, s)| (c.clone(), *s)).collect::<std::collections::BTreeMap<_, _>>(),
                "paused": paused, "last_errors": errors,
            })
        )?;
        return Ok(());
    }
    writeln!(out, "live messages (accepted / scheduled / processing):")?;
    table(&mut out, &live)?;
    writeln!(
        out,
        "\nstatus changes in the last 24 h (an enqueue counts as accepted or scheduled):"
    )?;
    table(&mut out, &recent)?;
    writeln!(out, "\noldest due message not yet claimed:")?;
    if oldest.is_empty() {
        writeln!(out, "  (none due)")?;
    }
    for (channel, secs) in &oldest {
        writeln!(out, "  {channel:<20} {secs:.1} s")?;
    }
    writeln!(out, "\npaused channels:")?;
    if paused.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for p in &paused {
        writeln!(
            out,
            "  {:<20} until {}  ({})",
            p.channel,
            p.paused_until.format("%H:%M:%S%.3f"),
            p.reason.as_deref().unwrap_or("")
        )?;
    }
    writeln!(out, "\nlast errors:")?;
    if errors.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for e in &errors {
        writeln!(
            out,
            "  {}  {:<12} {}  {:<15} {:<20} {}",
            e.at.format("%m-%d %H:%M:%S"),
            e.channel,
            e.message_id,
            e.status,
            e.reason,
            e.detail
                .as_ref()
                .map_or(String::new(), |d| truncate(&d.to_string(), 80))
        )?;
    }
    Ok(())
}

fn table(out: &mut impl Write, rows: &[crate::store::StatusCount]) -> Result<()> {
    if rows.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for r in rows {
        writeln!(out, "  {:<20} {:<16} {:>10}", r.channel, r.status, r.count)?;
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}
