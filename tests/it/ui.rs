//! The dashboard (`/` of `tidings serve`): the session cookie and its CSRF rule over plain HTTP, then the pages in
//! headless Chromium driven over WebDriver (`chromedriver`, started here on a free port; skipped with one line when
//! it is not installed — `.ci/run` installs it). Screenshots go to `target/ui-shots/`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tidings::app::sandbox_server::{Sandbox, SandboxOptions};
use tidings::config::Config;
use tidings::store::Store;
use tidings_client::{NewMessage, UseCase};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{start_pools, sync, wait_until};

const READ: &str = "read-token-0123456789abc";
const ADMIN: &str = "admin-token-0123456789ab";

fn env(var: &str) -> Option<String> {
    match var {
        "T_READ" => Some(READ.into()),
        "T_ADMIN" => Some(ADMIN.into()),
        _ => None,
    }
}

/// Two sandbox channels, `sms` (with `sms_extra` keys) and `alerts`, and the API with a read and an admin token.
fn config(sms: &str, alerts: &str, sms_extra: &str) -> Config {
    Config::parse(&format!(
        r#"
[worker]
poll_interval = "50ms"
[http]
listen = "127.0.0.1:0"
[api]
listen = "127.0.0.1:0"
[[api.tokens]]
name = "grafana"
scope = "read"
env = "T_READ"
[[api.tokens]]
name = "ops"
scope = "admin"
env = "T_ADMIN"
[channels.sms]
kind = "sandbox"
base_url = "{sms}"
timeout = "2s"
rate_per_sec = 20.0
{sms_extra}
[channels.alerts]
kind = "sandbox"
base_url = "{alerts}"
timeout = "2s"
"#
    ))
    .unwrap()
}

async fn serve(pool: &PgPool, config: &Config) -> (String, CancellationToken, Store) {
    let store = sync(pool, config).await;
    let stop = CancellationToken::new();
    let (addr, _task) = tidings::api::start(config, store.clone(), &env, stop.clone())
        .await
        .unwrap();
    (format!("http://{addr}"), stop, store)
}

