//! The store: sole owner of the PostgreSQL pool. One async fn per query file in `queries/`, named noun first
//! (`message_claim`, `channel_pause`), so all runtime SQL can be read, reviewed and EXPLAINed in one place.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool, Row};
use uuid::Uuid;

use crate::config::Config;
use crate::error::Result;
use crate::message::Message;
use crate::outcome::Outcome;

mod act;
mod callbacks;
mod history;
mod leader;
mod read;
mod receipt;
mod rollup;
mod ui_read;

pub use act::{MessageActParams, MessageAction};
pub use callbacks::{CallbackResult, CallbackRow, MessageCallback};
pub use history::{HistoryMoved, HistoryPartitionChange};
pub use leader::Leadership;
pub use read::{
    ChainRow, ChannelRow, EnqueueApiOutcome, EnqueueApiParams, LIST_SCAN_BUDGET, MessageListPage,
    MessageListParams, MessageRow,
};
pub(crate) use receipt::ReceiptParams;
pub use ui_read::TimelineMinute;

/// The migrations of `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

/// Parameters of [`Store::message_claim`].
#[derive(Debug, Clone)]
pub struct ClaimParams<'a> {
    /// Most rows to take.
    pub limit: i64,
    /// The lease the claimed rows are held under.
    pub lease_id: Uuid,
    /// How long the lease lasts.
    pub lease: Duration,
    /// Only messages of these channels.
    pub channels: &'a [String],
}

/// One outcome to write with [`Store::message_complete_many`].
#[derive(Debug, Clone)]
pub struct Completion {
    /// The message.
    pub id: Uuid,
    /// The lease the worker held on it.
    pub lease_id: Uuid,
    /// Its channel (for metrics; not written).
    pub channel: String,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// What happened.
    pub outcome: Outcome,
}

/// A row of the live/recent statistics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusCount {
    /// Channel name.
    pub channel: String,
    /// Status name.
    pub status: String,
    /// Messages.
    pub count: i64,
}

/// Fallback steps created or sent since the last sample, for one trigger and channel pair.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FallbackCount {
    /// `created` or `sent`.
    pub(crate) event: String,
    /// `rejected`, `sending_failed`, `expired` or `undelivered`.
    pub(crate) trigger: String,
    /// The channel of the message whose outcome triggered the step.
    pub(crate) from_channel: String,
    /// The step's channel.
    pub(crate) to_channel: String,
    /// Steps.
    pub(crate) count: i64,
}

/// A paused channel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PausedChannel {
    /// Channel name.
    pub(crate) channel: String,
    /// Paused until.
    pub(crate) paused_until: DateTime<Utc>,
    /// Why.
    pub(crate) reason: Option<String>,
}

/// A recent failure, for `tidings stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecentError {
    /// When.
    pub(crate) at: DateTime<Utc>,
    /// Channel.
    pub(crate) channel: String,
    /// Message.
    pub(crate) message_id: Uuid,
    /// Status it moved to.
    pub(crate) status: String,
    /// Reason word.
    pub(crate) reason: String,
    /// Provider answer and the like.
    pub(crate) detail: Option<Value>,
}

impl Store {
    /// Connects with at most `max_connections` connections.
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Store> {
        let options: PgConnectOptions = database_url.parse()?;
        // JIT off: PostgreSQL compiles a plan to machine code when its estimated cost passes jit_above_cost, and
        // on tables whose statistics are always behind (a queue's) estimates of millions of rows are common. The
        // dashboard's chart with a month of history ran 20 ms of work after 670 ms of compiling. Nothing here
        // runs long enough to win it back.
        let options = options
            .application_name("tidings")
            .options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            // sqlx pings every connection it hands out: one extra round trip per statement on the hot path.
            // Like HikariCP's aliveBypassWindowMs, check only connections that sat idle for a while (those are
            // the ones a database restart or a failover leaves dead); a busy connection that died fails its
            // statement, which every caller retries.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= Duration::from_millis(500) {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        Ok(Store { pool })
    }

