//! The prompt registry's admin API (admin key only): `POST/GET /admin/prompts`,
//! `GET /admin/prompts/{name}`, `PUT/DELETE /admin/prompts/{name}/labels/{label}`.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sconce_gateway::auth::require_admin;
use sconce_gateway::prompts::{LabelSpec, NewPrompt, PromptRegistry};
use serde_json::json;

use super::admin::gateway;
use super::http::Caller;
use crate::http::{ApiJson, HttpError};
use crate::state::AppState;

/// The registry, for the admin only: checked before the body is read, so any other
/// caller gets 403 whatever it sent.
pub struct AdminRegistry(Arc<PromptRegistry>);

impl FromRequestParts<AppState> for AdminRegistry {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let gateway = gateway(state)?;
        let principal = parts.extensions.get::<Caller>().map(|caller| caller.principal.clone()).unwrap_or_default();
        require_admin(&principal)?;
        Ok(Self(gateway.prompts().clone()))
    }
}

pub async fn create(
    AdminRegistry(registry): AdminRegistry,
    ApiJson(new): ApiJson<NewPrompt>,
) -> Result<Response, HttpError> {
    let created = registry.create(new).await?;
    Ok(Json(created).into_response())
}

pub async fn list(AdminRegistry(registry): AdminRegistry) -> Result<Response, HttpError> {
    let prompts = registry.list().await?;
    Ok(Json(json!({"object": "list", "data": prompts})).into_response())
}

pub async fn show(AdminRegistry(registry): AdminRegistry, Path(name): Path<String>) -> Result<Response, HttpError> {
    let prompt = registry.show(&name).await?;
    Ok(Json(prompt).into_response())
}

pub async fn set_label(
    AdminRegistry(registry): AdminRegistry,
    Path((name, label)): Path<(String, String)>,
    ApiJson(target): ApiJson<LabelSpec>,
) -> Result<Response, HttpError> {
    let label = registry.set_label(&name, &label, target).await?;
    Ok(Json(label).into_response())
}

pub async fn delete_label(
    AdminRegistry(registry): AdminRegistry,
    Path((name, label)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    registry.delete_label(&name, &label).await?;
    Ok(Json(json!({"name": name, "label": label, "deleted": true})).into_response())
}
