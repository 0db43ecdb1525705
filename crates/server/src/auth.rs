//! Who is calling: API tokens (random, shown once, kept as SHA-256, with expiry and revocation) for users
//! and service accounts, argon2 password hashes for users, the middleware that turns `Authorization: Bearer …`
//! into a [`Principal`] (or a 401), the login rate limiter, and the permission checks handlers call.

use crate::App;
use crate::error::{ApiError, ApiResult};
use crate::rbac::{Permission, PrincipalRef, Resource, Scope};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Token, now_ms};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Kind and id.
    pub who: PrincipalRef,
    /// The scope a service account belongs to (account for users).
    pub scope: Scope,
    /// The token used.
    pub token_id: String,
    /// When the token used expires: tokens it creates may not outlive it.
    pub token_expires_at: Option<i64>,
    /// Whether the token used is the one-time bootstrap token.
    pub bootstrap: bool,
    /// The client address.
    pub address: String,
}

impl Principal {
    /// `alice`, or `sa:ci` for a service account: what executions record as `triggered_by`.
    pub fn display(&self) -> String {
        if self.who.kind == "user" { self.who.id.clone() } else { format!("sa:{}", self.who.id) }
    }
}

/// A new token secret: `pw_` and 64 hex characters (256 random bits).
pub fn new_secret() -> String {
    new_secret_with("pw_")
}

/// A new secret with another prefix (`pwa_` an agent's credential, `pwl_` a claim's lease token).
pub fn new_secret_with(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex(&bytes))
}

/// A registered agent calling the agent protocol with its own credential.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    /// The agent, as stored when the call came in.
    pub agent: store::AgentRecord,
    /// The client address.
    pub address: String,
}

/// What the agent protocol says to a caller without an agent credential.
const AGENT_CREDENTIAL: &str = "the agent protocol takes only an agent's own credential (`pwa_…`): an \
     administrator registers the agent (`pipewright agents register NAME --tags … [--scope ORG/PROJECT]`) and \
     gives it the credential printed; user and service-account tokens no longer connect agents";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a token secret, hex.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// An argon2id hash of a password.
pub fn hash_password(password: &str) -> ApiResult<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::Internal(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Whether `password` matches an argon2 hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash no password matches, verified against for unknown users so that a wrong user name takes as long
/// to refuse as a wrong password (no telling which names exist from the time).
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&new_secret()).unwrap_or_default())
}

/// The longest password accepted (argon2 hashes anything, but a megabyte of password is an attack).
pub const MAX_PASSWORD: usize = 1024;

/// The lowest strength a new password must have: zxcvbn's score 3 of 4, "safely unguessable" (about 10^10
/// guesses), which its authors recommend where guessing is rate-limited online.
pub const MIN_PASSWORD_SCORE: u8 = 3;

/// Refuse a password that is too short, too long or easy to guess (a maintained estimator, zxcvbn, which
/// knows common passwords, names, dictionary words, keyboard patterns, dates and l33t spellings, and the
/// user's own name among `user_inputs`), saying why and how to choose a better one. Pure.
pub fn check_password(password: &str, user_inputs: &[&str]) -> ApiResult<()> {
    if password.chars().count() < 8 || password.len() > MAX_PASSWORD {
        return Err(ApiError::BadRequest(format!(
            "the password must have at least 8 characters and at most {MAX_PASSWORD} bytes"
        )));
    }
    // The estimate is quadratic in the length; 128 characters of any kind are strong enough to judge.
    let head: String = password.chars().take(128).collect();
    let estimate = zxcvbn::zxcvbn(&head, user_inputs);
    let score = estimate.score() as u8;
    if score >= MIN_PASSWORD_SCORE {
        return Ok(());
    }
    let mut why = String::new();
    if let Some(f) = estimate.feedback() {
        if let Some(w) = f.warning() {
            why.push_str(&format!(" ({w})"));
        }
        let tips: Vec<String> = f.suggestions().iter().map(|s| s.to_string()).collect();
        if !tips.is_empty() {
            why.push_str(&format!("; {}", tips.join(" ")));
        }
    }
    Err(ApiError::BadRequest(format!(
        "the password is too easy to guess: strength {score} of 4, at least {MIN_PASSWORD_SCORE} is needed{why}; \
         a passphrase of four or more unrelated words is strong and easy to remember"
    )))
}

/// The name of the one-time bootstrap token.
pub const BOOTSTRAP: &str = "bootstrap";

