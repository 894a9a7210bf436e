//! Workers as separate hosts: each `tidings worker` runs in a network namespace the test makes (`ip netns add`, a
//! veth pair, a private /30), and reaches the database and the sandbox provider only over its veth. Shown here:
//! a 429 met by one host pauses the channel on the others too, and the rate limit holds for the hosts together;
//! the leader cut off mid-drain (its link set down) loses nothing: another host takes over and rescues its
//! messages after the lease, and a message reaches the provider twice only when a rescue (lease expired) came
//! before the second request. `drain_rate_by_host_count` (ignored; run by
//! `ops/hosts.sh`) measures the drain rate with 1, 2, 4… hosts.
//!
//! Needs root and `ip` (iproute2); without them each test passes after saying why on stderr.
//!
//! # The network
//!
//! Host N: namespace `td<run>-h<N>` with `lo` up and one end of a veth pair, `10.213.x.y+2/30`; the other end in the
//! root namespace is `10.213.x.y+1/30`. No route beyond the /30: a host reaches nothing but its peer address.
//! PostgreSQL listens on 127.0.0.1 and is not reconfigured: the test binds, on each root-side address, a TCP
//! forwarder to it and one to the in-process sandbox. Names carry a random run id and each /30 is picked at random
//! and checked unused, so parallel tests and leftovers of a killed run do not clash; a guard deletes everything.
//!
//! The forwarders stand in for the database server's TCP stack, which would otherwise see the hosts directly: the
//! leader's connection asks the server for keepalives (10 s idle, probes 5 s apart, 2 of them; see
//! `leader_try.sql`), so a leader cut off loses its session, and its maintenance lock, within about 20 s. Behind a
//! forwarder the server sees only a healthy loopback peer, so the forwarder carries those settings on its
//! host-facing socket and closes the server side when they fire.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tidings::app::sandbox_server::{Sandbox, SandboxOptions, SandboxRequest};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{count, enqueue_n, live, wait_until};

/// The worker binary: `TIDINGS_BIN` (ops/hosts.sh passes a release build) or the one cargo built for the tests.
fn worker_bin() -> PathBuf {
    std::env::var_os("TIDINGS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tidings")))
}

/// Runs `ip ARGS`; Err carries its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip ARGS` and returns its stdout.
fn ip_out(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// /30s handed out by this process (several tests run at once); other processes are seen through `ip addr`.
static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A free /30 in 10.213.0.0/16, as its index (0..16384): random, not held by this process nor present on any
/// interface of the root namespace.
fn pick_subnet() -> u16 {
    let mut taken = TAKEN.lock().unwrap();
    let in_use = ip_out(&["-o", "-4", "addr", "show"]);
    loop {
        let i = rand::random::<u16>() % 16384;
        let root = subnet_addr(i, 1);
        if !taken.contains(&i) && !in_use.contains(&format!("inet {root}/")) {
            taken.push(i);
            return i;
        }
    }
}

/// Address `host` (1 or 2) of /30 number `i`.
fn subnet_addr(i: u16, host: u16) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + u32::from(i) * 4;
    Ipv4Addr::from(base + u32::from(host))
}

/// A TCP forwarder on `listen` to `target`, until dropped. See the module docs for the keepalive.
struct Forwarder {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Forwarder {
    async fn start(listen: SocketAddr, target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind(listen).await.expect("bind forwarder");
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let token = token.clone();
                tokio::spawn(async move {
                    let _ = inbound.set_nodelay(true);
                    let sock = socket2::SockRef::from(&inbound);
                    let _ = sock.set_tcp_keepalive(
                        &socket2::TcpKeepalive::new()
                            .with_time(Duration::from_secs(10))
                            .with_interval(Duration::from_secs(5))
                            .with_retries(2),
                    );
                    // Keepalives only probe an idle connection. A cut that strands an unacknowledged reply would
                    // leave the socket retransmitting for the kernel's ~15 minutes; the user timeout ends that
                    // after the same 20 s. (A real server would need `tcp_user_timeout` for that rare case.)
                    let _ = sock.set_tcp_user_timeout(Some(Duration::from_secs(20)));
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                    // Dropping both ends closes the server's side too.
                });
            }
        });
        Forwarder { addr, stop }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One host: a namespace, its veth pair, its forwarders and its worker process.
