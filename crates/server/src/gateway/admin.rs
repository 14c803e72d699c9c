//! `POST/GET/DELETE /admin/keys` (admin key only) and `GET /v1/usage`.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sconce_gateway::auth::require_admin;
use sconce_gateway::keys::NewKey;
use sconce_gateway::usage::UsageQuery;
use sconce_gateway::Principal;
use sconce_protocol::ApiError;
use serde_json::json;

use super::http::Caller;
use crate::http::{ApiJson, HttpError};
use crate::state::AppState;

pub(super) fn gateway(state: &AppState) -> Result<&std::sync::Arc<sconce_gateway::Gateway>, ApiError> {
    state.gateway().ok_or_else(|| {
        ApiError::invalid_request("the gateway is off: set `[gateway] enabled = true`").with_code("gateway_disabled")
    })
}

fn principal(caller: Option<Extension<Caller>>) -> Principal {
    caller.map(|Extension(caller)| caller.principal).unwrap_or_default()
}

fn internal(error: anyhow::Error) -> ApiError {
    ApiError::internal(error.to_string())
}

pub async fn create_key(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    ApiJson(new): ApiJson<NewKey>,
) -> Result<Response, HttpError> {
    let gateway = gateway(&state)?;
    require_admin(&principal(caller))?;
    if new.alias.trim().is_empty() || new.team.trim().is_empty() {
        return Err(ApiError::invalid_request("`alias` and `team` must not be empty").into());
    }
    let (secret, key) = gateway.create_key(new).await.map_err(internal)?;
    let mut body = serde_json::to_value(&key).map_err(|e| ApiError::internal(e.to_string()))?;
    body["key"] = json!(secret);
    Ok(Json(body).into_response())
}

pub async fn list_keys(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
) -> Result<Response, HttpError> {
    let gateway = gateway(&state)?;
    require_admin(&principal(caller))?;
    let keys = gateway.list_keys().await.map_err(internal)?;
    Ok(Json(json!({"object": "list", "data": keys})).into_response())
}

pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let gateway = gateway(&state)?;
    require_admin(&principal(caller))?;
    let revoked = gateway.revoke_key(&id).await.map_err(internal)?;
    if revoked == 0 {
        return Err(ApiError::invalid_request(format!("no active key `{id}`")).with_code("key_not_found").into());
    }
    Ok(Json(json!({"id": id, "revoked": true})).into_response())
}

pub async fn usage(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Query(query): Query<UsageQuery>,
) -> Result<Response, HttpError> {
    let gateway = gateway(&state)?;
    let report = gateway.usage(&query, &principal(caller)).await?;
    Ok(Json(report).into_response())
}