/// The record of a principal (user or service account), if it exists.
pub async fn principal_record(
    store: &dyn store::Store,
    who: &PrincipalRef,
    scope: &Scope,
) -> ApiResult<Option<store::Record>> {
    Ok(match who.kind.as_str() {
        "user" => store.record("user", "", "", &who.id).await?,
        "service_account" => store.record("service_account", &scope.org, &scope.project, &who.id).await?,
        _ => None,
    })
}

/// A principal's immutable internal id (given to principals of earlier versions on first use).
pub async fn principal_uid(store: &dyn store::Store, who: &PrincipalRef, scope: &Scope) -> ApiResult<Option<String>> {
    let Some(mut r) = principal_record(store, who, scope).await? else { return Ok(None) };
    if let Some(uid) = r.body.get("uid").and_then(|u| u.as_str()) {
        return Ok(Some(uid.to_string()));
    }
    let uid = ulid::Ulid::new().to_string();
    r.body["uid"] = uid.clone().into();
    store.put_record(&r, true).await?;
    Ok(Some(uid))
}

/// Create and store a token for a principal; returns the record and the secret (shown once).
pub async fn issue_token(
    store: &dyn store::Store,
    name: &str,
    who: &PrincipalRef,
    scope: &Scope,
    expires_at: Option<i64>,
) -> ApiResult<(Token, String)> {
    let principal_uid = principal_uid(store, who, scope)
        .await?
        .ok_or_else(|| ApiError::BadRequest(format!("no {} `{}`", who.kind.replace('_', " "), who.id)))?;
    let secret = new_secret();
    let t = Token {
        id: ulid::Ulid::new().to_string(),
        name: name.to_string(),
        principal_kind: who.kind.clone(),
        principal_id: who.id.clone(),
        principal_org: scope.org.clone(),
        principal_project: scope.project.clone(),
        hash: hash_secret(&secret),
        created_at: now_ms(),
        expires_at,
        revoked_at: None,
        principal_uid: Some(principal_uid),
    };
    store.put_token(&t).await?;
    Ok((t, secret))
}

/// Requests that need no token.
fn public(path: &str) -> bool {
    matches!(path, "/api/v1/auth/login" | "/api/v1/openapi.json" | "/healthz" | "/readyz" | "/metrics")
}

/// The middleware of the JSON API: authenticate every request under `/api/` but the public ones. The web
/// pages (everything else) authenticate with their session cookie in [`crate::web`].
pub async fn authenticate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let address = client_address(&req);
    let path = req.uri().path();
    if public(path) || !path.starts_with("/api/") {
        req.extensions_mut().insert(ClientAddr(address));
        return Ok(next.run(req).await);
    }
    let header = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    let Some(secret) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err(ApiError::Unauthorized(
            "no credentials: send `Authorization: Bearer <token>` (POST /api/v1/auth/login gives one)".into(),
        ));
    };
    let secret = secret.trim();
    // The agent protocol is spoken by registered agents only, and their credentials open nothing else.
    if path.starts_with("/api/v1/agent/") {
        let agent = app.agent_caller(secret, address).await?;
        req.extensions_mut().insert(agent);
        return Ok(next.run(req).await);
    }
    if secret.starts_with("pwa_") {
        return Err(ApiError::Unauthorized(
            "an agent's credential is for the agent protocol (/api/v1/agent/…) only".into(),
        ));
    }
    let principal = app.principal(secret, address).await?;
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