struct Host {
    ns: String,
    veth_host: String,
    /// This host's address, as the root namespace reaches it (its /metrics is there).
    addr: Ipv4Addr,
    db: Forwarder,
    provider: Forwarder,
    worker: Option<Child>,
    config_path: PathBuf,
    log_path: PathBuf,
}

/// The hosts of one test, deleted with everything they hold when dropped.
struct Hosts {
    /// Every namespace made and the root end of its veth pair, recorded before they are configured so that the
    /// guard deletes them whatever fails next.
    namespaces: Vec<(String, String)>,
    /// The /30s taken (indexes), handed back when dropped.
    subnets: Vec<u16>,
    hosts: Vec<Host>,
    http: reqwest::Client,
}

/// Why hosts in network namespaces cannot be made here, if they cannot: a namespace and a veth pair into it.
fn unsupported() -> Option<String> {
    let id = format!("{:08x}", rand::random::<u32>());
    let (ns, veth) = (format!("tdprobe{id}"), format!("tdp{id}"));
    let made = ip(&["netns", "add", &ns]).and_then(|()| {
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "probe", "netns", &ns,
        ])
    });
    let _ = ip(&["link", "del", &veth]);
    let _ = ip(&["netns", "del", &ns]);
    made.err()
}

/// Makes one host per entry of `providers`, whose forwarders lead to the server of `DATABASE_URL` and to that
/// provider; None (after saying why on stderr) where network namespaces are not permitted.
async fn make_hosts(providers: &[SocketAddr], test: &str) -> Option<Hosts> {
    if let Some(why) = unsupported() {
        eprintln!(
            "SKIPPED hosts::{test}: network namespaces are not available here (needs root and iproute2): {why}"
        );
        return None;
    }
    let server: url::Url = std::env::var("DATABASE_URL").unwrap().parse().unwrap();
    let pg = tokio::net::lookup_host((server.host_str().unwrap(), server.port().unwrap_or(5432)))
        .await
        .unwrap()
        .next()
        .unwrap();
    let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let mut hosts = Hosts {
        namespaces: Vec::new(),
        subnets: Vec::new(),
        hosts: Vec::new(),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap(),
    };
    for (h, provider) in providers.iter().enumerate() {
        let ns = format!("td{run}-h{h}");
        // Interface names have at most 15 bytes: "td" + 6 + "h" + index + "r"/"n".
        let (veth_root, veth_host) = (format!("td{run}h{h}r"), format!("td{run}h{h}n"));
        let subnet = pick_subnet();
        hosts.subnets.push(subnet);
        let (root_ip, host_ip) = (subnet_addr(subnet, 1), subnet_addr(subnet, 2));
        let (root_cidr, host_cidr) = (format!("{root_ip}/30"), format!("{host_ip}/30"));
        ip(&["netns", "add", &ns]).unwrap();
        hosts.namespaces.push((ns.clone(), veth_root.clone()));
        for step in [
            vec![
                "link", "add", &veth_root, "type", "veth", "peer", "name", &veth_host, "netns", &ns,
            ],
            vec!["addr", "add", &root_cidr, "dev", &veth_root],
            vec!["link", "set", &veth_root, "up"],
            vec!["-n", &ns, "addr", "add", &host_cidr, "dev", &veth_host],
            vec!["-n", &ns, "link", "set", &veth_host, "up"],
            vec!["-n", &ns, "link", "set", "lo", "up"],
        ] {
            ip(&step).unwrap();
        }
        // The forwarders listen on the root side of the veth only: nothing else can reach them.
        hosts.hosts.push(Host {
            veth_host,
            addr: host_ip,
            db: Forwarder::start(SocketAddr::new(root_ip.into(), 0), pg).await,
            provider: Forwarder::start(SocketAddr::new(root_ip.into(), 0), *provider).await,
            worker: None,
            config_path: std::env::temp_dir().join(format!("tidings-{ns}.toml")),
            log_path: std::env::temp_dir().join(format!("tidings-{ns}.log")),
            ns,
        });
    }
    Some(hosts)
}