async fn sandbox(options: SandboxOptions) -> Sandbox {
    Sandbox::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap()
}

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn cookie_value(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no cookie {name} in {cookies:?}"))
        .to_owned()
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_session_cookie_stands_in_for_the_token_and_needs_the_csrf_token_to_act(pool: PgPool) {
    let config = config("http://127.0.0.1:9", "http://127.0.0.1:9", "");
    let (base, stop, _) = serve(&pool, &config).await;
    let http = reqwest::Client::new();
    let id = NewMessage::sms("sms", "+31612345678")
        .text("later")
        .scheduled_for(chrono::Utc::now() + chrono::Duration::days(1))
        .enqueue(&pool)
        .await
        .unwrap();

    // A login needs a JSON body with a configured token.
    let bad = http
        .post(format!("{base}/ui/session"))
        .json(&json!({ "token": "not-a-token-at-all-0000" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookies(&bad).is_empty());
    let form = http
        .post(format!("{base}/ui/session"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let login = |token: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let resp = http
                .post(format!("{base}/ui/session"))
                .json(&json!({ "token": token }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            set_cookies(&resp)
        }
    };
    let cookies = login(ADMIN).await;
    let session_line = cookies
        .iter()
        .find(|c| c.starts_with("tidings_session="))
        .unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session_line.contains(flag), "{session_line}");
    }
    let session = cookie_value(&cookies, "tidings_session");
    let csrf = cookie_value(&cookies, "tidings_csrf");
    assert!(
        !cookies.iter().any(|c| c.contains(ADMIN)),
        "never the token"
    );
    assert_ne!(session, csrf);
    let with_cookie = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{base}{path}")).header(
            "cookie",
            format!("tidings_session={session}; tidings_csrf={csrf}"),
        )
    };

    // Reads work with the cookie alone.
    let me: Value = with_cookie(reqwest::Method::GET, "/ui/me")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me,
        json!({ "name": "ops", "scope": "admin", "open": false })
    );
    let stats = with_cookie(reqwest::Method::GET, "/v1/stats")
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), StatusCode::OK);

    // An action with the cookie but without (or with a wrong) CSRF token: 403, nothing changed.
    let cancel = format!("/v1/messages/{id}/cancel");
    for header in [None, Some("wrong"), Some("")] {
        let mut r = with_cookie(reqwest::Method::POST, &cancel);
        if let Some(h) = header {
            r = r.header("x-csrf-token", h);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "csrf {header:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["field"], "X-CSRF-Token");
    }
    assert_eq!(status_of(&pool, id).await, "scheduled");
    let resp = with_cookie(reqwest::Method::POST, &cancel)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(status_of(&pool, id).await, "canceled");
    let by: Value = sqlx::query_scalar(
        "SELECT detail FROM tidings.message_events WHERE message_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        by["by"], "ops",
        "the event names the token behind the session"
    );

    // A read-only session with a valid CSRF token is still refused an action.
    let read = login(READ).await;
    let resp = http
        .post(format!("{base}/v1/channels/sms/pause"))
        .header(
            "cookie",
            format!("tidings_session={}", cookie_value(&read, "tidings_session")),
        )
        .header("x-csrf-token", cookie_value(&read, "tidings_csrf"))
        .json(&json!({ "until": chrono::Utc::now() + chrono::Duration::minutes(5), "reason": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Logout ends the session on the server: the old cookie is refused.
    let out = with_cookie(reqwest::Method::POST, "/ui/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(set_cookies(&out).iter().all(|c| c.contains("Max-Age=0")));
    let after = with_cookie(reqwest::Method::GET, "/v1/stats")
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    // A made-up session id is refused too; a bearer token still needs no CSRF token.
    let forged = http
        .get(format!("{base}/v1/stats"))
        .header("cookie", "tidings_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let bearer = http
        .post(format!("{base}/v1/channels/sms/resume"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::OK);
    stop.cancel();
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn pages_and_hashed_assets_are_served_with_their_caching_and_security_headers(pool: PgPool) {
    let config = config("http://127.0.0.1:9", "http://127.0.0.1:9", "");
    let (base, stop, _) = serve(&pool, &config).await;
    let http = reqwest::Client::new();
    let (script, style) = tidings::api::ui::assets::asset_paths();
    for page in [
        "/",
        "/login",
        "/messages",
        &format!("/messages/{}", Uuid::now_v7()),
    ] {
        let resp = http.get(format!("{base}{page}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{page}");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        assert!(
            resp.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        let html = resp.text().await.unwrap();
        assert!(html.contains(&script) && html.contains(&style), "{html}");
    }
    for asset in [&script, &style] {
        let resp = http.get(format!("{base}{asset}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
    }
    let stale = http
        .get(format!("{base}/ui/assets/app.0000000000000000.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::NOT_FOUND);
    stop.cancel();
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn the_timeline_counts_sent_failed_and_deferred_per_minute(pool: PgPool) {
    let ok = sandbox(SandboxOptions::default()).await;
    let config = config(&ok.base_url(), &ok.base_url(), "");
    let (base, stop, _) = serve(&pool, &config).await;
    let sent = crate::support::enqueue_n(&pool, "sms", 3).await;
    let pools = start_pools(&pool, &config, 1).await;
    wait_until(Duration::from_secs(30), "drained", || async {
        crate::support::live(&pool).await == 0
    })
    .await;
    pools.stop().await;
    let http = reqwest::Client::new();
    let t: Value = http
        .get(format!("{base}/v1/stats/timeline?window=1h"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["window_seconds"], 3600);
    let total = |k: &str| -> i64 {
        t["minutes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[k].as_i64().unwrap())
            .sum()
    };
    assert_eq!(total("sent"), sent.len() as i64);
    assert_eq!(total("failed"), 0, "{t}");
    assert_eq!(total("deferred"), 0);
    let bad = http
        .get(format!("{base}/v1/stats/timeline?window=2d"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    stop.cancel();
    ok.stop().await;
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn without_tokens_the_dashboard_needs_no_login_on_loopback(pool: PgPool) {
    let config = Config::parse(
        "[api]\nlisten = \"127.0.0.1:0\"\n[channels.sms]\nkind = \"sandbox\"\nmode = \"noop\"\n",
    )
    .unwrap();
    let (base, stop, _) = serve(&pool, &config).await;
    let me: Value = reqwest::get(format!("{base}/ui/me"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me,
        json!({ "name": "anonymous", "scope": "admin", "open": true })
    );
    stop.cancel();
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn a_messages_page_shows_the_callbacks_sent_for_it(pool: PgPool) {
    let Some(driver) = start_driver().await else {
        return;
    };
    let config = Config::parse(
        "[api]\nlisten = \"127.0.0.1:0\"\n[channels.sms]\nkind = \"sandbox\"\nmode = \"noop\"\n\
         [callbacks]\nallowed_hosts = [\"hooks.example.com\"]\nsecret_env = \"CB_SECRET\"\n",
    )
    .unwrap();
    let (base, stop, _) = serve(&pool, &config).await;
    let id = NewMessage::sms("sms", "+31610000001")
        .text("hi")
        .scheduled_for(chrono::Utc::now() + chrono::Duration::days(1))
        .callback_url("https://hooks.example.com/secret-path?token=abc")
        .enqueue(&pool)
        .await
        .unwrap();
    sqlx::query("SELECT tidings.cancel($1)")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    // As a worker records it: two attempts, the first answered 503.
    sqlx::query(
        "UPDATE tidings.callback_outbox SET attempts = 2, last_error = 'http_503', delivered_at = now() WHERE message_id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let client = browser(&driver).await;
    let result = std::panic::AssertUnwindSafe(async {
        open(&client, &base, &format!("/messages/{id}")).await;
        let row = text_of(&client, "#callbacks li[data-status=canceled]").await;
        assert!(row.contains("message.canceled"), "{row}");
        assert!(row.contains("hooks.example.com"), "{row}");
        assert!(
            row.contains("delivered") && row.contains("2 attempts"),
            "{row}"
        );
        assert!(row.contains("HTTP 503"), "{row}");
        assert!(!row.contains("secret-path"), "{row}");
    })
    .catch_unwind()
    .await;
    client.close().await.unwrap();
    stop.cancel();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn status_of(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status::text FROM tidings.messages WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn has_event(pool: &PgPool, id: Uuid, reason: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tidings.message_events WHERE message_id = $1 AND reason = $2)",
    )
    .bind(id)
    .bind(reason)
    .fetch_one(pool)
    .await
    .unwrap()
}

// ---- the browser --------------------------------------------------------------------------------------------

/// A chromedriver child on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromedriver"))
        .find(|p| p.is_file())
}

async fn start_driver() -> Option<Driver> {
    let Some(binary) = chromedriver() else {
        println!("skipped: chromedriver not found (install Debian's chromium and chromium-driver)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        // The browser shows times in its zone: UTC, so the test reads what it expects.
        .env("TZ", "UTC")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    wait_until(Duration::from_secs(20), "chromedriver answers", || {
        let status = status.clone();
        async move { reqwest::get(&status).await.is_ok() }
    })
    .await;
    Some(driver)
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--force-prefers-reduced-motion",
    ];
    if std::env::var_os("TIDINGS_UI_DARK").is_some() {
        args.push("--force-dark-mode");
    }
    caps.insert("goog:chromeOptions".into(), json!({ "args": args }));
    ClientBuilder::native()
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Waits until the element `css` shows `want` (the page polls, so it may take a refresh).
async fn wait_text(client: &Client, css: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = match client.find(Locator::Css(css)).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if got.contains(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{css} shows {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(client: &Client, css: &str) {
    client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn count(client: &Client, css: &str) -> usize {
    client.find_all(Locator::Css(css)).await.unwrap().len()
}

/// Loads `path` and waits until the page rendered its data.
async fn open(client: &Client, base: &str, path: &str) {
    client.goto(&format!("{base}{path}")).await.unwrap();
    loaded(client).await;
}

async fn loaded(client: &Client) {
    let waited = client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("main[data-loaded]"))
        .await;
    if waited.is_err() {
        shot(client, "failure").await;
        let url = client.current_url().await.unwrap();
        let main = text_of(client, "main").await;
        panic!("{url} did not render its data; it shows: {main}");
    }
}

async fn shot(client: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-shots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = client.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn login(client: &Client, base: &str, token: &str) {
    client.goto(&format!("{base}/")).await.unwrap();
    // Not logged in: the page sends us to the login form.
    client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#login-form"))
        .await
        .unwrap();
    assert!(client.current_url().await.unwrap().path() == "/login");
    client
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    click(client, "#login-form button[type=submit]").await;
    client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#channel-table"))
        .await
        .unwrap();
}

#[sqlx::test(migrator = "tidings::store::MIGRATOR")]
async fn operators_find_act_and_read_only_users_only_look(pool: PgPool) {
    let Some(driver) = start_driver().await else {
        return;
    };
    let ok = sandbox(SandboxOptions::default()).await;
    // Quiet hours around now in Asia/Tokyo (no DST), so the marketing message is held whenever the test runs.
    let tokyo: chrono_tz::Tz = "Asia/Tokyo".parse().unwrap();
    let local = chrono::Utc::now().with_timezone(&tokyo);
    let hm = |t: chrono::DateTime<chrono_tz::Tz>| t.format("%H:%M").to_string();
    let quiet = format!(
        "[channels.sms.quiet_hours]\nstart = \"{}\"\nend = \"{}\"",
        hm(local - chrono::Duration::hours(1)),
        hm(local + chrono::Duration::hours(2))
    );
    let config_a = config(&ok.base_url(), &ok.base_url(), &quiet);
    let (base, stop, _) = serve(&pool, &config_a).await;

    let later = chrono::Utc::now() + chrono::Duration::days(1);
    for i in 0..4 {
        NewMessage::sms("sms", format!("+3161000000{i}"))
            .text("your code is 1234")
            .tags(["receipt"])
            .enqueue(&pool)
            .await
            .unwrap();
    }
    for i in 0..3 {
        NewMessage::sms("alerts", format!("+3162000000{i}"))
            .text("disk full")
            .tags(["ops"])
            .enqueue(&pool)
            .await
            .unwrap();
    }
    let held = NewMessage::raw(
        "sms",
        json!({ "phone": "+819012345678", "timezone": "Asia/Tokyo" }),
        json!({}),
    )
    .text("weekend sale")
    .use_case(UseCase::Marketing)
    .tags(["promo"])
    .reference("order-42")
    .enqueue(&pool)
    .await
    .unwrap();
    let mut promos = vec![held];
    for i in 0..2 {
        promos.push(
            NewMessage::sms("sms", format!("+3163000000{i}"))
                .text("weekend sale")
                .use_case(UseCase::Marketing)
                .tags(["promo"])
                .scheduled_for(later)
                .enqueue(&pool)
                .await
                .unwrap(),
        );
    }
    let single = NewMessage::sms("alerts", "+31640000000")
        .text("maintenance tonight")
        .tags(["later"])
        .scheduled_for(later)
        .enqueue(&pool)
        .await
        .unwrap();

    // Drain with quiet hours on: 7 sent, the marketing message held.
    let pools = start_pools(&pool, &config_a, 1).await;
    wait_until(Duration::from_secs(30), "7 sent, 1 held", || async {
        crate::support::count(&pool, "sent").await == 7
            && has_event(&pool, held, "quiet_hours").await
    })
    .await;
    pools.stop().await;
    // Then the held message is due again and the provider answers 429 with Retry-After 30.
    let busy = sandbox(SandboxOptions {
        fail_429: 1.0,
        retry_after_secs: 30,
        ..Default::default()
    })
    .await;
    sqlx::query("UPDATE tidings.messages SET run_at = now() WHERE id = $1")
        .bind(held)
        .execute(&pool)
        .await
        .unwrap();
    let config_b = config(&busy.base_url(), &ok.base_url(), "");
    let pools = start_pools(&pool, &config_b, 1).await;
    wait_until(Duration::from_secs(30), "a 429 deferral", || async {
        has_event(&pool, held, "rate_limited").await
    })
    .await;
    pools.stop().await;

    let client = browser(&driver).await;
    // The steps run to the end or to their first failed assertion; either way the browser is closed (a panic
    // would otherwise leave Chromium running after chromedriver is killed).
    let steps = std::panic::AssertUnwindSafe(async {
        login(&client, &base, ADMIN).await;
        loaded(&client).await;

        // Overview: counts by channel and status, the 429 pause with its countdown, the chart.
        wait_text(
            &client,
            "tr[data-channel=sms] td[data-status=scheduled]",
            "3",
        )
        .await;
        wait_text(
            &client,
            "tr[data-channel=alerts] td[data-status=scheduled]",
            "1",
        )
        .await;
        wait_text(
            &client,
            "tr[data-channel=sms] td[data-status=accepted]",
            "0",
        )
        .await;
        let sms_row = text_of(&client, "tr[data-channel=sms]").await;
        assert!(
            sms_row.contains("paused") && sms_row.contains("rate_limited"),
            "{sms_row}"
        );
        assert!(sms_row.contains("20/s"), "{sms_row}");
        let alerts_row = text_of(&client, "tr[data-channel=alerts]").await;
        assert!(
            alerts_row.contains("running") && alerts_row.contains('3'),
            "{alerts_row}"
        );
        let chart = client
            .find(Locator::Css("#chart svg"))
            .await
            .unwrap()
            .attr("aria-label")
            .await
            .unwrap()
            .unwrap();
        assert!(chart.contains("7 sent"), "{chart}");
        wait_text(&client, "#error-reasons", "rate_limited × 1").await;
        shot(&client, "overview").await;
        // The chart's window is in the URL too.
        click(&client, "a[href='/?window=24h']").await;
        loaded(&client).await;
        assert_eq!(
            client.current_url().await.unwrap().query(),
            Some("window=24h")
        );
        let day = client
            .find(Locator::Css("#chart svg"))
            .await
            .unwrap()
            .attr("aria-label")
            .await
            .unwrap()
            .unwrap();
        assert!(
            day.starts_with("Last 24 hours") && day.contains("7 sent"),
            "{day}"
        );

        // The list, filtered by channel and tag through the form; the filter lands in the URL.
        open(&client, &base, "/messages").await;
        client
            .find(Locator::Css("#f-channel"))
            .await
            .unwrap()
            .select_by_value("sms")
            .await
            .unwrap();
        client
            .find(Locator::Css("#f-tag"))
            .await
            .unwrap()
            .send_keys("promo")
            .await
            .unwrap();
        click(&client, "#apply").await;
        loaded(&client).await;
        let url = client.current_url().await.unwrap();
        assert_eq!(url.path(), "/messages");
        assert_eq!(url.query(), Some("channel=sms&tag=promo"));
        assert_eq!(count(&client, "#message-table tbody tr").await, 3);
        let table = text_of(&client, "#message-table").await;
        assert!(table.contains("•••678"), "recipients masked: {table}");
        assert!(!table.contains("+819012345678"), "{table}");
        shot(&client, "messages").await;
        // Back and forward keep the filter.
        client.back().await.unwrap();
        loaded(&client).await;
        assert_eq!(client.current_url().await.unwrap().query(), None);
        client.forward().await.unwrap();
        loaded(&client).await;
        assert_eq!(count(&client, "#message-table tbody tr").await, 3);

        // The held message's timeline: the quiet-hours hold and the 429 pause in words, details one click away.
        click(&client, &format!("tr[data-id='{held}'] a")).await;
        loaded(&client).await;
        assert_eq!(
            client.current_url().await.unwrap().path(),
            format!("/messages/{held}")
        );
        let quiet = text_of(&client, "#timeline li[data-reason=quiet_hours] .human").await;
        assert!(
            quiet.starts_with("held by quiet hours until ") && quiet.ends_with("Asia/Tokyo"),
            "{quiet}"
        );
        let limited = text_of(&client, "#timeline li[data-reason=rate_limited] .human").await;
        assert!(
            limited.starts_with("channel paused by a 429 until ")
                && limited.ends_with("(Retry-After 30 s)"),
            "{limited}"
        );
        click(&client, "#timeline li[data-reason=rate_limited] summary").await;
        let detail = text_of(&client, "#timeline li[data-reason=rate_limited] pre").await;
        assert!(detail.contains("\"http_status\": 429"), "{detail}");
        let recipient = text_of(&client, "#recipient").await;
        assert!(
            recipient.ends_with("678") && !recipient.contains("9012345"),
            "{recipient}"
        );
        shot(&client, "message").await;
        // The same page on a phone-sized window.
        client.set_window_size(390, 844).await.unwrap();
        shot(&client, "message-phone").await;
        client.set_window_size(1280, 1000).await.unwrap();

        // Cancel one scheduled message from its page.
        open(&client, &base, &format!("/messages/{single}")).await;
        click(&client, "#actions [data-action=cancel]").await;
        click(&client, "#confirm").await;
        wait_until(Duration::from_secs(15), "canceled from the UI", || async {
            status_of(&pool, single).await == "canceled"
        })
        .await;

        // Bulk-cancel everything the filter matches, after the dry run's count and the confirmation.
        open(
            &client,
            &base,
            "/messages?channel=sms&tag=promo&status=scheduled",
        )
        .await;
        click(&client, "[data-bulk=cancel]").await;
        let counted = text_of(&client, "#bulk-count").await;
        assert!(counted.starts_with("3 messages match"), "{counted}");
        for id in &promos {
            assert_eq!(
                status_of(&pool, *id).await,
                "scheduled",
                "nothing before the confirmation"
            );
        }
        click(&client, "#confirm").await;
        wait_until(
            Duration::from_secs(15),
            "bulk-canceled from the UI",
            || async {
                let mut all = true;
                for id in &promos {
                    all &= status_of(&pool, *id).await == "canceled";
                }
                all
            },
        )
        .await;

        // Pause a channel from the overview.
        open(&client, &base, "/").await;
        click(&client, "tr[data-channel=alerts] [data-action=pause]").await;
        click(&client, "#confirm").await;
        wait_until(Duration::from_secs(15), "alerts paused", || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT coalesce(paused_until > now() + interval '10 minutes', false) FROM tidings.channel_state WHERE channel = 'alerts'",
            )
            .fetch_optional(&pool)
            .await
            .unwrap()
            .unwrap_or(false)
        })
        .await;
        wait_text(
            &client,
            "tr[data-channel=alerts] td.state",
            "paused from the dashboard",
        )
        .await;

        // Read-only: everything visible, no action anywhere, and a forged action refused.
        click(&client, "#logout").await;
        login(&client, &base, READ).await;
        loaded(&client).await;
        assert_eq!(count(&client, "[data-action]").await, 0);
        // 60 more on the paused channel: 64 in all, so the list has a second page through the API's next_cursor.
        crate::support::enqueue_n(&pool, "alerts", 60).await;
        open(&client, &base, "/messages?channel=alerts").await;
        assert_eq!(count(&client, "#bulk, [data-bulk]").await, 0);
        assert_eq!(count(&client, "#message-table tbody tr").await, 50);
        let first_page = text_of(&client, "#message-table tbody tr:last-child").await;
        click(&client, ".pager a:last-child").await;
        loaded(&client).await;
        let url = client.current_url().await.unwrap();
        assert!(
            url.query().unwrap().starts_with("channel=alerts&cursor="),
            "{url}"
        );
        assert_eq!(count(&client, "#message-table tbody tr").await, 14);
        assert_ne!(
            text_of(&client, "#message-table tbody tr:first-child").await,
            first_page
        );
        client.back().await.unwrap();
        loaded(&client).await;
        assert_eq!(count(&client, "#message-table tbody tr").await, 50);
        let other = NewMessage::sms("alerts", "+31650000000")
            .text("later")
            .scheduled_for(later)
            .enqueue(&pool)
            .await
            .unwrap();
        open(&client, &base, &format!("/messages/{other}")).await;
        assert_eq!(count(&client, "#actions, [data-action]").await, 0);
        let forged = client
            .execute_async(
                r#"const [id, done] = arguments;
                   const csrf = document.cookie.match(/tidings_csrf=([^;]*)/)[1];
                   fetch(`/v1/messages/${id}/cancel`, { method: "POST", headers: { "X-CSRF-Token": csrf } })
                     .then((r) => done(r.status));"#,
                vec![json!(other.to_string())],
            )
            .await
            .unwrap();
        assert_eq!(forged, json!(403));
        assert_eq!(status_of(&pool, other).await, "scheduled");

    })
    .catch_unwind()
    .await;
    client.close().await.unwrap();
    if let Err(panic) = steps {
        std::panic::resume_unwind(panic);
    }
    stop.cancel();
    ok.stop().await;
    busy.stop().await;
}
