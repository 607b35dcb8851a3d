//! `ApiError`: every HTTP error is JSON `{"error": "..."}` with its status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::doc::{DocError, NameError};
use crate::storage::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
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
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<DocError> for ApiError {
    fn from(e: DocError) -> Self {
        let status = match e {
            DocError::BadUpdate(_) => StatusCode::BAD_REQUEST,
            DocError::NoVersion(_) => StatusCode::NOT_FOUND,
            DocError::Restore(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DocError::TooLarge { .. } | DocError::TooManyTypes { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DocError::ShuttingDown | DocError::Unloaded => StatusCode::SERVICE_UNAVAILABLE,
            DocError::LoadFailed { .. } | DocError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}