/// The client address of a request (from the connection).
pub fn client_address(req: &Request) -> String {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

impl App {
    /// The registered agent whose credential this is (401 for anything else, 403 once it was revoked).
    pub async fn agent_caller(&self, secret: &str, address: String) -> ApiResult<AgentCaller> {
        if !secret.starts_with("pwa_") {
            return Err(ApiError::Unauthorized(AGENT_CREDENTIAL.into()));
        }
        let agent = self
            .store
            .agent_by_secret(&hash_secret(secret))
            .await?
            .ok_or_else(|| ApiError::Unauthorized(format!("the credential is not valid; {AGENT_CREDENTIAL}")))?;
        if agent.state == "revoked" {
            return Err(ApiError::Forbidden {
                permission: Permission::AGENT_MANAGE.as_str().into(),
                message: format!("agent `{}` was revoked; an administrator may allow it again", agent.name),
            });
        }
        Ok(AgentCaller { agent, address })
    }

    /// The principal a token secret stands for (401 when it is unknown, revoked or expired).
    pub async fn principal(&self, secret: &str, address: String) -> ApiResult<Principal> {
        let token = self.token(&hash_secret(secret)).await?;
        if token.revoked_at.is_some() {
            return Err(ApiError::Unauthorized("the token was revoked".into()));
        }
        if token.expires_at.is_some_and(|e| e <= now_ms()) {
            return Err(ApiError::Unauthorized("the token has expired; create a new one".into()));
        }
        Ok(Principal {
            who: PrincipalRef { kind: token.principal_kind.clone(), id: token.principal_id.clone() },
            scope: Scope { org: token.principal_org.clone(), project: token.principal_project.clone() },
            token_expires_at: token.expires_at,
            bootstrap: token.name == BOOTSTRAP && token.principal_kind == "user",
            token_id: token.id,
            address,
        })
    }
}

/// How long a token read from the store is trusted (revocations through this server apply at once; another
/// server's within this time).
const TOKEN_TTL: Duration = Duration::from_millis(900);

/// Recently used tokens by hash, so most requests do not read the token table.
#[derive(Default)]
pub struct TokenCache {
    map: std::sync::Mutex<HashMap<String, (Instant, Token)>>,
}

impl App {
    /// The token with this hash (401 when there is none).
    pub async fn token(&self, hash: &str) -> ApiResult<Token> {
        if let Some((at, t)) = self.tokens.map.lock().unwrap_or_else(|e| e.into_inner()).get(hash)
            && at.elapsed() < TOKEN_TTL
        {
            return Ok(t.clone());
        }
        let t = self
            .store
            .token_by_hash(hash)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("the token is not valid".into()))?;
        // A token belongs to the principal it was issued to, not to whoever has that identifier now.
        let who = PrincipalRef { kind: t.principal_kind.clone(), id: t.principal_id.clone() };
        let scope = Scope { org: t.principal_org.clone(), project: t.principal_project.clone() };
        let current = principal_record(self.store.as_ref(), &who, &scope).await?;
        let uid = current.as_ref().and_then(|r| r.body.get("uid")).and_then(|u| u.as_str());
        if t.principal_uid.is_none() || uid != t.principal_uid.as_deref() {
            return Err(ApiError::Unauthorized("the token's principal no longer exists".into()));
        }
        let mut map = self.tokens.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, (at, _)| at.elapsed() < TOKEN_TTL);
        }
        map.insert(hash.to_string(), (Instant::now(), t.clone()));
        Ok(t)
    }

    /// Forget cached tokens (after a revocation).
    pub fn tokens_changed(&self) {
        self.tokens.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The client address of a request that needs no token.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl App {
    /// Require a permission on a resource (403 naming it otherwise).
    pub async fn require(&self, p: &Principal, permission: Permission, r: &Resource) -> ApiResult<()> {
        let policy = self.policy().await?;
        if policy.allows(&p.who, permission, r) {
            return Ok(());
        }
        let what = if r.id.is_empty() {
            format!("{}s in {}", r.rtype, r.scope.describe())
        } else {
            format!("{} `{}` in {}", r.rtype, r.id, r.scope.describe())
        };
        Err(ApiError::forbidden(permission, &what))
    }

    /// Require a permission on some resource of a type in a scope (before the body says which).
    pub async fn require_some(
        &self,
        p: &Principal,
        permission: Permission,
        rtype: &str,
        scope: &Scope,
    ) -> ApiResult<()> {
        if self.policy().await?.allows_some(&p.who, permission, rtype, scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(permission, &format!("{rtype}s in {}", scope.describe())))
        }
    }

    /// Whether a permission is held (no error).
    pub async fn may(&self, p: &Principal, permission: Permission, r: &Resource) -> ApiResult<bool> {
        Ok(self.policy().await?.allows(&p.who, permission, r))
    }

    /// A 404 for principals who may view the scope, a 403 for the others (who must not learn what exists).
    pub async fn not_found(&self, p: &Principal, scope: &Scope, message: String) -> ApiError {
        match self.policy().await {
            Ok(policy) if policy.sees_scope(&p.who, scope) => ApiError::NotFound(message),
            Ok(_) => {
                let (perm, id) = if scope.project.is_empty() {
                    (Permission::ORG_VIEW, &scope.org)
                } else {
                    (Permission::PROJECT_VIEW, &scope.project)
                };
                ApiError::forbidden(perm, &format!("{} (`{id}`)", scope.describe()))
            }
            Err(e) => e,
        }
    }
}

