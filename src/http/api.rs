//! The JSON API under `/api`: documents, their state, versions and restore;
//! tokens in `tokens`.
//!
//! Document names in paths are percent-encoded (`notes%2Ftoday`). Every
//! error is JSON `{"error": "..."}` with its status (see [`ApiError`]).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, OriginalUri, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::access::Caller;
use super::{ApiError, AppState};
use crate::doc::{self, DocError, DocMeta, DocName, StateVectorParam, VersionKind, VersionMeta};
use crate::protocol::InboundUpdate;

mod tokens;
mod webhooks;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/info", get(info))
        .route("/docs", get(list_docs))
        .route("/docs/{name}", get(get_doc).delete(delete_doc))
        .route("/docs/{name}/update", get(get_update).post(post_update))
        .route("/docs/{name}/stateless", post(super::hocuspocus::post_stateless))
        .route("/docs/{name}/versions", get(list_versions).post(take_version))
        .route("/docs/{name}/versions/{id}", get(get_version).delete(delete_version))
        .route("/docs/{name}/versions/{id}/update", get(get_version_update))
        .route("/docs/{name}/versions/{id}/restore", post(restore_version))
        .route("/tokens", post(tokens::mint))
        .route("/tokens/revoke", post(tokens::revoke))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/{id}", get(webhooks::get).delete(webhooks::delete))
        .route("/webhooks/{id}/failures", get(webhooks::failures))
        .fallback(no_route)
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
        })
}

type ApiResult<T> = Result<T, ApiError>;

/// The 404 for a path under `/api` that is no route. A document name's `/`
/// must be written `%2F` in API paths, and `/api/docs/notes/today` is the
/// likeliest way to get here: say so.
async fn no_route(OriginalUri(uri): OriginalUri) -> ApiError {
    let path = uri.path();
    let hint = match path.strip_prefix("/api/docs/") {
        Some(rest) if rest.contains('/') => {
            let name = ["/update", "/versions"]
                .iter()
                .fold(rest, |r, tail| r.split(tail).next().unwrap_or(r));
            format!(
                " (a '/' in a document name is written %2F in API paths: /api/docs/{})",
                name.replace('/', "%2F")
            )
        }
        _ => String::new(),
    };
    ApiError::not_found(format!(
        "no such API route: {path}{hint}; see README.md, section HTTP API"
    ))
}

fn doc_name(raw: &str) -> ApiResult<DocName> {
    // axum has already percent-decoded the path segment.
    Ok(DocName::parse(raw)?)
}

fn version_id(raw: &str) -> ApiResult<i64> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("no version '{raw}': version ids are numbers")))
}

/// RFC 3339 (UTC, milliseconds) from Unix milliseconds.
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[derive(Serialize)]
struct DocJson {
    name: String,
    created: Option<String>,
    updated: Option<String>,
    size: u64,
    peers: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Value>,
}

impl DocJson {
    fn new(name: &str, meta: Option<&DocMeta>, peers: usize) -> Self {
        Self {
            name: name.to_string(),
            created: meta.map(|m| rfc3339(m.created)),
            updated: meta.map(|m| rfc3339(m.updated)),
            size: meta.map_or(0, |m| m.size),
            peers,
            content: None,
        }
    }
}

#[derive(Serialize)]
struct VersionJson {
    id: i64,
    created: String,
    label: Option<String>,
    kind: VersionKind,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Value>,
    /// Only in the answer to taking a version: whether it was the latest
    /// version already (nothing changed since).
    #[serde(skip_serializing_if = "Option::is_none")]
    existing: Option<bool>,
}

impl From<&VersionMeta> for VersionJson {
    fn from(v: &VersionMeta) -> Self {
        Self {
            id: v.id,
            created: rfc3339(v.created),
            label: v.label.clone(),
            kind: v.kind,
            size: v.size,
            content: None,
            existing: None,
        }
    }
}

/// `GET /api/info`: what this server is and how to authenticate. Public, so
/// that a page can tell "this server needs a token" from "your token is bad".
async fn info(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "name": "weft",
        "version": env!("CARGO_PKG_VERSION"),
        "auth": if state.access.is_open() { "open" } else { "token" },
        "max_message_size": state.max_message_size,
    }))
}

