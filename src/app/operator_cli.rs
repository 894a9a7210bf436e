//! `tidings cancel|retry|reschedule|pause|resume`: the operator actions over the database (`DATABASE_URL`). They
//! call the functions of [`crate::operator`] exactly as the HTTP API's handlers do, and read the filter flags with
//! the API's own filter parser ([`ListFilter`]), so the two cannot drift: same rules, same events
//! (`operator_<action>`), with the actor `cli:$USER` where the API writes the token's name.

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use super::database_url;
use crate::api::messages::ListFilter;
use crate::error::{Error, Result};
use crate::operator::{self, Acted, Bulk, Refusal};
use crate::store::{MessageAction, Store};

/// A message action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `tidings cancel`.
    Cancel,
    /// `tidings retry`.
    Retry,
    /// `tidings reschedule --at T`.
    Reschedule,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Cancel => "cancel",
            Verb::Retry => "retry",
            Verb::Reschedule => "reschedule",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Verb::Cancel => "canceled",
            Verb::Retry => "retried",
            Verb::Reschedule => "rescheduled",
        }
    }
}

/// The filter flags, as typed: the filter keys of `GET /v1/messages`.
#[derive(Debug, Default, Clone)]
pub struct FilterFlags {
    /// `--status` (comma-separated for several).
    pub status: Option<String>,
    /// `--channel`.
    pub channel: Option<String>,
    /// `--tag`.
    pub tag: Option<String>,
    /// `--use-case`.
    pub use_case: Option<String>,
    /// `--reference`.
    pub reference: Option<String>,
    /// `--recipient` (a phone number).
    pub recipient: Option<String>,
    /// `--provider-message-id`.
    pub provider_message_id: Option<String>,
    /// `--created-after` (RFC 3339).
    pub created_after: Option<String>,
    /// `--created-before` (RFC 3339).
    pub created_before: Option<String>,
}

impl FilterFlags {
    /// The flags given, as (API filter key, value).
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("status", &self.status),
            ("channel", &self.channel),
            ("tag", &self.tag),
            ("use_case", &self.use_case),
            ("reference", &self.reference),
            ("recipient", &self.recipient),
            ("provider_message_id", &self.provider_message_id),
            ("created_after", &self.created_after),
            ("created_before", &self.created_before),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// Which messages: one by id, or every one a filter matches.
#[derive(Debug, Default, Clone)]
pub struct Target {
    /// The message id.
    pub id: Option<String>,
    /// The filter.
    pub filter: FilterFlags,
    /// Count only.
    pub dry_run: bool,
    /// The count of the dry run (required for the real call by filter).
    pub expect_count: Option<i64>,
}

/// What a command came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: a line for stdout.
    Done(String),
    /// Refused, nothing changed: a line for stderr and the exit code (2: no such message or channel, else 1).
    Refused(String, u8),
}

impl Outcome {
    /// Prints the line where it belongs; returns the exit code.
    pub fn print(self) -> u8 {
        match self {
            Outcome::Done(line) => {
                println!("{line}");
                0
            }
            Outcome::Refused(line, code) => {
                eprintln!("tidings: {line}");
                code
            }
        }
    }
}

/// Who acts, as the events record it: `cli:$USER`, else `cli`.
pub fn actor() -> String {
    match std::env::var("USER") {
        Ok(user) if !user.trim().is_empty() => format!("cli:{}", user.trim()),
        _ => "cli".into(),
    }
}

/// The flag a parameter of [`crate::operator`] came from.
fn flag(field: &str) -> String {
    match field {
        "scheduled_for" => "--at".into(),
        "expect_count" | "until" | "reason" => format!("--{}", field.replace('_', "-")),
        other => other.into(),
    }
}

/// `not <done>: <field>: <rule>` with the field named as its flag; no such thing exits 2.
fn refused(done: &str, refusal: Refusal) -> Outcome {
    match refusal {
        Refusal::Invalid { field, rule } => {
            Outcome::Refused(format!("not {done}: {}: {rule}", flag(field)), 1)
        }
        Refusal::Conflict {
            field: Some(field),
            rule,
        } => Outcome::Refused(format!("not {done}: {}: {rule}", flag(field)), 1),
        Refusal::Conflict { field: None, rule } => {
            Outcome::Refused(format!("not {done}: {rule}"), 1)
        }
        Refusal::NotFound(what) => Outcome::Refused(format!("not {done}: {what}"), 2),
    }
}

fn bad(flag: &str, rule: impl std::fmt::Display) -> Error {
    Error::Other(format!("{flag}: {rule}"))
}

fn parse_time(flag: &str, text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            bad(
                flag,
                format!("{text:?} is not an RFC 3339 timestamp (e.g. 2026-12-24T09:00:00Z)"),
            )
        })
}

