//! Bearer tokens and scopes. Each `[[api.tokens]]` entry names the environment variable holding its token; the
//! token is read once at start, kept as a [`Secret`], and compared in constant time (over SHA-256 digests, so
//! neither the content nor the length of a configured token leaks through timing). Tokens never reach the
//! database or the log: the log and the events name the token's `name` only.
//!
//! The dashboard's session cookie ([`crate::api::ui::session`]) is accepted instead of the bearer header. A request
//! made with the cookie that may change state (any method but GET, HEAD, OPTIONS) must also carry the session's
//! CSRF token in `X-CSRF-Token`; bearer requests need none (a browser never adds that header by itself).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::api::ui::session;
use crate::config::{ApiConfig, ApiScope};
use crate::error::{Error, Result};
use crate::provider::credentials::{Env, Secret};

/// The name a request gets when no token is configured (loopback only).
pub const ANONYMOUS: &str = "anonymous";

struct Token {
    name: String,
    scope: ApiScope,
    // Kept so the value lives in exactly one `Secret`; requests are matched against its digest.
    _secret: Secret,
    digest: [u8; 32],
}

/// The configured tokens, read from the environment at start. Cheap to clone.
#[derive(Clone)]
pub struct Tokens(Arc<Vec<Token>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|t| (&t.name, t.scope)))
            .finish()
    }
}

impl Tokens {
    /// Reads every token's environment variable through `env`. A missing or empty variable is a config error
    /// naming `api.tokens[N].env` and the variable (never a value).
    pub fn from_config(config: &ApiConfig, env: Env) -> Result<Tokens> {
        let mut tokens = Vec::with_capacity(config.tokens.len());
        for (i, t) in config.tokens.iter().enumerate() {
            let value = match env(&t.env) {
                Some(v) if !v.trim().is_empty() => v.trim().to_owned(),
                Some(_) => {
                    return Err(Error::Config(format!(
                        "api.tokens[{i}].env: environment variable {} is empty",
                        t.env
                    )));
                }
                None => {
                    return Err(Error::Config(format!(
                        "api.tokens[{i}].env: environment variable {} is not set",
                        t.env
                    )));
                }
            };
            if value.len() < 16 {
                return Err(Error::Config(format!(
                    "api.tokens[{i}].env: the token in {} is shorter than 16 characters",
                    t.env
                )));
            }
            if tokens.iter().any(|o: &Token| o.digest == digest(&value)) {
                return Err(Error::Config(format!(
                    "api.tokens[{i}].env: the token in {} is the same as an earlier token's",
                    t.env
                )));
            }
            tokens.push(Token {
                name: t.name.clone(),
                scope: t.scope,
                digest: digest(&value),
                _secret: Secret::new(value),
            });
        }
        Ok(Tokens(Arc::new(tokens)))
    }

    /// True when no token is configured: every request may do everything (the server then only listens on
    /// loopback).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name and scope of the token `presented`, when it is one of ours (the dashboard's login).
    pub fn identify(&self, presented: &str) -> Option<(String, ApiScope)> {
        self.find(presented).map(|t| (t.name.clone(), t.scope))
    }

    fn find(&self, presented: &str) -> Option<&Token> {
        let d = digest(presented);
        // Every token is compared, whatever matched, so the time does not depend on which one did.
        let mut found = None;
        for t in self.0.iter() {
            if bool::from(t.digest.ct_eq(&d)) {
                found = Some(t);
            }
        }
        found
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Who is calling, and what they may do.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// Its scope.
    pub scope: ApiScope,
    /// No token is configured (loopback only): everything is allowed, enqueue included.
    pub open: bool,
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Enqueue.
    Produce,
    /// Read one message by id.
    ReadOne,
    /// List, search, stats, channels.
    Read,
    /// Act.
    Admin,
}

impl Caller {
    /// Ok when the caller's scope allows `need`, else 403.
    pub fn require(&self, need: Need) -> Result<(), ApiError> {
        let ok = self.open
            || matches!(
                (need, self.scope),
                (Need::Produce, ApiScope::Produce)
                    | (Need::ReadOne, _)
                    | (Need::Read, ApiScope::Read | ApiScope::Admin)
                    | (Need::Admin, ApiScope::Admin)
            );
        if ok {
            Ok(())
        } else {
            let want = match need {
                Need::Produce => "produce",
                Need::ReadOne | Need::Read => "read",
                Need::Admin => "admin",
            };
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                None,
                format!("needs a token with scope {want}"),
            ))
        }
    }

    /// True for an admin token.
    pub fn is_admin(&self) -> bool {
        self.scope == ApiScope::Admin
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.tokens.is_empty() {
            return Ok(Caller {
                name: ANONYMOUS.into(),
                scope: ApiScope::Admin,
                open: true,
            });
        }
        let unauthorized = |rule: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                Some("authorization"),
                rule.to_owned(),
            )
        };
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return session_caller(parts, state);
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| unauthorized("must be Bearer <token>"))?;
        match state.tokens.find(presented) {
            Some(t) => Ok(Caller {
                name: t.name.clone(),
                scope: t.scope,
                open: false,
            }),
            None => Err(unauthorized("unknown token")),
        }
    }
}

/// The caller of a request without `Authorization`: the dashboard session of its cookie, with the CSRF check for
/// state-changing methods.
fn session_caller(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let unauthorized = |field: &str, rule: &str| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Some(field),
            rule.to_owned(),
        )
    };
    let Some(id) = session::cookie(&parts.headers, session::SESSION_COOKIE) else {
        return Err(unauthorized(
            "authorization",
            "missing: send Authorization: Bearer <token>",
        ));
    };
    let Some(s) = state.sessions.get(id) else {
        return Err(unauthorized(
            "cookie",
            "the dashboard session expired or ended: log in again",
        ));
    };
    if !parts.method.is_safe() {
        let sent = parts
            .headers
            .get(session::CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !bool::from(sent.ct_eq(s.csrf.as_bytes())) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                Some("X-CSRF-Token"),
                "a request with the session cookie that changes state must carry the session's CSRF token"
                    .into(),
            ));
        }
    }
    Ok(Caller {
        name: s.name,
        scope: s.scope,
        open: false,
    })
}
