//! `/api/webhooks` (admin key): make, list, show and delete webhook
//! subscriptions, and read the events one gave up on. The rules live in
//! `events::webhook`; this is only their HTTP face.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{required_json_body, rfc3339, ApiResult};
use crate::events::webhook::{NewSubscription, SubscriptionView, WebhookError};
use crate::http::access::Caller;
use crate::http::{ApiError, AppState};

const SHAPE: &str =
    r#"{"url": "https://...", "events"?: ["document.updated", ...], "prefix"?: "notes/", "content"?: false}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateRequest {
    url: String,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    content: bool,
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        let status = match e {
            WebhookError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebhookError::NotFound(_) => StatusCode::NOT_FOUND,
            WebhookError::Configured(_) => StatusCode::CONFLICT,
            WebhookError::Config(_) | WebhookError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

fn view_json(view: &SubscriptionView) -> Value {
    let mut value = serde_json::to_value(view).unwrap_or_default();
    value["created"] = view.created_ms.map(rfc3339).into();
    value
}

/// `POST /api/webhooks`: 201 with the subscription and its secret, which
/// is never shown again.
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.admin()?;
    let req: CreateRequest = required_json_body(&body, SHAPE)?;
    let (view, secret) = state
        .webhooks
        .create(NewSubscription {
            url: req.url,
            events: req.events,
            prefix: req.prefix,
            content: req.content,
        })
        .await?;
    let mut answer = view_json(&view);
    answer["secret"] = secret.as_str().into();
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET /api/webhooks`: every subscription, without secrets.
pub(super) async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.admin()?;
    let hooks: Vec<Value> = state.webhooks.list().iter().map(view_json).collect();
    Ok(Json(json!({ "webhooks": hooks })))
}

pub(super) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.admin()?;
    Ok(Json(view_json(&state.webhooks.get(&id)?)))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.admin()?;
    state.webhooks.delete(&id).await?;
    Ok(Json(json!({ "deleted": id })))
}

/// `GET /api/webhooks/{id}/failures`: the events given up on, newest first.
pub(super) async fn failures(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.admin()?;
    let failures: Vec<Value> = state
        .webhooks
        .failures(&id)
        .await?
        .iter()
        .map(|f| {
            json!({
                "event_id": f.event_id,
                "event_seq": f.event_seq,
                "type": f.event_type,
                "attempts": f.attempts,
                "last_status": f.last_status,
                "last_error": f.last_error,
                "failed": rfc3339(f.failed_ms),
            })
        })
        .collect();
    Ok(Json(json!({ "webhook": id, "failures": failures })))
}