/// `tidings cancel|retry|reschedule`: one message by id, or by filter with `--dry-run` / `--expect-count N`.
/// Bad flags are an error (one line naming the flag); a refused action is an [`Outcome::Refused`].
pub async fn act(verb: Verb, target: Target, at: Option<&str>) -> Result<Outcome> {
    let action = match (verb, at) {
        (Verb::Cancel, _) => MessageAction::Cancel,
        (Verb::Retry, _) => MessageAction::Retry,
        (Verb::Reschedule, Some(at)) => MessageAction::Reschedule(parse_time("--at", at)?),
        (Verb::Reschedule, None) => return Err(bad("--at", "is required")),
    };
    let pairs = target.filter.pairs();
    let id = match (&target.id, pairs.is_empty()) {
        (Some(_), false) => {
            return Err(bad("ID", "give one message's ID or filter flags, not both"));
        }
        (None, true) => {
            return Err(bad(
                "ID",
                format!(
                    "give a message ID or at least one filter flag (--status, --channel, --tag, --use-case, \
                     --reference, --recipient, --created-after, --created-before); there is no `{} everything`",
                    verb.name()
                ),
            ));
        }
        (Some(id), true) => Some(
            id.parse::<Uuid>()
                .map_err(|_| bad("ID", format!("{id:?} is not a UUID")))?,
        ),
        (None, false) => None,
    };
    if id.is_some() && (target.dry_run || target.expect_count.is_some()) {
        let which = if target.dry_run {
            "--dry-run"
        } else {
            "--expect-count"
        };
        return Err(bad(which, "is only for an action by filter, not by ID"));
    }
    // The API's filter parser: the same keys, forms and rules as `GET /v1/messages` and the bulk endpoints.
    let mut filter = ListFilter::default();
    for (key, value) in &pairs {
        filter
            .set(key, (*value).to_owned())
            .map_err(|e| bad(&format!("--{}", key.replace('_', "-")), e.rule()))?;
    }
    let store = Store::connect(&database_url()?, 2).await?;
    let by = actor();
    let done = verb.done();
    if let Some(id) = id {
        let acted: Acted<()> = operator::act_one(&store, id, action, &by).await?;
        return Ok(match acted {
            Ok(()) => match action {
                MessageAction::Reschedule(at) => Outcome::Done(format!(
                    "{done} {id} to {}",
                    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                )),
                _ => Outcome::Done(format!("{done} {id}")),
            },
            Err(r) => refused(done, r),
        });
    }
    if let Some(channel) = &target.filter.channel {
        check_channel(&store, "--channel", channel).await?;
    }
    let acted = operator::act_bulk(
        &store,
        filter.params(),
        action,
        target.dry_run,
        target.expect_count,
        &by,
    )
    .await?;
    Ok(match acted {
        Ok(Bulk::WouldChange(n)) => Outcome::Done(format!("would {} {n} messages", verb.name())),
        Ok(Bulk::Changed(n)) => Outcome::Done(format!("{done} {n} messages")),
        Err(r) => refused(done, r),
    })
}

/// An unknown channel is a typo to report, not a filter that quietly matches nothing.
async fn check_channel(store: &Store, flag: &str, channel: &str) -> Result<()> {
    let known: Vec<String> = store
        .channel_list()
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    if known.iter().any(|c| c == channel) {
        return Ok(());
    }
    Err(bad(
        flag,
        format!("no channel {channel:?} (known: {})", known.join(", ")),
    ))
}

/// `--until`: an RFC 3339 timestamp, or a duration from now (`30m`, `2h`, `1day`; humantime's forms).
fn parse_until(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let rule = || {
        bad(
            "--until",
            format!("{text:?} is neither an RFC 3339 timestamp nor a duration like 30m"),
        )
    };
    let d = humantime::parse_duration(text).map_err(|_| rule())?;
    let d = chrono::Duration::from_std(d).map_err(|_| rule())?;
    now.checked_add_signed(d).ok_or_else(rule)
}

/// `tidings pause CHANNEL --until T|DURATION --reason TEXT`: a manual pause every worker honours.
pub async fn pause(channel: &str, until: &str, reason: &str) -> Result<Outcome> {
    let until = parse_until(until, Utc::now())?;
    let store = Store::connect(&database_url()?, 2).await?;
    Ok(
        match operator::pause(&store, channel, until, reason, &actor()).await? {
            Ok(()) => Outcome::Done(format!(
                "paused {channel} until {}",
                until.to_rfc3339_opts(SecondsFormat::Millis, true)
            )),
            Err(r) => refused("paused", r),
        },
    )
}

/// `tidings resume CHANNEL`: ends any pause of the channel (a 429's or an operator's).
pub async fn resume(channel: &str) -> Result<Outcome> {
    let store = Store::connect(&database_url()?, 2).await?;
    Ok(match operator::resume(&store, channel, &actor()).await? {
        Ok(()) => Outcome::Done(format!("resumed {channel}")),
        Err(r) => refused("resumed", r),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_takes_a_timestamp_or_a_duration() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T04:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_until("30m", now).unwrap(),
            now + chrono::Duration::minutes(30)
        );
        assert_eq!(parse_until("2026-12-02T05:00:00+01:00", now).unwrap(), now);
        let e = parse_until("soon", now).unwrap_err().to_string();
        assert!(e.starts_with("--until: "), "{e}");
    }

    #[test]
    fn refusals_name_the_flag() {
        let r = refused(
            "canceled",
            Refusal::Conflict {
                field: Some("expect_count"),
                rule: "3 messages match now; nothing was changed".into(),
            },
        );
        assert_eq!(
            r,
            Outcome::Refused(
                "not canceled: --expect-count: 3 messages match now; nothing was changed".into(),
                1
            )
        );
        assert_eq!(
            refused("paused", Refusal::NotFound("no channel x".into())),
            Outcome::Refused("not paused: no channel x".into(), 2)
        );
    }
}