/// Failed logins per user name and client address: after 5 in a minute from one address, that address may not
/// try that name for the rest of the minute — so nobody can lock a user out from elsewhere. A much higher bound
/// per name across all addresses (100 a minute) stops a distributed guess, but only for the addresses that
/// have failed for that name already: an address with no failure for the name still gets its tries, so an
/// attacker spread over many addresses cannot lock the user out everywhere, and past the bound needs a new
/// address for every further guess. The counts live in the store, so every server on one database applies
/// the same limit.
pub struct LoginLimiter;

/// Whether a log-in may be tried, from the failures counted in the window for this name from this address
/// (`from_here`) and for this name from everywhere (`everywhere`): see [`LoginLimiter`].
pub fn login_permitted(from_here: i64, everywhere: i64) -> bool {
    from_here < LoginLimiter::PER_SOURCE && (from_here == 0 || everywhere < LoginLimiter::PER_NAME)
}

impl LoginLimiter {
    /// Failures allowed per name and address in a window.
    pub const PER_SOURCE: i64 = 5;
    /// Failures allowed per name across addresses in a window.
    pub const PER_NAME: i64 = 100;
    /// The window, in ms.
    const WINDOW: i64 = 60_000;
}

impl App {
    /// Refuse a login of `name` from the address of `key` (`name@address`) when [`login_permitted`] says so.
    pub async fn login_allowed(&self, key: &str, name: &str) -> ApiResult<()> {
        let since = now_ms() - LoginLimiter::WINDOW;
        let from_here = self.store.login_failures(key, since).await?;
        let everywhere = if from_here == 0 { 0 } else { self.store.login_failures(name, since).await? };
        if !login_permitted(from_here, everywhere) {
            return Err(ApiError::TooManyRequests("too many failed logins; wait a minute before trying again".into()));
        }
        Ok(())
    }

    /// Count a failed login under `key`.
    pub async fn login_failed(&self, key: &str) -> ApiResult<()> {
        let now = now_ms();
        self.store.count_login_failure(key, now, now - LoginLimiter::WINDOW).await?;
        Ok(())
    }

    /// Forget `key`'s failures after a success.
    pub async fn login_succeeded(&self, key: &str) -> ApiResult<()> {
        Ok(self.store.clear_login_failures(key).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_never_locked_out_from_an_address_that_has_not_failed() {
        let (src, name) = (LoginLimiter::PER_SOURCE, LoginLimiter::PER_NAME);
        // failures for the name from this address, from everywhere, permitted
        let table = [
            (0, 0, true),
            (src - 1, src - 1, true),
            (src, src, false),    // this address guessed enough
            (0, name * 10, true), // a distributed guess elsewhere does not lock this address out
            (1, name - 1, true),
            (1, name, false), // …but an address that failed too is held back with the rest
            (src - 1, name + 5, false),
        ];
        for (here, everywhere, want) in table {
            assert_eq!(login_permitted(here, everywhere), want, "{here} here, {everywhere} everywhere");
        }
    }

    #[test]
    fn weak_passwords_are_refused_saying_why() {
        let table = [
            ("password", false),
            ("password-123", false),
            ("12345678", false),
            ("qwertyuiop", false),
            ("alice1990", false),
            ("Summer2024!", false),
            ("short", false),
            ("amber-quiet-lantern-47", true),
            ("correct-horse-battery-staple-93", true),
            ("vT9#qL2!xw8Rz", true),
        ];
        for (pw, ok) in table {
            let got = check_password(pw, &["alice"]);
            assert_eq!(got.is_ok(), ok, "{pw}: {got:?}");
        }
        let e = check_password("password-123", &[]).unwrap_err().to_string();
        assert!(e.contains("too easy to guess") && e.contains("of 4"), "{e}");
        // The user's own name counts as known.
        assert!(check_password("alicealicealice", &["alice"]).is_err());
        // Long ones are judged on their head, quickly; a long repetition is still weak.
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#%&";
        let long: String =
            (0..1000u64).map(|i| CHARS[((i * i * 7919 + 13) % CHARS.len() as u64) as usize] as char).collect();
        assert!(check_password(&long, &[]).is_ok());
        assert!(check_password(&"x7Qm!".repeat(200), &[]).is_err());
    }
}
