//! The embedded assets. The shell links the script and stylesheet as `/ui/assets/app.<hash>.js` with the first
//! 16 hex digits of their SHA-256, served `immutable` for a year; the shell itself is never cached. A new binary
//! thus changes the URLs, and no browser keeps an old script next to a new API.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const SHELL: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// The page's Content-Security-Policy: only our own script, style and API; no inline code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Hashed {
    script: String,
    style: String,
    shell: String,
}

fn name(stem: &str, ext: &str, content: &str) -> String {
    let digest = Sha256::digest(content.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{stem}.{hex}.{ext}")
}

static HASHED: LazyLock<Hashed> = LazyLock::new(|| {
    let script = name("app", "js", SCRIPT);
    let style = name("app", "css", STYLE);
    let shell = SHELL
        .replace("{{script}}", &format!("/ui/assets/{script}"))
        .replace("{{style}}", &format!("/ui/assets/{style}"));
    Hashed {
        script,
        style,
        shell,
    }
});

/// The URL paths of the script and the stylesheet (tests).
pub fn asset_paths() -> (String, String) {
    (
        format!("/ui/assets/{}", HASHED.script),
        format!("/ui/assets/{}", HASHED.style),
    )
}

fn security_headers(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The shell, for every page path: the script reads the path and renders the page.
pub async fn page() -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        HASHED.shell.as_str(),
    )
        .into_response();
    security_headers(&mut response);
    response
}

/// `GET /ui/assets/{file}`: the script or stylesheet under its current hash; any other name is 404.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = if file == HASHED.script {
        (SCRIPT, "text/javascript; charset=utf-8")
    } else if file == HASHED.style {
        (STYLE, "text/css; charset=utf-8")
    } else {
        return crate::api::ApiError::not_found(
            "no such asset (the page may be older than the server: reload)",
        )
        .into_response();
    };
    let mut response = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response();
    security_headers(&mut response);
    response
}
