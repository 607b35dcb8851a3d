//! `POST /api/tokens` and `POST /api/tokens/revoke`: the admin key mints
//! and revokes access tokens (the same `auth::issue` as `weft token`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{required_json_body, rfc3339, ApiResult};
use crate::auth::{self, Claims, Perm, MAX_TOKEN_TTL_SECS};
use crate::http::access::Caller;
use crate::http::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenRequest {
    doc: String,
    perm: Perm,
    ttl_secs: u64,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

fn token_mode(state: &AppState) -> ApiResult<&crate::auth::AuthKey> {
    state.access.key().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "weft runs in open mode: start it with --auth-key-file (or WEFT_AUTH_KEY) to use tokens",
        )
    })
}

/// `POST /api/tokens` `{doc, perm, ttl_secs, user?, name?}` (admin key):
/// a signed token, as `weft token` prints.
pub(super) async fn mint(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let key = token_mode(&state)?;
    caller.admin()?;
    let req: TokenRequest = required_json_body(&body, r#"{"doc": "...", "perm": "read"|"write", "ttl_secs": N}"#)?;
    let spec = auth::TokenSpec {
        doc: req.doc,
        perm: req.perm,
        ttl_secs: req.ttl_secs,
        sub: req.user,
        name: req.name,
    };
    let (token, claims): (String, Claims) = auth::issue(key, spec, crate::clock::now_secs()).map_err(|e| match e {
        auth::AuthError::BadLifetime => ApiError::bad_request(format!("ttl_secs must be 1 to {MAX_TOKEN_TTL_SECS}")),
        other => ApiError::from(other),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "token_id": claims.jti,
            "expires": rfc3339(claims.exp as i64 * 1000),
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeRequest {
    token_id: String,
}

/// `POST /api/tokens/revoke` `{token_id}` (admin key): refused from now on,
/// also after a restart; live connections holding it close at once.
pub(super) async fn revoke(State(state): State<AppState>, caller: Caller, body: Bytes) -> ApiResult<Json<Value>> {
    token_mode(&state)?;
    caller.admin()?;
    let req: RevokeRequest = required_json_body(&body, r#"{"token_id": "..."}"#)?;
    if req.token_id.is_empty() || req.token_id.len() > 128 {
        return Err(ApiError::bad_request("token_id must be 1 to 128 characters"));
    }
    state.access.revoke(&req.token_id).await?;
    tracing::info!(token_id = %req.token_id, "token revoked");
    super::tell_cluster(
        &state,
        crate::broker::Control::Revoked {
            token_id: req.token_id.clone(),
        },
    )
    .await;
    Ok(Json(json!({ "revoked": req.token_id })))
}
