//! The config file (`tidings.toml`), read once and validated at startup.
//!
//! Every key, its default and its meaning is listed in the README's "Configuration" section. Durations are
//! written as `"250ms"`, `"30s"`, `"5m"`, `"24h"`. Secrets never appear here: a channel names the environment
//! variable that holds its credential (`access_key_env = "BIRD_ACCESS_KEY"`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::policy::{Backoff, ChannelPolicy, FrequencyCap, QuietHours};

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[worker]`: the worker pool of one process.
    pub worker: WorkerConfig,
    /// `[http]`: the worker's HTTP listener.
    pub http: HttpConfig,
    /// `[channels.NAME]`: one table per channel.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// `[api]` and `[[api.tokens]]`: the HTTP API of `tidings serve`.
    pub api: ApiConfig,
    /// `[callbacks]`: status callbacks to the producer's app.
    pub callbacks: CallbacksConfig,
}

/// `[callbacks]`: status callbacks, POSTed by the workers and signed the Standard Webhooks way.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbacksConfig {
    /// Hosts a message's own `callback_url` may name: `"hooks.example.com"` (exact, any port unless one is
    /// given) or `"*.example.org"` (any subdomain). Synced into `tidings.callback_hosts`.
    pub allowed_hosts: Vec<String>,
    /// The environment variable holding the signing secret (`whsec_<base64>`); required once any callback can
    /// be sent (an allowed host or a channel's `callback_url`).
    pub secret_env: Option<String>,
    /// Callbacks POSTed at once by one worker process, apart from the sending slots.
    pub concurrency: usize,
    /// Per-request timeout of one callback POST.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries stop this long after the transition; the callback is then given up.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Retry backoff: exponential from `base`, capped at `cap`, with full jitter.
    pub backoff: BackoffConfig,
    /// How often an idle worker looks for due callbacks.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        CallbacksConfig {
            allowed_hosts: Vec::new(),
            secret_env: None,
            concurrency: 8,
            timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(24 * 3600),
            backoff: BackoffConfig {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(600),
            },
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// Whether any callback can be sent: an allowed host for messages' own URLs, or a channel's `callback_url`.
    pub fn callbacks_wanted(&self) -> bool {
        !self.callbacks.allowed_hosts.is_empty()
            || self.channels.values().any(|c| c.callback_url.is_some())
    }

    /// `[callbacks] allowed_hosts`, lower-cased, as stored in `tidings.callback_hosts`.
    pub fn callback_hosts(&self) -> Vec<String> {
        self.callbacks
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect()
    }
}

impl CallbacksConfig {
    /// Checks the rules no type expresses.
    fn validate(&self, wanted: bool) -> Result<()> {
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            if !valid_host_pattern(host) {
                return Err(Error::Config(format!(
                    "callbacks.allowed_hosts[{i}]: {host:?} is not a host name (\"hooks.example.com\", optionally with a :port) or a \"*.example.org\" pattern"
                )));
            }
        }
        if wanted
            && self
                .secret_env
                .as_deref()
                .is_none_or(|v| v.trim().is_empty())
        {
            return Err(Error::Config(
                "callbacks.secret_env: is required when callbacks can be sent ([callbacks] allowed_hosts or a channel's callback_url)".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err(Error::Config(
                "callbacks.concurrency: must be at least 1".into(),
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(3600) {
            return Err(Error::Config(
                "callbacks.timeout: must be positive and at most 1h".into(),
            ));
        }
        if self.max_age.is_zero() || self.max_age > Duration::from_secs(30 * 86_400) {
            return Err(Error::Config(
                "callbacks.max_age: must be positive and at most 30 days".into(),
            ));
        }
        if self.backoff.base.is_zero() || self.backoff.cap < self.backoff.base {
            return Err(Error::Config(
                "callbacks.backoff: base must be positive and cap at least base".into(),
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::Config(
                "callbacks.poll_interval: must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// What `tidings.callback_hosts` accepts: a lower-case host (letters, digits, '.', '-'), optionally `*.` first
/// and `:port` last.
fn valid_host_pattern(pattern: &str) -> bool {
    let rest = pattern.strip_prefix("*.").unwrap_or(pattern);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0))
}

/// `[api]`: the HTTP API of `tidings serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on. Without any token the API refuses to start on a non-loopback address.
    pub listen: SocketAddr,
    /// Largest request body in bytes; a larger one is answered 413.
    pub max_body: usize,
    /// Database connections of the API process.
    pub max_connections: u32,
    /// `[[api.tokens]]`: the bearer tokens and their scopes.
    pub tokens: Vec<ApiTokenConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: ([127, 0, 0, 1], 8080).into(),
            max_body: 1024 * 1024,
            max_connections: 16,
            tokens: Vec::new(),
        }
    }
}

