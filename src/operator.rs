//! Operator actions, one implementation for the HTTP API and the CLI: cancel, retry and reschedule one message or
//! every message a filter matches (with a dry run and an expected count), and a manual channel pause shared by
//! every worker. Every message change writes an event with reason `operator_<action>` and the actor's name in
//! `detail.by`, in the same statement.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::store::{MessageActParams, MessageAction, MessageListParams, Store};

/// Why an action was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A parameter breaks a rule (`field: rule`).
    Invalid {
        /// The parameter.
        field: &'static str,
        /// The rule.
        rule: String,
    },
    /// No such message or channel.
    NotFound(String),
    /// The state does not allow it (wrong status, validity over, count changed).
    Conflict {
        /// The field at fault, if one is.
        field: Option<&'static str>,
        /// Why.
        rule: String,
    },
}

/// The outcome of an action: done, or refused with nothing changed.
pub type Acted<T> = std::result::Result<T, Refusal>;

/// Longest a message may be rescheduled ahead (the enqueue rule).
pub const MAX_AHEAD: Duration = Duration::days(35);
/// Longest manual pause.
pub const MAX_PAUSE: Duration = Duration::days(30);

fn check_action(action: MessageAction, now: DateTime<Utc>) -> Acted<()> {
    if let MessageAction::Reschedule(at) = action
        && at > now + MAX_AHEAD
    {
        return Err(Refusal::Invalid {
            field: "scheduled_for",
            rule: "must be at most 35 days ahead".into(),
        });
    }
    Ok(())
}

/// Acts on one message. Refused (409) when its status does not allow the action, or (retry) its validity is over.
pub async fn act_one(
    store: &Store,
    id: Uuid,
    action: MessageAction,
    by: &str,
) -> Result<Acted<()>> {
    if let Err(r) = check_action(action, Utc::now()) {
        return Ok(Err(r));
    }
    let params = MessageActParams {
        action,
        id: Some(id),
        filter: MessageListParams::default(),
        dry_run: false,
        expect_count: None,
        by,
    };
    let (_, changed) = store.message_act(&params).await?;
    // More than one: a cancel of the first message of a fallback chain also cancels its waiting steps.
    if changed >= 1 {
        tracing::info!(%id, ?action, by, "operator action");
        return Ok(Ok(()));
    }
    let Some((row, _)) = store.message_read(id).await? else {
        return Ok(Err(Refusal::NotFound(format!("no message {id}"))));
    };
    let allowed = match action {
        MessageAction::Cancel | MessageAction::Reschedule(_) => "accepted or scheduled",
        MessageAction::Retry => "sending_failed, rejected or expired",
    };
    let retryable = ["sending_failed", "rejected", "expired"].contains(&row.status.as_str());
    Ok(Err(if action == MessageAction::Retry && retryable {
        Refusal::Conflict {
            field: Some("expires_at"),
            rule: format!(
                "its validity ran out at {}: a retry could never be sent",
                row.expires_at.to_rfc3339()
            ),
        }
    } else {
        Refusal::Conflict {
            field: Some("status"),
            rule: format!(
                "is {}; only a message that is {allowed} can be changed so",
                row.status
            ),
        }
    }))
}

/// What a bulk action came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bulk {
    /// A dry run: how many messages the action would change now.
    WouldChange(i64),
    /// Done: how many changed.
    Changed(i64),
}

/// Acts on every message `filter` matches (only those whose status allows the action). A dry run counts; the real
/// call needs `expect_count` and changes nothing (409) when the count is no longer that.
pub async fn act_bulk(
    store: &Store,
    filter: MessageListParams<'_>,
    action: MessageAction,
    dry_run: bool,
    expect_count: Option<i64>,
    by: &str,
) -> Result<Acted<Bulk>> {
    if let Err(r) = check_action(action, Utc::now()) {
        return Ok(Err(r));
    }
    if !dry_run && expect_count.is_none() {
        return Ok(Err(Refusal::Invalid {
            field: "expect_count",
            rule: "is required unless dry_run is true (run a dry run first and pass its count)"
                .into(),
        }));
    }
    let params = MessageActParams {
        action,
        id: None,
        filter,
        dry_run,
        expect_count,
        by,
    };
    let (matched, changed) = store.message_act(&params).await?;
    if dry_run {
        return Ok(Ok(Bulk::WouldChange(matched)));
    }
    if Some(matched) != expect_count {
        return Ok(Err(Refusal::Conflict {
            field: Some("expect_count"),
            rule: format!("{matched} messages match now; nothing was changed"),
        }));
    }
    tracing::info!(?action, changed, by, "operator bulk action");
    Ok(Ok(Bulk::Changed(changed)))
}

/// Pauses `channel` for every worker until `until` (replacing any pause in force).
pub async fn pause(
    store: &Store,
    channel: &str,
    until: DateTime<Utc>,
    reason: &str,
    by: &str,
) -> Result<Acted<()>> {
    let now = Utc::now();
    if until <= now || until > now + MAX_PAUSE {
        return Ok(Err(Refusal::Invalid {
            field: "until",
            rule: "must be in the future and at most 30 days ahead".into(),
        }));
    }
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Ok(Err(Refusal::Invalid {
            field: "reason",
            rule: "must be 1 to 200 characters".into(),
        }));
    }
    let stored = format!("operator_pause by {by}: {reason}");
    if !store.channel_pause_manual(channel, until, &stored).await? {
        return Ok(Err(Refusal::NotFound(format!("no channel {channel}"))));
    }
    tracing::info!(channel, %until, by, "operator paused a channel");
    Ok(Ok(()))
}

/// Ends any pause of `channel` (a 429's or an operator's).
pub async fn resume(store: &Store, channel: &str, by: &str) -> Result<Acted<()>> {
    if !store.channel_resume(channel).await? {
        return Ok(Err(Refusal::NotFound(format!("no channel {channel}"))));
    }
    tracing::info!(channel, by, "operator resumed a channel");
    Ok(Ok(()))
}