/// `GET /api/docs`: stored documents, and live ones not stored yet.
async fn list_docs(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let stored: Vec<DocMeta> = state
        .registry
        .stored_docs()
        .await?
        .into_iter()
        .filter(|m| caller.sees(&m.name))
        .collect();
    let mut docs: Vec<DocJson> = stored
        .iter()
        .map(|m| {
            let peers = DocName::parse(&m.name)
                .ok()
                .and_then(|n| state.registry.loaded(&n))
                .map_or(0, |h| h.peers());
            DocJson::new(&m.name, Some(m), peers)
        })
        .collect();
    for (name, handle) in state.registry.loaded_docs() {
        if handle.peers() > 0 && caller.sees(name.as_str()) && !stored.iter().any(|m| m.name == name.as_str()) {
            docs.push(DocJson::new(name.as_str(), None, handle.peers()));
        }
    }
    docs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(json!({ "docs": docs })))
}

/// A document exists once it is stored or someone is connected to it; in
/// cluster mode also once it has a stream (edited through another node,
/// not snapshotted yet).
async fn existing(state: &AppState, name: &DocName) -> ApiResult<Option<DocMeta>> {
    let meta = state.registry.stored(name).await?;
    let live = state.registry.loaded(name).is_some_and(|h| h.peers() > 0);
    if meta.is_none() && !live && !in_stream(state, name).await? {
        return Err(ApiError::not_found(format!("no document '{name}'")));
    }
    Ok(meta)
}

/// Whether the document has a stream in the cluster's Redis (never outside
/// cluster mode).
async fn in_stream(state: &AppState, name: &DocName) -> ApiResult<bool> {
    let Some(broker) = state.registry.broker() else {
        return Ok(false);
    };
    broker
        .has_stream(name)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// `GET /api/docs/{name}`: metadata and content as JSON.
async fn get_doc(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<Json<DocJson>> {
    let name = doc_name(&name)?;
    caller.read(&name)?;
    let meta = existing(&state, &name).await?;
    let content = state
        .registry
        .with_doc_or_shed(&name, |h| async move { h.content().await })
        .await?;
    let peers = state.registry.loaded(&name).map_or(0, |h| h.peers());
    let mut doc = DocJson::new(name.as_str(), meta.as_ref(), peers);
    doc.content = Some(content);
    Ok(Json(doc))
}

/// `DELETE /api/docs/{name}`: the document, its log and its versions; live
/// peers are disconnected (code 4404).
async fn delete_doc(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let name = doc_name(&name)?;
    caller.admin()?;
    existing(&state, &name).await?;
    state
        .registry
        .with_doc_or_shed(&name, |h| async move { h.delete().await })
        .await?;
    tell_cluster(&state, crate::broker::Control::Deleted { doc: name.clone() }).await;
    Ok(Json(json!({ "deleted": name.as_str() })))
}

/// Cluster mode: tells the other nodes of a change already stored. A lost
/// event delays its effect elsewhere (what is stored is checked anyway),
/// so a failure is logged, not returned.
pub(super) async fn tell_cluster(state: &AppState, event: crate::broker::Control) {
    if let Some(broker) = state.registry.broker() {
        if let Err(e) = broker.publish_control(&event).await {
            tracing::warn!(error = %e, ?event, "the other nodes were not told");
        }
    }
}

#[derive(Deserialize)]
struct SvQuery {
    sv: Option<String>,
}

fn binary(update: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], update).into_response()
}

/// `GET /api/docs/{name}/update[?sv=base64]`: the state as a v1 update.
async fn get_update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<SvQuery>,
) -> ApiResult<Response> {
    let name = doc_name(&name)?;
    caller.read(&name)?;
    existing(&state, &name).await?;
    let sv = query
        .sv
        .map(|b64| StateVectorParam::parse(&b64))
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let update = state
        .registry
        .with_doc_or_shed(&name, |h| {
            let sv = sv.clone();
            async move { h.encode_state(sv).await }
        })
        .await?;
    Ok(binary(update))
}

/// `POST /api/docs/{name}/update`: a v1 update, applied, stored and relayed
/// exactly like a peer's. Creates the document if needed, within the
/// client's allowance of new documents.
async fn post_update(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let name = doc_name(&name)?;
    caller.write(&name)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("empty body: send a binary Yjs v1 update"));
    }
    let size = body.len();
    // Decode once to refuse garbage with a reason; the actor gets its own
    // copy on each (rare) retry.
    InboundUpdate::from_raw(body.clone()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    super::rate::admit_new_doc(&state, &name, state.limits.client_ip(remote, &headers), &caller).await?;
    state
        .registry
        .with_doc_or_shed(&name, |h| {
            let body = body.clone();
            async move {
                let update = InboundUpdate::from_raw(body).map_err(|e| DocError::BadUpdate(e.to_string()))?;
                h.apply_update(update).await
            }
        })
        .await?;
    Ok(Json(json!({ "applied": size })))
}

