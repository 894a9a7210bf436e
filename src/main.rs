//! The `tidings` command line. The only place `anyhow` is used.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tidings::app::operator_cli::Verb;

/// mimalloc instead of glibc malloc: the worker allocates small, short-lived objects on many threads (rows, JSON
/// values, futures), where glibc's arena locking showed up as the top of the profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// tidings: a durable outbound-message queue worker on PostgreSQL.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Apply database migrations and sync the config's channels.
    Migrate {
        /// Config file (channels to sync).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Serve the HTTP API (`[api]` of the config) until SIGTERM/SIGINT.
    Serve {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a worker pool until SIGTERM/SIGINT.
    Worker {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the local sandbox provider (accepts every provider kind's requests).
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Added latency per request, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Share of requests answered 429 (0.0-1.0).
        #[arg(long, default_value_t = 0.0)]
        fail_429: f64,
        /// Retry-After of those 429s, in seconds.
        #[arg(long, default_value_t = 1)]
        retry_after: u64,
        /// Share of requests answered 503 (0.0-1.0).
        #[arg(long = "fail-5xx", default_value_t = 0.0)]
        fail_5xx: f64,
        /// Share of requests never answered (0.0-1.0).
        #[arg(long, default_value_t = 0.0)]
        hang: f64,
        /// Append every request (kind, idempotency id, answer) to this file as JSON lines.
        #[arg(long)]
        log_file: Option<PathBuf>,
    },
    /// Migrate, start the sandbox, enqueue a realistic mix, drain it and print every transition.
    Demo {
        /// Afterwards, serve the dashboard over the demo's messages until Ctrl-C.
        #[arg(long)]
        serve: bool,
    },
    /// Burn-down benchmark: bulk-enqueue N, drain, verify, report rates and latency.
    Bench(tidings::app::bench::BenchArgs),
    /// Enqueue messages from a JSON-lines file (one object per line, the keys of tidings.enqueue).
    Enqueue {
        /// The file.
        #[arg(long, short)]
        file: PathBuf,
        /// Messages per statement.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Show a message's state and full event history.
    Status {
        /// Message id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Counts by channel and status, oldest due age, paused channels, last errors.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a waiting (accepted or scheduled) message, or every one a filter matches.
    Cancel(TargetArgs),
    /// Retry a failed (sending_failed, rejected, expired) message whose validity allows it, or every one a filter
    /// matches.
    Retry(TargetArgs),
    /// Move a waiting message, or every one a filter matches, to another time.
    Reschedule {
        #[command(flatten)]
        target: TargetArgs,
        /// When it becomes due (RFC 3339, at most 35 days ahead).
        #[arg(long, value_name = "RFC3339")]
        at: String,
    },
    /// Pause a channel for every worker (like a 429's pause, replacing any in force).
    Pause {
        /// Channel name.
        channel: String,
        /// Until when: RFC 3339, or a duration from now like 30m (at most 30 days).
        #[arg(long, value_name = "RFC3339|DURATION")]
        until: String,
        /// Why (1 to 200 characters); shown with the pause.
        #[arg(long)]
        reason: String,
    },
    /// End a channel's pause (a 429's or an operator's).
    Resume {
        /// Channel name.
        channel: String,
    },
}

/// One message by id, or the messages a filter matches (the filter keys of `GET /v1/messages`).
#[derive(clap::Args)]
struct TargetArgs {
    /// Message id (or select by the filter flags instead).
    id: Option<String>,
    /// Only these statuses (comma-separated).
    #[arg(long)]
    status: Option<String>,
    /// Only this channel.
    #[arg(long)]
    channel: Option<String>,
    /// Only messages with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Only this use case.
    #[arg(long)]
    use_case: Option<String>,
    /// Only this producer reference.
    #[arg(long)]
    reference: Option<String>,
    /// Only this recipient (phone number).
    #[arg(long)]
    recipient: Option<String>,
    /// Only the message with this provider message id.
    #[arg(long)]
    provider_message_id: Option<String>,
    /// Only messages created at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    created_after: Option<String>,
    /// Only messages created before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    created_before: Option<String>,
    /// Count the messages the action would change; change nothing.
    #[arg(long, conflicts_with = "expect_count")]
    dry_run: bool,
    /// Act only if exactly N messages match (N from the dry run); else nothing changes.
    #[arg(long, value_name = "N")]
    expect_count: Option<i64>,
}

impl From<TargetArgs> for tidings::app::operator_cli::Target {
    fn from(a: TargetArgs) -> Self {
        Self {
            id: a.id,
            filter: tidings::app::operator_cli::FilterFlags {
                status: a.status,
                channel: a.channel,
                tag: a.tag,
                use_case: a.use_case,
                reference: a.reference,
                recipient: a.recipient,
                provider_message_id: a.provider_message_id,
                created_after: a.created_after,
                created_before: a.created_before,
            },
            dry_run: a.dry_run,
            expect_count: a.expect_count,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    // The demo prints its own story; keep the log to warnings there unless RUST_LOG says otherwise.
    let default_filter = match cli.command {
        Command::Demo { .. } | Command::Bench(_) => "warn",
        _ => "info,sqlx=warn",
    };
    init_logging(cli.log_format, default_filter);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tidings: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    use tidings::app::cli;
    match command {
        Command::Migrate { config } => cli::migrate(&cli::load_config(config.as_deref())?).await?,
        Command::Worker { config } => cli::worker(cli::load_config(Some(&config))?).await?,
        Command::Serve { config } => cli::serve(cli::load_config(Some(&config))?).await?,
        Command::Sandbox {
            listen,
            latency_ms,
            fail_429,
            retry_after,
            fail_5xx,
            hang,
            log_file,
        } => {
            for (flag, rate) in [
                ("--fail-429", fail_429),
                ("--fail-5xx", fail_5xx),
                ("--hang", hang),
            ] {
                if !(0.0..=1.0).contains(&rate) {
                    anyhow::bail!("{flag}: must be between 0.0 and 1.0");
                }
            }
            let options = tidings::app::sandbox_server::SandboxOptions {
                latency: std::time::Duration::from_millis(latency_ms),
                fail_429,
                retry_after_secs: retry_after,
                fail_5xx,
                hang,
                log_file,
            };
            let sandbox = tidings::app::sandbox_server::Sandbox::start(listen, options).await?;
            println!("sandbox provider listening on {}", sandbox.base_url());
            tidings::shutdown::signal().await;
            sandbox.stop().await;
        }
        Command::Demo { serve } => tidings::app::demo::run(serve).await?,
        Command::Bench(args) => tidings::app::bench::run(args).await?,
        Command::Enqueue { file, batch } => {
            if batch == 0 || batch > 100_000 {
                anyhow::bail!("--batch: must be between 1 and 100000");
            }
            let n = cli::enqueue_file(
                &file,
                batch,
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
            )
            .await?;
            println!("{n} messages enqueued");
        }
        Command::Status { id, json } => {
            if !cli::status(&id, json).await? {
                eprintln!("tidings: no message {id}");
                return Ok(ExitCode::from(2));
            }
        }
        Command::Stats { json } => cli::stats(json).await?,
        Command::Cancel(target) => return operator(Verb::Cancel, target, None).await,
        Command::Retry(target) => return operator(Verb::Retry, target, None).await,
        Command::Reschedule { target, at } => {
            return operator(Verb::Reschedule, target, Some(&at)).await;
        }
        Command::Pause {
            channel,
            until,
            reason,
        } => {
            let outcome = tidings::app::operator_cli::pause(&channel, &until, &reason).await?;
            return Ok(ExitCode::from(outcome.print()));
        }
        Command::Resume { channel } => {
            let outcome = tidings::app::operator_cli::resume(&channel).await?;
            return Ok(ExitCode::from(outcome.print()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn operator(verb: Verb, target: TargetArgs, at: Option<&str>) -> anyhow::Result<ExitCode> {
    let outcome = tidings::app::operator_cli::act(verb, target.into(), at).await?;
    Ok(ExitCode::from(outcome.print()))
}

/// A command line clap refuses: one readable line (clap's message without its usage block), clap's exit code;
/// `--help` and `--version` print as clap prints them.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.to_string();
    let first: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = first.join(" ");
    eprintln!(
        "tidings: {} (see --help)",
        line.strip_prefix("error: ").unwrap_or(&line)
    );
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

fn init_logging(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colour only for a person at a terminal: a pipe, a file or a log collector gets plain text (and NO_COLOR,
    // https://no-color.org, turns it off at a terminal too).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