/// `[[api.tokens]]`: one bearer token. The token itself lives in the environment variable `env` names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// Who holds it; recorded in the `detail` of every operator action's event.
    pub name: String,
    /// What it may do.
    pub scope: ApiScope,
    /// The environment variable holding the token, read once at start.
    pub env: String,
}

/// What a token may do. `admin` implies `read`; `produce` may also read a message by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiScope {
    /// Enqueue, and read a message by id.
    Produce,
    /// List, search, read, stats.
    Read,
    /// Everything `read` may, plus cancel, retry, reschedule, pause and resume.
    Admin,
}

impl ApiConfig {
    /// Checks the rules no type expresses.
    pub fn validate(&self) -> Result<()> {
        if self.max_body == 0 {
            return Err(Error::Config("api.max_body: must be at least 1".into()));
        }
        if self.max_connections < 2 {
            return Err(Error::Config(
                "api.max_connections: must be at least 2".into(),
            ));
        }
        for (i, token) in self.tokens.iter().enumerate() {
            if token.name.trim().is_empty() {
                return Err(Error::Config(format!(
                    "api.tokens[{i}].name: must not be empty"
                )));
            }
            if self.tokens[..i].iter().any(|t| t.name == token.name) {
                return Err(Error::Config(format!(
                    "api.tokens[{i}].name: {:?} is used by an earlier token",
                    token.name
                )));
            }
            if token.env.trim().is_empty() {
                return Err(Error::Config(format!(
                    "api.tokens[{i}].env: must name an environment variable"
                )));
            }
        }
        Ok(())
    }
}

/// `[worker]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Messages handled at once by one process.
    pub concurrency: usize,
    /// Most messages one claim statement takes (it never takes more than the free slots).
    pub claim_batch: usize,
    /// Claim loops per process sharing the slots. Every claim loop of every process walks the head of the same
    /// index, skipping rows another claim in flight has locked, so the fleet's total is what counts: one per
    /// process lets processes add up, while more loops per process contend (measured in the README's
    /// Performance section and `docs/operations.md`).
    pub claimers: usize,
    /// Most outcomes one completion statement writes.
    pub complete_batch: usize,
    /// Completion statements in flight at once.
    pub complete_parallelism: usize,
    /// How long a claim holds a message before the rescuer may hand it to another worker.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Claim at least this often even without a NOTIFY (safety net and scheduled messages).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// On SIGTERM/SIGINT: how long in-flight sends may take to finish before they are released.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// How often the rescuer looks for expired leases and the sweeper for overdue scheduled messages.
    #[serde(with = "humantime_serde")]
    pub rescue_interval: Duration,
    /// A finished message moves from the hot table to the partitioned history this long after its last change
    /// (retryable failures stay until their validity has passed). Also how long a `reference` stays unique after
    /// its message finished, and how long an operator may retry a failure whose validity is still running out.
    #[serde(with = "humantime_serde")]
    pub history_after: Duration,
    /// The history keeps the days of creation within this; older days are dropped whole (a day a live message
    /// was created on is kept until that message finishes).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often the history is maintained: finished messages moved, day partitions created and dropped.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// Database connections of one worker process.
    pub max_connections: u32,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 256,
            claim_batch: 1000,
            claimers: 1,
            complete_batch: 1000,
            complete_parallelism: 4,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            grace: Duration::from_secs(30),
            rescue_interval: Duration::from_secs(15),
            history_after: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(7 * 24 * 3600),
            prune_interval: Duration::from_secs(60),
            max_connections: 8,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz` and `/receipts/{channel}`. Loopback by default; the
    /// `TIDINGS_HTTP_LISTEN` environment variable overrides it.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: ([127, 0, 0, 1], 9464).into(),
        }
    }
}

/// `[channels.NAME]`: where and how messages of one channel go out.
#[derive(Debug, Clone, Deserialize)]
pub struct ChannelConfig {
    /// Provider adapter: `bird_sms`, `instaply_whatsapp`, `insider_push`, `instant_app`, `webhook`, `sandbox`.
    pub kind: String,
    /// Provider base URL (tests and the demo point it at loopback servers). `https://`, or `http://` to a
    /// loopback host only, unless `allow_insecure_http`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Allow a plain `http://` `base_url` to a host other than loopback: credentials and messages then cross
    /// the network in cleartext. Off by default; logged as a warning at start when used.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Per-request timeout of a provider call.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Zone for quiet hours when the recipient's zone cannot be told (IANA name).
    #[serde(default)]
    pub default_timezone: Option<String>,
    /// Attempts before a message ends `sending_failed` (`attempts_exhausted`).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Most provider requests per second for the whole pool (all workers, all hosts). None: unlimited.
    #[serde(default)]
    pub rate_per_sec: Option<f64>,
    /// Retry backoff: exponential from `base`, capped at `cap`, with full jitter.
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// Default validity in seconds per use case, overriding 129600 (36 h) and 600 for `2fa`.
    #[serde(default)]
    pub validity: BTreeMap<String, u32>,
    /// `[channels.NAME.quiet_hours]`
    #[serde(default)]
    pub quiet_hours: Option<QuietHoursConfig>,
    /// `[channels.NAME.frequency_cap]`
    #[serde(default)]
    pub frequency_cap: Option<FrequencyCapConfig>,
    /// Status callbacks for every message of this channel go here (a message's own `callback_url` wins).
    #[serde(default)]
    pub callback_url: Option<String>,
    /// The adapter's own keys (ids, credential env-var names, sandbox mode, …), checked by the adapter.
    #[serde(flatten)]
    pub settings: toml::Table,
    /// The delivery policy built from the keys above, once, by [`Config::parse`].
    #[serde(skip)]
    pub policy: ChannelPolicy,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_attempts() -> u32 {
    10
}

