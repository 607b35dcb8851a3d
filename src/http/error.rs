//! `ApiError`: every HTTP error is JSON `{"error": "..."}` with its status.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::doc::{DocError, NameError};
use crate::storage::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, at least 1) with a 429 or 503.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429: a rate limit; the client may try again after `retry_after`.
    pub fn too_many(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.message, "request failed");
        }
        let mut response = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs_f64().ceil().clamp(1.0, 86_400.0) as u64;
            response.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<DocError> for ApiError {
    fn from(e: DocError) -> Self {
        let retry_after = match e {
            DocError::Busy { retry_after, .. } => Some(retry_after),
            _ => None,
        };
        let status = match e {
            DocError::BadUpdate(_) => StatusCode::BAD_REQUEST,
            DocError::NoVersion(_) => StatusCode::NOT_FOUND,
            DocError::Restore(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DocError::VersionQuota(_) => StatusCode::CONFLICT,
            DocError::TooLarge { .. } | DocError::TooManyTypes { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DocError::ShuttingDown | DocError::Unloaded | DocError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            DocError::LoadFailed { .. } | DocError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            retry_after,
            ..Self::new(status, e.to_string())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// Longest error text read back from a response made outside weft's handlers.
const MAX_ERROR_TEXT: usize = 64 << 10;

/// Middleware for every route: an error answered in plain text becomes
/// `{"error": text}` with the same status and headers. Those are the answers
/// axum makes itself, such as its extractors' rejections (`400 Invalid URL:
/// Invalid UTF-8` for a path that does not decode) or `405`; weft's own
/// errors are [`ApiError`]s already.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let json = serde_json::json!({ "error": message }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(json))
}