/// `GET /api/docs/{name}/versions`: newest first.
async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let name = doc_name(&name)?;
    caller.read(&name)?;
    existing(&state, &name).await?;
    let versions = state.registry.versions(&name).await?;
    let versions: Vec<VersionJson> = versions.iter().map(VersionJson::from).collect();
    Ok(Json(json!({ "versions": versions })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewVersion {
    label: Option<String>,
}

/// Longest version label, in bytes.
const MAX_LABEL: usize = 200;

/// `POST /api/docs/{name}/versions` `{"label": "..."}`: 201 with the new
/// version; 200 with the latest one when nothing changed since it
/// (`"existing": true`); 409 when the document's version quota is full.
async fn take_version(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<VersionJson>)> {
    let name = doc_name(&name)?;
    caller.write(&name)?;
    // An empty body is fine: an unlabelled named version.
    let label = json_body::<NewVersion>(&body, r#"{"label": "..."}"#)?.and_then(|v| v.label);
    let label = label.map(|l| l.trim().to_string()).filter(|l| !l.is_empty());
    if label.as_ref().is_some_and(|l| l.len() > MAX_LABEL) {
        return Err(ApiError::bad_request(format!("label is longer than {MAX_LABEL} bytes")));
    }
    existing(&state, &name).await?;
    let taken = state
        .registry
        .with_doc_or_shed(&name, |h| {
            let label = label.clone();
            async move { h.take_version(VersionKind::Named, label).await }
        })
        .await?;
    let mut version = VersionJson::from(&taken.version);
    version.existing = Some(taken.existing);
    let status = if taken.existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(version)))
}

async fn load_version(
    state: &AppState,
    caller: &Caller,
    write: bool,
    name: &str,
    id: &str,
) -> ApiResult<(DocName, VersionMeta, Vec<u8>)> {
    let name = doc_name(name)?;
    if write {
        caller.write(&name)?;
    } else {
        caller.read(&name)?;
    }
    let id = version_id(id)?;
    existing(state, &name).await?;
    let (meta, bytes) = state
        .registry
        .version(&name, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no version {id} of document '{name}'")))?;
    Ok((name, meta, bytes))
}

/// `GET /api/docs/{name}/versions/{id}`: metadata and content as JSON.
async fn get_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Json<VersionJson>> {
    let (_, meta, bytes) = load_version(&state, &caller, false, &name, &id).await?;
    let content = doc::render_state(bytes).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("version {id} is corrupt: {e}"),
        )
    })?;
    let mut version = VersionJson::from(&meta);
    version.content = Some(content);
    Ok(Json(version))
}

/// `GET /api/docs/{name}/versions/{id}/update`: its full state, binary.
async fn get_version_update(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (_, _, bytes) = load_version(&state, &caller, false, &name, &id).await?;
    Ok(binary(bytes))
}

/// `DELETE /api/docs/{name}/versions/{id}`
async fn delete_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (name, meta, _) = load_version(&state, &caller, true, &name, &id).await?;
    state.registry.delete_version(&name, meta.id).await?;
    Ok(Json(json!({ "deleted": meta.id })))
}

/// `POST /api/docs/{name}/versions/{id}/restore`: the live content becomes
/// the version's through a new update; a version of the state before is
/// taken first so the restore can be undone.
async fn restore_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let name = doc_name(&name)?;
    caller.write(&name)?;
    let id = version_id(&id)?;
    existing(&state, &name).await?;
    let restored = state
        .registry
        .with_doc_or_shed(&name, |h| async move { h.restore(id).await })
        .await?;
    Ok(Json(json!({
        "restored": id,
        "backup": VersionJson::from(&restored.backup),
        "update_size": restored.update_size,
    })))
}

/// A JSON request body, `None` when empty; `shape` shows what is expected.
///
/// Parsed whatever its media type (`check_api_request` has let only JSON or
/// octet-stream through): a client that sends JSON as octet-stream, or a
/// field weft does not know, gets a 400 that says so, never a success that
/// silently dropped what it sent.
pub(super) fn json_body<T: DeserializeOwned>(body: &Bytes, shape: &str) -> ApiResult<Option<T>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("body must be JSON {shape}: {e}")))
}

/// A JSON request body that must be there.
pub(super) fn required_json_body<T: DeserializeOwned>(body: &Bytes, shape: &str) -> ApiResult<T> {
    json_body(body, shape)?.ok_or_else(|| ApiError::bad_request(format!("body must be JSON {shape}; it is empty")))
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_times_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_822_245_000), "2026-11-27T23:30:45.000Z");
    }
}