/// `[channels.NAME.backoff]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    /// Upper bound of the first retry's delay; doubles per attempt.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Largest upper bound.
    #[serde(with = "humantime_serde")]
    pub cap: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3600),
        }
    }
}

/// `[channels.NAME.quiet_hours]`: a local-time window in the recipient's zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursConfig {
    /// Start of the window, `"HH:MM"` local time.
    pub(crate) start: String,
    /// End of the window, `"HH:MM"`; before `start` means the window crosses midnight.
    pub(crate) end: String,
    /// Days the window starts on (`mon` … `sun`); all days when empty.
    #[serde(default)]
    pub(crate) days: Vec<String>,
    /// Use cases the window applies to.
    #[serde(default = "default_quiet_use_cases")]
    pub(crate) applies_to: Vec<String>,
}

fn default_quiet_use_cases() -> Vec<String> {
    vec!["marketing".into(), "promotional".into()]
}

/// `[channels.NAME.frequency_cap]`: at most `max` capped messages per recipient per `per`, per channel kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCapConfig {
    /// Messages allowed in the period.
    pub(crate) max: u32,
    /// The period.
    #[serde(with = "humantime_serde")]
    pub(crate) per: Duration,
}

impl ChannelConfig {
    /// A string setting of the adapter, or a config error naming `channels.NAME.key`.
    pub(crate) fn setting_str(&self, channel: &str, key: &str) -> Result<&str> {
        match self.settings.get(key) {
            Some(toml::Value::String(s)) => Ok(s),
            Some(_) => Err(Error::Config(format!(
                "channels.{channel}.{key}: must be a string"
            ))),
            None => Err(Error::Config(format!(
                "channels.{channel}.{key}: is required for kind {}",
                self.kind
            ))),
        }
    }

    /// The non-secret policy stored in `tidings.channels.policy` (read by `tidings.enqueue`).
    pub(crate) fn policy_json(&self) -> serde_json::Value {
        let mut policy = serde_json::json!({
            "max_attempts": self.max_attempts,
            "validity": self.validity,
            "rate_per_sec": self.rate_per_sec,
            "quiet_hours": self.quiet_hours.as_ref().map(|q| serde_json::json!({
                "start": q.start, "end": q.end, "days": q.days, "applies_to": q.applies_to,
            })),
            "frequency_cap": self.frequency_cap.as_ref().map(|f| serde_json::json!({
                "max": f.max, "per_seconds": f.per.as_secs(),
            })),
            // Whether the channel takes delivery receipts: a fallback step may wait for one (`undelivered`).
            "receipts": self.settings.contains_key("receipt_secret_env"),
        });
        // Read by the callback outbox trigger (migration 0011); absent when the channel asks for none.
        if let Some(url) = &self.callback_url {
            policy["callback_url"] = url.as_str().into();
        }
        policy
    }
}

