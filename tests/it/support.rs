//! Helpers shared by the integration tests.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tidings::config::Config;
use tidings::store::Store;
use tidings_client::NewMessage;
use uuid::Uuid;

/// The URL of the test's own database (same server as DATABASE_URL).
pub async fn url_of(pool: &PgPool) -> String {
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let mut url: url::Url = std::env::var("DATABASE_URL").unwrap().parse().unwrap();
    url.set_path(&db);
    url.to_string()
}

/// Runs the `tidings` binary with `args` against database `url` (no RUST_LOG: what a user sees) and waits for it.
pub async fn tidings_cli(url: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap()
}

/// A config with one `sms` channel of kind sandbox (noop when `sandbox` is None) plus `extra` TOML.
pub fn config(sandbox: Option<&str>, worker: &str) -> Config {
    let provider = match sandbox {
        Some(base) => format!("base_url = \"{base}\""),
        None => "mode = \"noop\"".into(),
    };
    Config::parse(&format!(
        "[worker]\n{worker}\n[http]\nlisten = \"127.0.0.1:0\"\n[channels.sms]\nkind = \"sandbox\"\n{provider}\ntimeout = \"2s\"\n"
    ))
    .unwrap()
}

/// Writes `config`'s channels into the database.
pub async fn sync(pool: &PgPool, config: &Config) -> Store {
    let store = Store::from_pool(pool.clone());
    store.channel_sync(config).await.unwrap();
    store
}

/// Enqueues `n` text messages on `channel` in batches; returns their ids.
pub async fn enqueue_n(pool: &PgPool, channel: &str, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(n);
    let all: Vec<NewMessage> = (0..n)
        .map(|i| NewMessage::sms(channel, format!("+3162{:07}", i)).text(format!("message {i}")))
        .collect();
    for chunk in all.chunks(5000) {
        ids.extend(tidings_client::enqueue_many(pool, chunk).await.unwrap());
    }
    ids
}

/// Count of messages by status.
pub async fn count(pool: &PgPool, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tidings.messages WHERE status::text = $1")
        .bind(status)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Count of messages not final yet.
pub async fn live(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tidings.messages WHERE status IN ('accepted', 'scheduled', 'processing')")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `tidings worker` child process with its own config file.
pub struct ChildWorker {
    child: Child,
    config_path: std::path::PathBuf,
}

impl ChildWorker {
    /// Starts `tidings worker` on database `url` with `config_toml`.
    pub fn spawn(url: &str, config_toml: &str) -> ChildWorker {
        let config_path =
            std::env::temp_dir().join(format!("tidings-test-{}.toml", Uuid::now_v7()));
        std::fs::write(&config_path, config_toml).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["worker", "--config"])
            .arg(&config_path)
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tidings worker");
        ChildWorker { child, config_path }
    }

    /// The process id (for `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (`KILL`, `TERM`) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "worker did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// A worker config with one `sms` channel of kind sandbox at `sandbox` (timeout 1 s) plus `worker` keys.
pub fn child_config(sandbox: &str, worker: &str) -> String {
    format!(
        "[worker]\n{worker}\n[http]\nlisten = \"127.0.0.1:0\"\n[channels.sms]\nkind = \"sandbox\"\nbase_url = \"{sandbox}\"\ntimeout = \"1s\"\n"
    )
}

/// Worker pools running in this process, each with its own connection pool (as separate processes would).
pub struct Pools {
    shutdown: tidings::shutdown::Shutdown,
    handles: Vec<tokio::task::JoinHandle<tidings::Result<()>>>,
}

/// Starts `n` worker pools over the test database with the adapters `config` describes.
pub async fn start_pools(pool: &PgPool, config: &Config, n: usize) -> Pools {
    let url = url_of(pool).await;
    let shutdown = tidings::shutdown::Shutdown::new();
    let mut handles = Vec::new();
    for _ in 0..n {
        let store = Store::connect(&url, 6).await.unwrap();
        let worker = tidings::worker::Worker::new(config.clone(), store).shutdown(shutdown.clone());
        handles.push(tokio::spawn(worker.run()));
    }
    Pools { shutdown, handles }
}

impl Pools {
    /// SIGTERM-like stop; waits for every pool to drain and return, and asserts they returned Ok.
    pub async fn stop(self) {
        self.shutdown.stop.cancel();
        for h in self.handles {
            h.await.unwrap().unwrap();
        }
    }
}
