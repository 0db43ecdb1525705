//! The API's errors: one enum mapped to an HTTP status and a JSON body `{"error": code, "message": …}` (plus
//! the missing permission for 403s and the diagnostics with line and column for invalid YAML), and the JSON
//! extractor that turns malformed bodies and wrong content types into the same shape.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The principal lacks a permission.
    #[error("{message}")]
    Forbidden {
        /// The permission (`pipeline:execute`).
        permission: String,
        /// Says which and on what.
        message: String,
    },
    /// Nothing there.
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or the state forbids it.
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts.
    #[error("{0}")]
    TooManyRequests(String),
    /// The body is larger than the server accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The body's content type is not accepted.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Planning, validating or launching failed.
    #[error("{0}")]
    Launch(#[from] launch::LaunchError),
    /// Something broke on our side.
    #[error("{0}")]
    Internal(String),
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::NotFound(m) => ApiError::NotFound(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    /// A body that could not be read: too large (413), or otherwise broken (400).
    pub fn body_unreadable(status: StatusCode, text: String) -> Self {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge("the body is larger than the server accepts (--max-body)".into())
        } else {
            ApiError::BadRequest(text)
        }
    }

    /// A 403 naming the missing permission.
    pub fn forbidden(permission: crate::rbac::Permission, what: &str) -> Self {
        ApiError::Forbidden {
            permission: permission.as_str().into(),
            message: format!("missing permission `{permission}` on {what}"),
        }
    }

    /// A state-changing request without this session's CSRF token (or from another site).
    pub fn csrf(what: &str) -> Self {
        ApiError::Forbidden { permission: "csrf".into(), message: format!("missing permission `csrf` on {what}") }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Launch(launch::LaunchError::Store(store::StoreError::NotFound(_))) => StatusCode::NOT_FOUND,
            ApiError::Launch(launch::LaunchError::Store(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Launch(launch::LaunchError::Unsatisfiable(_)) => StatusCode::CONFLICT,
            ApiError::Launch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Launch(e) => e.to_json(),
            ApiError::Forbidden { permission, message } => {
                serde_json::json!({"error": "forbidden", "message": message, "permission": permission})
            }
            other => {
                let code = match other {
                    ApiError::BadRequest(_) => "bad_request",
                    ApiError::Unauthorized(_) => "unauthorized",
                    ApiError::NotFound(_) => "not_found",
                    ApiError::Conflict(_) => "conflict",
                    ApiError::TooManyRequests(_) => "too_many_requests",
                    ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
                    ApiError::TooLarge(_) => "payload_too_large",
                    _ => "internal",
                };
                if matches!(other, ApiError::Internal(_)) {
                    tracing::error!("internal error: {other}");
                }
                serde_json::json!({"error": code, "message": other.to_string()})
            }
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("60"));
        }
        resp
    }
}

/// The body of every error answer (its shape in the OpenAPI document; some errors add fields, such as
/// `unmet_dependencies` for an unsatisfiable plan or `problems` for invalid inputs).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `too_many_requests`, `payload_too_large`, `unsupported_media_type`, `invalid_yaml`, `invalid_inputs`,
    /// `unsatisfiable`, `bad_selection`, `internal`, …
    pub error: String,
    /// What went wrong and what to do.
    pub message: String,
    /// The missing permission (403).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    /// Problems with line and column (invalid YAML).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Vec<serde_json::Value>>,
}

/// Results of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose rejections (malformed JSON, wrong content type, wrong shape) are [`ApiError`]s.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .is_some_and(|m| m == "application/json" || (m.starts_with("application/") && m.ends_with("+json")));
        if !json_type {
            return Err(ApiError::UnsupportedMediaType("expected `Content-Type: application/json`".into()));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::body_unreadable(e.status(), e.body_text()))?;
        // Every body is a JSON object (serde would also read a struct from an array).
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::BadRequest("malformed JSON: expected an object `{…}`".into()));
        }
        serde_json::from_slice(&bytes).map(Body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::BadRequest(format!("unexpected JSON: {e}")),
            _ => ApiError::BadRequest(format!("malformed JSON: {e}")),
        })
    }
}

/// Check an identifier from a path or a body: Harness's rule (a letter or `_`, then letters, digits, `_`, `$`;
/// at most 128 characters), which also keeps `..`, `/` and quotes out of every identifier.
pub fn identifier(what: &str, id: &str) -> ApiResult<()> {
    let mut chars = id.chars();
    let ok = id.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "`{}` is not a valid {what} identifier: use a letter or `_` first, then letters, digits, `_` or `$` (at most 128)",
            id.chars().take(80).collect::<String>()
        )))
    }
}

/// Path parameters whose rejections (a value of the wrong type, an unknown entity kind) are [`ApiError`]s.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// Query parameters whose rejections (an unknown parameter, a value of the wrong type) are [`ApiError`]s.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}