impl ChannelConfig {
    /// Builds the delivery policy of channel `name` from its keys; errors name the key.
    pub fn build_policy(&self, name: &str) -> Result<ChannelPolicy> {
        let default_timezone = self
            .default_timezone
            .as_deref()
            .map(|zone| {
                zone.parse::<chrono_tz::Tz>().map_err(|_| {
                    Error::Config(format!(
                        "channels.{name}.default_timezone: {zone:?} is not an IANA time zone name such as \"Europe/Paris\""
                    ))
                })
            })
            .transpose()?;
        let quiet_hours = self
            .quiet_hours
            .as_ref()
            .map(|q| {
                QuietHours::new(
                    &format!("channels.{name}.quiet_hours"),
                    &q.start,
                    &q.end,
                    &q.days,
                    &q.applies_to,
                )
                .map_err(|e| Error::Config(e.0))
            })
            .transpose()?;
        Ok(ChannelPolicy {
            backoff: Backoff {
                base: self.backoff.base,
                cap: self.backoff.cap,
            },
            quiet_hours,
            default_timezone,
            frequency_cap: self.frequency_cap.as_ref().map(|f| FrequencyCap {
                max: f.max,
                per: f.per,
            }),
        })
    }
}

impl Config {
    /// Reads and validates a config file.
    pub(crate) fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| Error::Config(e.message().to_owned()))?;
        if let Ok(listen) = std::env::var("TIDINGS_HTTP_LISTEN") {
            config.http.listen = listen.parse().map_err(|_| {
                Error::Config(format!(
                    "TIDINGS_HTTP_LISTEN: {listen:?} is not an address such as 127.0.0.1:9464"
                ))
            })?;
        }
        config.validate()?;
        for (name, channel) in config.channels.iter_mut() {
            channel.policy = channel.build_policy(name)?;
        }
        Ok(config)
    }

    /// Checks the rules no type expresses.
    pub(crate) fn validate(&self) -> Result<()> {
        let w = &self.worker;
        let positive = [
            ("worker.concurrency", w.concurrency),
            ("worker.claim_batch", w.claim_batch),
            ("worker.claimers", w.claimers),
            ("worker.complete_batch", w.complete_batch),
            ("worker.complete_parallelism", w.complete_parallelism),
            ("worker.max_connections", w.max_connections as usize),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(Error::Config(format!("{key}: must be at least 1")));
            }
        }
        if w.max_connections < 3 {
            return Err(Error::Config(
                "worker.max_connections: must be at least 3 (claim, completion, maintenance)"
                    .into(),
            ));
        }
        if w.retention < Duration::from_secs(24 * 3600) {
            return Err(Error::Config(
                "worker.retention: must be at least 1d (the history is kept and dropped in whole days)".into(),
            ));
        }
        if w.history_after >= w.retention {
            return Err(Error::Config(
                "worker.history_after: must be shorter than worker.retention".into(),
            ));
        }
        for (name, ch) in &self.channels {
            if !valid_channel_name(name) {
                return Err(Error::Config(format!(
                    "channels.{name}: a channel name is 1 to 63 lower-case letters, digits, '_' or '-'"
                )));
            }
            // A message must never be rescued while its send may still legitimately be in flight. Checked: an
            // absurd timeout would overflow the doubling.
            if ch
                .timeout
                .checked_mul(2)
                .is_none_or(|twice| twice > w.lease)
            {
                return Err(Error::Config(format!(
                    "channels.{name}.timeout: {:?} is too long for worker.lease {:?} (the lease must be at least twice the longest send timeout)",
                    ch.timeout, w.lease
                )));
            }
            if let Some(url) = &ch.base_url
                && !ch.allow_insecure_http
                && insecure_http(url)
            {
                return Err(Error::Config(format!(
                    "channels.{name}.base_url: plain http is allowed only to loopback (set allow_insecure_http = true to override)"
                )));
            }
            if ch.max_attempts == 0 {
                return Err(Error::Config(format!(
                    "channels.{name}.max_attempts: must be at least 1"
                )));
            }
            if let Some(rate) = ch.rate_per_sec
                && !(rate > 0.0 && rate.is_finite())
            {
                return Err(Error::Config(format!(
                    "channels.{name}.rate_per_sec: must be a positive number"
                )));
            }
            if ch.backoff.base.is_zero() || ch.backoff.cap < ch.backoff.base {
                return Err(Error::Config(format!(
                    "channels.{name}.backoff: base must be positive and cap at least base"
                )));
            }
            for (use_case, secs) in &ch.validity {
                if !crate::USE_CASES.contains(&use_case.as_str()) {
                    return Err(Error::Config(format!(
                        "channels.{name}.validity.{use_case}: unknown use case (one of {})",
                        crate::USE_CASES.join(", ")
                    )));
                }
                if *secs == 0 {
                    return Err(Error::Config(format!(
                        "channels.{name}.validity.{use_case}: must be positive"
                    )));
                }
            }
            if let Some(cap) = &ch.frequency_cap
                && (cap.max == 0 || cap.per.is_zero())
            {
                return Err(Error::Config(format!(
                    "channels.{name}.frequency_cap: max and per must be positive"
                )));
            }
            if let Some(url) = &ch.callback_url
                && !url::Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            {
                return Err(Error::Config(format!(
                    "channels.{name}.callback_url: must be an http or https URL"
                )));
            }
        }
        self.api.validate()?;
        self.callbacks.validate(self.callbacks_wanted())?;
        Ok(())
    }
}

