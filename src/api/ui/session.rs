//! Dashboard sessions: `POST /ui/session` trades an API token for an opaque random session id in an `HttpOnly;
//! SameSite=Strict` cookie, mapped in memory to the token's name and scope (never the token itself). Each session
//! has its own CSRF token, handed to the page in a readable cookie; the API wants it back in `X-CSRF-Token` on every
//! state-changing request made with the session cookie (see [`crate::api::auth`]). Sessions live in this process
//! only: a restart logs everybody out, which is what a dashboard of an operator tool can afford.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{ApiError, AppState, Caller, parse_body};
use crate::config::ApiScope;

/// The session cookie (HttpOnly).
pub const SESSION_COOKIE: &str = "tidings_session";
/// The CSRF cookie (readable by the page's script, which echoes it in `X-CSRF-Token`).
pub const CSRF_COOKIE: &str = "tidings_csrf";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept at once; beyond, the one closest to expiry goes.
const MAX_SESSIONS: usize = 10_000;

/// A logged-in dashboard user.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token's name.
    pub name: String,
    /// The token's scope.
    pub scope: ApiScope,
    /// The CSRF token of this session.
    pub csrf: String,
    expires: Instant,
}

/// The sessions of this process. Cheap to clone.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<[u8; 32], Session>>>);

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the ids: they are credentials.
        write!(f, "Sessions({})", self.0.lock().map_or(0, |m| m.len()))
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

// Sessions are keyed by the SHA-256 of the id, so the map's lookup time says nothing about the ids it holds.
fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Opens a session for the token `name` with `scope`; returns the session id and its CSRF token.
    pub fn open(&self, name: &str, scope: ApiScope) -> (String, String) {
        let (id, csrf) = (random_token(), random_token());
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            key(&id),
            Session {
                name: name.to_owned(),
                scope,
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        (id, csrf)
    }

    /// The live session with `id`.
    pub fn get(&self, id: &str) -> Option<Session> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&key(id))
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    /// Ends the session with `id` (no-op when unknown).
    pub fn close(&self, id: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&key(id));
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
// Hand-written: two cookies of our own with URL-safe base64 values need no cookie crate.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// `POST /ui/session` with `{"token": "..."}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// An API token.
    pub token: String,
}

/// Who is logged in (answer of `POST /ui/session` and `GET /ui/me`).
#[derive(Debug, Serialize)]
pub struct Me {
    /// The token's name.
    pub name: String,
    /// `produce`, `read` or `admin`.
    pub scope: &'static str,
    /// True when the server has no token configured (loopback only): no login needed.
    pub open: bool,
}

fn scope_word(scope: ApiScope) -> &'static str {
    match scope {
        ApiScope::Produce => "produce",
        ApiScope::Read => "read",
        ApiScope::Admin => "admin",
    }
}

fn secure(headers: &HeaderMap) -> &'static str {
    // Behind a TLS-terminating proxy the cookies get `Secure`; on plain http (loopback) browsers would drop them.
    match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some(p) if p.eq_ignore_ascii_case("https") => "; Secure",
        _ => "",
    }
}

fn set_cookie(response: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// `POST /ui/session`: a JSON body (a cross-site form cannot send one) with an API token; sets the session and
/// CSRF cookies. 401 for an unknown token.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_request",
            Some("content-type"),
            "must be application/json".into(),
        ));
    }
    let body: LoginBody = parse_body(body)?;
    let Some((name, scope)) = state.tokens.identify(body.token.trim()) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Some("token"),
            "unknown token".into(),
        ));
    };
    let (id, csrf) = state.sessions.open(&name, scope);
    tracing::info!(token = %name, "dashboard login");
    let secure = secure(&headers);
    let max_age = SESSION_TTL.as_secs();
    let mut response = Json(Me {
        name,
        scope: scope_word(scope),
        open: false,
    })
    .into_response();
    set_cookie(
        &mut response,
        format!(
            "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
        ),
    );
    set_cookie(
        &mut response,
        format!("{CSRF_COOKIE}={csrf}; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"),
    );
    Ok(response)
}

/// `POST /ui/logout`: ends the session and clears both cookies. Always 204, so a stale page can log out.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        state.sessions.close(id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    for name in [SESSION_COOKIE, CSRF_COOKIE] {
        set_cookie(
            &mut response,
            format!("{name}=; SameSite=Strict; Path=/; Max-Age=0"),
        );
    }
    response
}

/// `GET /ui/me`: who the session (or bearer token) is; 401 when nobody is logged in.
pub async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        scope: scope_word(caller.scope),
        open: caller.open,
        name: caller.name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others_and_headers() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; tidings_csrf=x"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("tidings_session=abc-_9 ;b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc-_9"));
        assert_eq!(cookie(&headers, CSRF_COOKIE), Some("x"));
        assert_eq!(cookie(&headers, "tidings"), None);
        assert_eq!(cookie(&HeaderMap::new(), SESSION_COOKIE), None);
    }

    #[test]
    fn sessions_are_random_distinct_and_end_on_close() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.open("ops", ApiScope::Admin);
        let (other, _) = sessions.open("grafana", ApiScope::Read);
        assert_ne!(id, other);
        assert_ne!(id, csrf);
        assert_eq!(id.len(), 43, "32 random bytes, base64url");
        let s = sessions.get(&id).unwrap();
        assert_eq!(
            (s.name.as_str(), s.scope, s.csrf),
            ("ops", ApiScope::Admin, csrf)
        );
        assert!(sessions.get("forged").is_none());
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
        assert!(sessions.get(&other).is_some());
        assert!(
            !format!("{sessions:?}").contains(&other),
            "Debug never shows an id"
        );
    }
}