    /// Wraps an existing pool (tests).
    pub fn from_pool(pool: PgPool) -> Store {
        Store { pool }
    }

    /// The pool, for listeners and the client crate's functions.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations (forward only; safe while older workers drain).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// True when every embedded migration has been applied.
    pub async fn migrations_current(&self) -> Result<bool> {
        let applied: i64 = sqlx::query_scalar(include_str!("queries/migrations_applied.sql"))
            .fetch_one(&self.pool)
            .await?;
        Ok(applied >= MIGRATOR.iter().count() as i64)
    }

    /// Writes every channel of the config to `tidings.channels` (kind and non-secret policy), and its
    /// `[callbacks] allowed_hosts` to `tidings.callback_hosts`.
    pub async fn channel_sync(&self, config: &Config) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (name, channel) in &config.channels {
            sqlx::query(include_str!("queries/channel_sync.sql"))
                .bind(name)
                .bind(&channel.kind)
                .bind(channel.policy_json())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(include_str!("queries/callback_hosts_sync.sql"))
            .bind(config.callback_hosts())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims due messages (see `queries/message_claim.sql`), with the plan pinned by
    /// `queries/message_claim_plan.sql` in the same transaction, and with each message's trace context
    /// ([`Message::traceparent`], [`Message::tracestate`]; `queries/message_claim_trace.sql`).
    pub async fn message_claim(&self, params: &ClaimParams<'_>) -> Result<Vec<Message>> {
        const SQL: &str = concat!(
            include_str!("queries/message_claim.sql"),
            include_str!("queries/message_claim_trace.sql")
        );
        self.claim(SQL, params).await
    }

    /// [`Store::message_claim`] without the trace context (`traceparent` and `tracestate` are `None`): what a
    /// worker with traces off claims, two columns fewer to send and decode per message.
    pub async fn message_claim_untraced(&self, params: &ClaimParams<'_>) -> Result<Vec<Message>> {
        self.claim(include_str!("queries/message_claim.sql"), params)
            .await
    }

    async fn claim(&self, sql: &'static str, params: &ClaimParams<'_>) -> Result<Vec<Message>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(include_str!("queries/message_claim_plan.sql"))
            .execute(&mut *tx)
            .await?;
        let claimed = sqlx::query_as(sql)
            .bind(params.limit)
            .bind(params.lease_id)
            .bind(params.lease.as_millis() as f64)
            .bind(params.channels)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Writes a batch of outcomes; returns the ids actually changed (the others lost their lease).
    pub async fn message_complete_many(&self, batch: &[Completion]) -> Result<Vec<Uuid>> {
        let n = batch.len();
        let mut ids = Vec::with_capacity(n);
        let mut leases = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut run_ats: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
        let mut spent = Vec::with_capacity(n);
        // Borrowed from the batch: binding copies each value once, into the statement's arrays.
        let mut provider_ids: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut last_errors: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut reasons: Vec<&str> = Vec::with_capacity(n);
        let mut details: Vec<Option<&Value>> = Vec::with_capacity(n);
        let mut started: Vec<DateTime<Utc>> = Vec::with_capacity(n);
        for c in batch {
            ids.push(c.id);
            leases.push(c.lease_id);
            statuses.push(c.outcome.status().as_str());
            spent.push(i32::from(c.outcome.spends_attempt()));
            reasons.push(c.outcome.reason());
            started.push(c.started_at);
            let (run_at, provider_id, last_error, detail) = match &c.outcome {
                Outcome::Sent {
                    provider_message_id,
                    detail,
                } => (None, provider_message_id.as_deref(), None, Some(detail)),
                Outcome::Retry {
                    at, reason, detail, ..
                } => (Some(*at), None, Some(reason.as_str()), Some(detail)),
                Outcome::Finished { reason, detail, .. } => {
                    (None, None, Some(reason.as_str()), Some(detail))
                }
                Outcome::Released => (None, None, None, None),
            };
            run_ats.push(run_at);
            provider_ids.push(provider_id);
            last_errors.push(last_error);
            details.push(detail.filter(|d| !d.is_null()));
        }
        Ok(
            sqlx::query_scalar(include_str!("queries/message_complete_many.sql"))
                .bind(ids)
                .bind(leases)
                .bind(statuses)
                .bind(run_ats)
                .bind(spent)
                .bind(provider_ids)
                .bind(last_errors)
                .bind(reasons)
                .bind(details)
                .bind(started)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Hands back messages whose lease expired; returns how many.
    pub async fn message_rescue(&self, limit: i64) -> Result<u64> {
        Ok(sqlx::query(include_str!("queries/message_rescue.sql"))
            .bind(limit)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Expires waiting messages whose validity passed; returns how many.
    pub async fn message_sweep_expired(&self, limit: i64) -> Result<u64> {
        Ok(
            sqlx::query(include_str!("queries/message_sweep_expired.sql"))
                .bind(limit)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Pauses a channel for every worker until `until`.
    pub async fn channel_pause(
        &self,
        channel: &str,
        until: DateTime<Utc>,
        reason: &str,
    ) -> Result<()> {
        sqlx::query(include_str!("queries/channel_pause.sql"))
            .bind(channel)
            .bind(until)
            .bind(reason)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Admits a capped message under its channel kind's frequency cap; false when the recipient is at the cap.
    pub(crate) async fn frequency_admit(
        &self,
        kind: &str,
        recipient: &Value,
        id: Uuid,
        max: u32,
        per: Duration,
    ) -> Result<bool> {
        Ok(
            sqlx::query_scalar(include_str!("queries/frequency_admit.sql"))
                .bind(kind)
                .bind(recipient)
                .bind(id)
                .bind(max as i32)
                .bind(per.as_secs_f64())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Takes up to `want` tokens from a channel's shared rate-limit bucket; returns how many were granted.
    pub(crate) async fn rate_take(
        &self,
        channel: &str,
        want: i64,
        rate: f64,
        burst: f64,
    ) -> Result<i64> {
        let granted: i32 = sqlx::query_scalar(include_str!("queries/rate_take.sql"))
            .bind(channel)
            .bind(want.min(i32::MAX as i64) as i32)
            .bind(rate)
            .bind(burst)
            .fetch_one(&self.pool)
            .await?;
        Ok(granted as i64)
    }

    /// Gives unused tokens back to a channel's bucket.
    pub(crate) async fn rate_return(&self, channel: &str, unused: i64, burst: f64) -> Result<()> {
        sqlx::query(include_str!("queries/rate_return.sql"))
            .bind(channel)
            .bind(unused as i32)
            .bind(burst)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Channels paused now.
    pub async fn channel_paused(&self) -> Result<Vec<PausedChannel>> {
        let rows = sqlx::query(include_str!("queries/channel_paused.sql"))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(PausedChannel {
                    channel: r.try_get(0)?,
                    paused_until: r.try_get(1)?,
                    reason: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Takes the fallback steps created and sent since the last call (by any process), counted by kind.
    pub async fn fallback_log_take(&self) -> Result<Vec<FallbackCount>> {
        Ok(
            sqlx::query_as(include_str!("queries/fallback_log_take.sql"))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Live messages by channel and status.
    pub async fn stats_live(&self) -> Result<Vec<StatusCount>> {
        let rows = sqlx::query(include_str!("queries/stats_live.sql"))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(status_count).collect()
    }

    /// Live messages by channel and status for a page load: exact while at most `cap` messages wait, else the
    /// ANALYZE estimate (`true`: estimated), so a huge backlog is never counted row by row on a request.
    pub async fn stats_live_bounded(&self, cap: i64) -> Result<(Vec<StatusCount>, bool)> {
        let rows: Vec<StatusCount> = sqlx::query(include_str!("queries/stats_live_capped.sql"))
            .bind(cap)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(status_count)
            .collect::<Result<_>>()?;
        let waiting: i64 = rows
            .iter()
            .filter(|r| r.status != "processing")
            .map(|r| r.count)
            .sum();
        if waiting < cap {
            return Ok((rows, false));
        }
        let rows = sqlx::query(include_str!("queries/stats_live_estimate.sql"))
            .fetch_all(&self.pool)
            .await?;
        Ok((
            rows.into_iter().map(status_count).collect::<Result<_>>()?,
            true,
        ))
    }

    /// Status changes within `window` (whole minutes), by channel and status (see `queries/stats_recent.sql`).
    pub async fn stats_recent(&self, window: Duration) -> Result<Vec<StatusCount>> {
        let rows = sqlx::query(include_str!("queries/stats_recent.sql"))
            .bind(window.as_secs_f64())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(status_count).collect()
    }

    /// Per channel, seconds since its oldest due message became due (channels with none are absent).
    pub async fn stats_oldest_due(&self) -> Result<Vec<(String, f64)>> {
        Ok(sqlx::query_as(include_str!("queries/stats_oldest_due.sql"))
            .fetch_all(&self.pool)
            .await?)
    }

    /// The most recent failures.
    pub async fn stats_last_errors(&self, limit: i64) -> Result<Vec<RecentError>> {
        let rows = sqlx::query(include_str!("queries/stats_last_errors.sql"))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(RecentError {
                    at: r.try_get(0)?,
                    channel: r.try_get(1)?,
                    message_id: r.try_get(2)?,
                    status: r.try_get(3)?,
                    reason: r.try_get(4)?,
                    detail: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// One message with everything an operator needs, as JSON (None when absent).
    pub async fn message_get(&self, id: Uuid) -> Result<Option<Value>> {
        let row = sqlx::query(include_str!("queries/message_get.sql"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(serde_json::json!({
            "id": r.try_get::<Uuid, _>("id")?,
            "channel": r.try_get::<String, _>("channel")?,
            "status": r.try_get::<String, _>("status")?,
            "use_case": r.try_get::<String, _>("use_case")?,
            "priority": r.try_get::<i16, _>("priority")?,
            "recipient": r.try_get::<Value, _>("recipient")?,
            "content": r.try_get::<Value, _>("content")?,
            "scheduled_for": r.try_get::<Option<DateTime<Utc>>, _>("scheduled_for")?,
            "run_at": r.try_get::<DateTime<Utc>, _>("run_at")?,
            "expires_at": r.try_get::<DateTime<Utc>, _>("expires_at")?,
            "attempts": r.try_get::<i32, _>("attempts")?,
            "max_attempts": r.try_get::<i32, _>("max_attempts")?,
            "reference": r.try_get::<Option<String>, _>("reference")?,
            "provider_message_id": r.try_get::<Option<String>, _>("provider_message_id")?,
            "last_error": r.try_get::<Option<String>, _>("last_error")?,
            "tags": r.try_get::<Vec<String>, _>("tags")?,
            "created_at": r.try_get::<DateTime<Utc>, _>("created_at")?,
            "updated_at": r.try_get::<DateTime<Utc>, _>("updated_at")?,
        })))
    }

    /// A message's events, oldest first.
    pub async fn message_events(&self, id: Uuid) -> Result<Vec<tidings_client::Event>> {
        Ok(sqlx::query_as(include_str!("queries/message_events.sql"))
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query(include_str!("queries/ping.sql"))
            .execute(&self.pool)
            .await
            .is_ok()
    }
}

fn status_count(r: sqlx::postgres::PgRow) -> Result<StatusCount> {
    Ok(StatusCount {
        channel: r.try_get(0)?,
        status: r.try_get(1)?,
        count: r.try_get(2)?,
    })
}