impl Hosts {
    /// Starts `tidings worker` on every host against database `db_name`, with `worker` keys in `[worker]` and
    /// `channel` keys in the `sms` channel (kind sandbox, through the host's provider forwarder). The channel
    /// timeout is 5 s: a loopback answer slower than a short one happens on a starved machine, and its retry
    /// would be a second request for the same message that these tests do not expect.
    fn start_workers(&mut self, db_name: &str, worker: &str, channel: &str) {
        for host in &mut self.hosts {
            let root = host.db.addr.ip();
            let toml = format!(
                "[worker]\n{worker}\n[http]\nlisten = \"{}:9464\"\n[channels.sms]\nkind = \"sandbox\"\n\
                 base_url = \"http://{root}:{}\"\nallow_insecure_http = true\ntimeout = \"5s\"\n{channel}\n",
                host.addr,
                host.provider.addr.port()
            );
            std::fs::write(&host.config_path, toml).unwrap();
            let log = std::fs::File::create(&host.log_path).unwrap();
            let url = format!(
                "postgres://postgres@{root}:{}/{db_name}",
                host.db.addr.port()
            );
            let child = Command::new("ip")
                .args(["netns", "exec", &host.ns])
                .arg(worker_bin())
                .args(["worker", "--config"])
                .arg(&host.config_path)
                .env("DATABASE_URL", url)
                .env("RUST_LOG", "warn")
                // The hosts have no route to any proxy: their requests go straight to the forwarder.
                .env_remove("HTTP_PROXY")
                .env_remove("http_proxy")
                .env_remove("ALL_PROXY")
                .env_remove("all_proxy")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn ip netns exec … tidings worker");
            host.worker = Some(child);
        }
    }

    /// Host `i`'s /metrics, or None when it does not answer.
    async fn metrics(&self, i: usize) -> Option<String> {
        let url = format!("http://{}:9464/metrics", self.hosts[i].addr);
        let response = self.http.get(url).send().await.ok()?;
        response.text().await.ok()
    }

    /// Waits until every host's worker is ready (its /readyz answers 200: database reachable, migrations current).
    async fn wait_ready(&self) {
        for (i, host) in self.hosts.iter().enumerate() {
            let url = format!("http://{}:9464/readyz", host.addr);
            wait_until(
                Duration::from_secs(60),
                &format!("host {i} ready"),
                || async {
                    self.http
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                },
            )
            .await;
        }
    }

    /// A sample of host `i`: the sum of the series named `name` whose labels include every one of `labels`.
    async fn sample(&self, i: usize, name: &str, labels: &[&str]) -> Option<f64> {
        Some(sum_series(&self.metrics(i).await?, name, labels))
    }

    /// Cuts host `i` off: its end of the veth goes down (inside its namespace), as a pulled cable would.
    fn cut(&self, i: usize) {
        let host = &self.hosts[i];
        ip(&["-n", &host.ns, "link", "set", &host.veth_host, "down"]).unwrap();
    }

    /// Which host leads the maintenance, once exactly one says it does.
    async fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut leaders = Vec::new();
            for i in 0..self.hosts.len() {
                if self.sample(i, "tidings_leader", &[]).await == Some(1.0) {
                    leaders.push(i);
                }
            }
            if let [leader] = leaders[..] {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for one leader: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the workers and the forwarders, then waits until the test database has no session of theirs left
    /// (a forwarder closes its server side asynchronously), so that dropping the database does not race them.
    async fn close(mut self, pool: &PgPool) {
        self.kill_workers();
        for host in &self.hosts {
            host.db.stop.cancel();
            host.provider.stop.cancel();
        }
        wait_until(Duration::from_secs(30), "the hosts' sessions closed", || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'tidings'",
            )
            .fetch_one(pool)
            .await
            .unwrap()
                == 0
        })
        .await;
    }

    /// Stops every worker (SIGKILL: a stop with a grace period would be a different test) and waits for them.
    fn kill_workers(&mut self) {
        for host in &mut self.hosts {
            if let Some(mut child) = host.worker.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.kill_workers();
        for host in &self.hosts {
            // (Its forwarders stop when they are dropped, after this.)
            let _ = std::fs::remove_file(&host.config_path);
            if std::thread::panicking() {
                eprintln!("worker log of {}: {}", host.ns, host.log_path.display());
            } else {
                let _ = std::fs::remove_file(&host.log_path);
            }
        }
        // The pair goes first: a namespace outlives its name while sockets of a killed process linger in it (a
        // cut-off host's, retransmitting a FIN over the downed link), and with it the veth pair.
        for (ns, veth_root) in &self.namespaces {
            let _ = ip(&["link", "del", veth_root]);
            let _ = ip(&["netns", "del", ns]);
        }
        TAKEN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| !self.subnets.contains(t));
    }
}