/// Whether `url` is plain `http://` to a host that is not loopback (127.0.0.0/8, ::1, `localhost`). A URL that
/// does not parse is left to the adapter, which names the key with the parser's error.
pub(crate) fn insecure_http(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    if url.scheme() != "http" {
        return false;
    }
    match url.host() {
        Some(url::Host::Domain(host)) => !host.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => !ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => !ip.is_loopback(),
        None => true,
    }
}

fn valid_channel_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_adapter_keys_are_kept() {
        let c = Config::parse(
            r#"
            [channels.sms]
            kind = "bird_sms"
            workspace_id = "w"
            [channels.sms.quiet_hours]
            start = "21:00"
            end = "08:00"
            "#,
        )
        .unwrap();
        assert_eq!(c.worker.lease, Duration::from_secs(60));
        let sms = &c.channels["sms"];
        assert_eq!(sms.setting_str("sms", "workspace_id").unwrap(), "w");
        assert_eq!(
            sms.quiet_hours.as_ref().unwrap().applies_to,
            ["marketing", "promotional"]
        );
    }

    #[test]
    fn errors_name_the_key() {
        let err = |t: &str| Config::parse(t).unwrap_err().to_string();
        assert!(err("[worker]\nconcurency = 3").contains("concurency"));
        assert!(err("[worker]\nconcurrency = 0").contains("worker.concurrency"));
        assert!(
            err("[channels.a]\nkind = \"sandbox\"\ntimeout = \"50s\"")
                .contains("channels.a.timeout")
        );
        assert!(err("[channels.A]\nkind = \"sandbox\"").contains("channels.A"));
        assert!(
            err("[channels.a]\nkind = \"sandbox\"\nvalidity = { weekly = 5 }")
                .contains("channels.a.validity.weekly")
        );
    }

    #[test]
    fn an_absurd_timeout_is_a_config_error_not_a_panic() {
        let err = Config::parse("[channels.a]\nkind = \"sandbox\"\ntimeout = \"300000000000y\"")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config: channels.a.timeout: "), "{err}");
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        let parse = |url: &str, extra: &str| {
            Config::parse(&format!(
                "[channels.a]\nkind = \"sandbox\"\nbase_url = \"{url}\"\n{extra}"
            ))
        };
        for ok in [
            "https://api.bird.com",
            "http://127.0.0.1:8080",
            "http://127.8.9.10/x",
            "http://[::1]:9000",
            "http://localhost:3000",
            "http://LOCALHOST",
        ] {
            parse(ok, "").unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://api.bird.com",
            "http://10.0.0.5:8080",
            "http://[::2]",
            "http://localhost.example.com",
            "http://128.0.0.1",
        ] {
            assert_eq!(
                parse(bad, "").unwrap_err().to_string(),
                "config: channels.a.base_url: plain http is allowed only to loopback (set allow_insecure_http = true to override)",
                "{bad}"
            );
            parse(bad, "allow_insecure_http = true").unwrap();
        }
    }
}