/// Sum of the samples of `name` whose label set contains each of `labels` (`channel="sms"`), in Prometheus text.
fn sum_series(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            (series_name == name && labels.iter().all(|want| series_labels.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

async fn db_name(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn start_sandbox(options: SandboxOptions) -> Sandbox {
    Sandbox::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap()
}

fn sandbox_addr(sandbox: &Sandbox) -> SocketAddr {
    sandbox
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

/// The sandbox's send requests (the sandbox kind's `send` route), oldest first.
fn sends(requests: &[SandboxRequest]) -> Vec<&SandboxRequest> {
    requests
        .iter()
        .filter(|r| r.kind == "sandbox" && r.route == "send")
        .collect()
}

/// Messages sent by each host, from its own /metrics.
async fn sent_by_host(hosts: &Hosts, alive: &[usize]) -> Vec<f64> {
    let mut out = Vec::new();
    for &i in alive {
        let sent = hosts
            .sample(i, "tidings_transitions_total", &["status=\"sent\""])
            .await
            .unwrap_or_else(|| panic!("host {i} answers /metrics"));
        out.push(sent);
    }
    out
}

const HOSTS: usize = 3;
const CONCURRENCY: usize = 8;

/// Only host 0 meets the 429s: its provider forwarder leads to a sandbox that refuses everything, the other hosts'
/// to one that never refuses. They learn of the pause from the database alone.
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_429_on_one_host_pauses_the_channel_on_every_host(pool: PgPool) {
    let latency = Duration::from_millis(20);
    let refusing = start_sandbox(SandboxOptions {
        fail_429: 1.0,
        retry_after_secs: 3,
        latency,
        ..Default::default()
    })
    .await;
    let sandbox = start_sandbox(SandboxOptions {
        latency,
        ..Default::default()
    })
    .await;
    let providers = [
        sandbox_addr(&refusing),
        sandbox_addr(&sandbox),
        sandbox_addr(&sandbox),
    ];
    let Some(mut hosts) = make_hosts(
        &providers,
        "a_429_on_one_host_pauses_the_channel_on_every_host",
    )
    .await
    else {
        return;
    };
    hosts.start_workers(
        &db_name(&pool).await,
        &format!(
            "concurrency = {CONCURRENCY}\nclaim_batch = {CONCURRENCY}\npoll_interval = \"50ms\""
        ),
        "backoff = { base = \"100ms\", cap = \"200ms\" }",
    );
    hosts.wait_ready().await;
    let n = 600;
    enqueue_n(&pool, "sms", n).await;

    // Host 0's first answer is a 429, which pauses the channel in the database. Once the pause is seen its
    // provider stops refusing, so later 429s can only be answers to requests already in flight.
    wait_until(Duration::from_secs(60), "the channel paused", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT coalesce(bool_or(paused_until > now()), false) FROM tidings.channel_state WHERE channel = 'sms'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    })
    .await;
    let pause_seen = Utc::now();
    refusing.set_options(SandboxOptions {
        latency,
        ..Default::default()
    });
    for i in 0..HOSTS {
        assert!(
            hosts.metrics(i).await.is_some(),
            "host {i} is alive during the pause"
        );
    }
    wait_until(Duration::from_secs(90), "every message final", || async {
        live(&pool).await == 0
    })
    .await;
    let all: Vec<usize> = (0..HOSTS).collect();
    let per_host = sent_by_host(&hosts, &all).await;
    let mut refused = Vec::new();
    for &i in &all {
        refused.push(
            hosts
                .sample(i, "tidings_provider_requests_total", &["code=\"429\""])
                .await
                .unwrap(),
        );
    }
    hosts.close(&pool).await;
    let pause_end: DateTime<Utc> = sqlx::query_scalar(
        "SELECT max(paused_until) FROM tidings.channel_state WHERE channel = 'sms'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    assert_eq!(count(&pool, "sent").await, n as i64, "every message sent");
    assert!(refused[0] > 0.0, "host 0 met the 429s: {refused:?}");
    assert!(
        refused[1..].iter().all(|r| *r == 0.0),
        "the other hosts never met one: {refused:?}"
    );
    // Every host took part once the pause was over: the quiet below is the pause, not a host that was down.
    assert!(
        per_host.iter().all(|s| *s > 0.0),
        "each host sent some messages: {per_host:?}"
    );
    // Once the pause was in the database, the providers saw at most what was already in flight on the hosts:
    // no host claimed for the channel until the pause ended. A host that ignored the pause would have sent
    // hundreds in these 3 s (8 slots, 20 ms answers: up to 400 per second per host).
    let (mut requests, refusing_log) = (sandbox.requests(), refusing.requests());
    requests.extend(refusing_log);
    let sends = sends(&requests);
    let during = |host_log: &[SandboxRequest]| {
        host_log
            .iter()
            .filter(|r| r.kind == "sandbox" && r.at > pause_seen && r.at < pause_end)
            .count()
    };
    let (during_others, during_all) = (during(&sandbox.requests()), during(&requests));
    eprintln!(
        "hosts: {during_all} requests answered while the channel was paused ({during_others} from the hosts that \
         never met a 429; {} ms from seen to end), {} in all",
        (pause_end - pause_seen).num_milliseconds(),
        sends.len()
    );
    assert!(
        during_others <= 2 * CONCURRENCY,
        "{during_others} requests of the hosts that never met a 429 reached the provider while the channel was \
         paused (in flight at most {})",
        2 * CONCURRENCY
    );
    assert!(
        during_all <= HOSTS * CONCURRENCY,
        "{during_all} requests reached the providers while the channel was paused (in flight at most {})",
        HOSTS * CONCURRENCY
    );
    assert!(
        sends.iter().any(|r| r.at >= pause_end && r.status == 202),
        "sending resumed after the pause"
    );
    sandbox.stop().await;
    refusing.stop().await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_rate_limit_holds_across_hosts(pool: PgPool) {
    let sandbox = start_sandbox(SandboxOptions::default()).await;
    let Some(mut hosts) = make_hosts(
        &[sandbox_addr(&sandbox); HOSTS],
        "the_rate_limit_holds_across_hosts",
    )
    .await
    else {
        return;
    };
    let rate = 30;
    hosts.start_workers(
        &db_name(&pool).await,
        &format!(
            "concurrency = {CONCURRENCY}\nclaim_batch = {CONCURRENCY}\npoll_interval = \"50ms\""
        ),
        &format!("rate_per_sec = {rate}"),
    );
    hosts.wait_ready().await;
    let n = 120;
    enqueue_n(&pool, "sms", n).await;
    wait_until(Duration::from_secs(90), "every message final", || async {
        live(&pool).await == 0
    })
    .await;
    let per_host = sent_by_host(&hosts, &(0..HOSTS).collect::<Vec<_>>()).await;
    hosts.close(&pool).await;

    assert_eq!(count(&pool, "sent").await, n as i64);
    assert!(
        per_host.iter().filter(|s| **s > 0.0).count() >= 2,
        "the limit was shared by several hosts: {per_host:?}"
    );
    let requests = sandbox.requests();
    let at: Vec<DateTime<Utc>> = sends(&requests).iter().map(|r| r.at).collect();
    assert_eq!(at.len(), n, "one request per message");
    // The README's bound: claims never exceed rate_per_sec in any one-second window; a send trails its claim by
    // a scheduling delay (here also a forwarder hop), so a window of sends may run a little over on a starved
    // machine: a quarter of the rate is allowed for that, as in policy_e2e, far below what a per-host limit would
    // let through (3 x 30 in the first second).
    let bound = rate + rate / 4;
    let busiest = (0..at.len())
        .map(|i| {
            let in_window = at[i..]
                .iter()
                .take_while(|t| **t < at[i] + chrono::Duration::seconds(1))
                .count();
            (in_window, at[i])
        })
        .max()
        .unwrap();
    eprintln!(
        "hosts: at most {} sends in one second (rate_per_sec {rate}), {n} in {:.2} s",
        busiest.0,
        (at[n - 1] - at[0]).as_seconds_f64()
    );
    assert!(
        busiest.0 <= bound,
        "{} sends in the second after {} (rate_per_sec {rate})",
        busiest.0,
        busiest.1
    );
    // And the limit did bite: tokens accrue at 90% of the rate, so 120 sends cannot fit in (120 - 30) / 30 s.
    let span = at[n - 1] - at[0];
    assert!(
        span >= chrono::Duration::seconds(3),
        "{n} sends at {rate}/s took only {span}"
    );
    sandbox.stop().await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_host_cut_off_mid_drain_loses_nothing(pool: PgPool) {
    let latency = Duration::from_millis(50);
    let sandbox = start_sandbox(SandboxOptions {
        latency,
        ..Default::default()
    })
    .await;
    let Some(mut hosts) = make_hosts(
        &[sandbox_addr(&sandbox); HOSTS],
        "a_host_cut_off_mid_drain_loses_nothing",
    )
    .await
    else {
        return;
    };
    // The lease (at least twice the 5 s timeout) runs out before the cut-off leader's session does (about 20 s),
    // so the rescue comes as soon as another host leads.
    hosts.start_workers(
        &db_name(&pool).await,
        &format!(
            "concurrency = {CONCURRENCY}\nclaim_batch = {CONCURRENCY}\npoll_interval = \"100ms\"\nlease = \"10s\"\n\
             rescue_interval = \"500ms\"\nmax_connections = 4"
        ),
        "",
    );
    hosts.wait_ready().await;
    // The host to cut off is the leader, which alone runs the rescuer: another must take over first.
    let victim = hosts.wait_leader().await;
    let n = 1500;
    enqueue_n(&pool, "sms", n).await;
    // Mid-drain: the victim holds claimed messages (sends in flight) and there is backlog left.
    wait_until(
        Duration::from_secs(60),
        "the victim holds messages",
        || async {
            hosts
                .sample(victim, "tidings_inflight", &["channel=\"sms\""])
                .await
                .is_some_and(|v| v > 0.0)
        },
    )
    .await;
    hosts.cut(victim);
    let cut_at = Utc::now();
    let others: Vec<usize> = (0..HOSTS).filter(|i| *i != victim).collect();

    let started = Instant::now();
    wait_until(Duration::from_secs(120), "every message final", || async {
        live(&pool).await == 0
    })
    .await;
    eprintln!(
        "hosts: all {n} final {:.1} s after cutting off host {victim} (the leader)",
        started.elapsed().as_secs_f64()
    );
    let mut leaders = 0.0;
    for &i in &others {
        leaders += hosts
            .sample(i, "tidings_leader", &[])
            .await
            .expect("a live host answers");
    }
    let per_host = sent_by_host(&hosts, &others).await;
    hosts.close(&pool).await;

    assert_eq!(count(&pool, "sent").await, n as i64, "nothing lost");
    assert_eq!(leaders, 1.0, "another host took over the maintenance");
    assert!(
        per_host.iter().all(|s| *s > 0.0),
        "the other hosts drained: {per_host:?}"
    );
    let rescued: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT message_id, at FROM tidings.message_events WHERE reason = 'lease_expired' ORDER BY at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        !rescued.is_empty(),
        "the cut-off host held messages, and they were rescued after their lease"
    );
    assert!(
        rescued.iter().all(|(_, at)| *at > cut_at),
        "no rescue before the cut"
    );

    // At least once, never more than the lease allows: every message reached the provider, and a second send
    // of the same message (same idempotency id) came only after its lease expired and it was rescued.
    let requests = sandbox.requests();
    let mut by_message: HashMap<Uuid, Vec<DateTime<Utc>>> = HashMap::new();
    for r in sends(&requests) {
        let id: Uuid = r.idempotency_id.as_deref().unwrap().parse().unwrap();
        by_message.entry(id).or_default().push(r.at);
    }
    assert_eq!(by_message.len(), n, "every message reached the provider");
    let mut rescues: HashMap<Uuid, Vec<DateTime<Utc>>> = HashMap::new();
    for (id, at) in &rescued {
        rescues.entry(*id).or_default().push(*at);
    }
    let mut twice = 0;
    for (id, at) in &by_message {
        for second in &at[1..] {
            twice += 1;
            // The sandbox records a request when it answers, at least `latency` after it arrived; the rescue
            // came before the claim that led to this second request.
            let arrived_by = *second - chrono::Duration::from_std(latency).unwrap();
            assert!(
                rescues
                    .get(id)
                    .is_some_and(|r| r.iter().any(|t| *t < arrived_by)),
                "message {id} reached the provider again at {second} without a rescue (lease expired) before"
            );
        }
    }
    eprintln!(
        "hosts: {} rescued after the cut, {twice} of them sent a second time (their first send had reached the \
         provider before the cut)",
        rescued.len()
    );
    sandbox.stop().await;
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Throughput grows with hosts while the database has room: for each host count in `TIDINGS_HOSTS` (default
/// `1,2,4`), `TIDINGS_HOSTS_MESSAGES` messages (5000) are drained by that many hosts, each with
/// `TIDINGS_HOSTS_CONCURRENCY` slots (32), against a sandbox answering after `TIDINGS_HOSTS_LATENCY_MS` (50). Measured,
/// not asserted (no timing assertions in the suite): `ops/hosts.sh` runs it with a release worker and prints the
/// figures. The drain is timed from the first attempt's start to the last `sent` event, in the database.
#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
#[ignore = "a measurement: run by ops/hosts.sh"]
async fn drain_rate_by_host_count(pool: PgPool) {
    let counts: Vec<usize> = std::env::var("TIDINGS_HOSTS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("TIDINGS_HOSTS: host counts, comma-separated")
        })
        .collect();
    let n = env_or("TIDINGS_HOSTS_MESSAGES", 5000usize);
    let concurrency = env_or("TIDINGS_HOSTS_CONCURRENCY", 32usize);
    let latency_ms = env_or("TIDINGS_HOSTS_LATENCY_MS", 50u64);
    let sandbox = start_sandbox(SandboxOptions {
        latency: Duration::from_millis(latency_ms),
        ..Default::default()
    })
    .await;
    let db = db_name(&pool).await;
    println!(
        "hosts: {n} messages per run, {concurrency} slots per host, provider latency {latency_ms} ms, worker {}",
        worker_bin().display()
    );
    for hosts_n in counts {
        let Some(mut hosts) = make_hosts(
            &vec![sandbox_addr(&sandbox); hosts_n],
            "drain_rate_by_host_count",
        )
        .await
        else {
            return;
        };
        hosts.start_workers(
            &db,
            &format!("concurrency = {concurrency}\nclaim_batch = {concurrency}\npoll_interval = \"100ms\""),
            "",
        );
        hosts.wait_ready().await;
        let run_start: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&pool)
            .await
            .unwrap();
        enqueue_n(&pool, "sms", n).await;
        wait_until(Duration::from_secs(600), "every message final", || async {
            live(&pool).await == 0
        })
        .await;
        let per_host = sent_by_host(&hosts, &(0..hosts_n).collect::<Vec<_>>()).await;
        hosts.close(&pool).await;
        let (sent, secs): (i64, f64) = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM max(at) - min(started_at))::float8
               FROM tidings.message_events WHERE status = 'sent' AND at > $1",
        )
        .bind(run_start)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(sent, n as i64, "every message sent once");
        let rate = sent as f64 / secs;
        let shares: Vec<String> = per_host.iter().map(|s| format!("{s:.0}")).collect();
        println!(
            "hosts {hosts_n}: drained {sent} in {secs:.2} s = {rate:.0} msgs/s ({:.0} per host; sent per host {})",
            rate / hosts_n as f64,
            shares.join("/")
        );
    }
    sandbox.stop().await;
}
