//! `GET /v1/models`, `GET /v1/models/{id}`, `POST /tokenize` and `POST /detokenize`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use sconce_gateway::route::catalog::ServedName;
use sconce_protocol::models::{ModelCard, ModelList, ModelRoute};
use sconce_protocol::tokenize::{DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse};
use sconce_protocol::ApiError;

use crate::backend::Backend;
use crate::config::ModelKind;
use crate::embed::Embedder;
use crate::http::{ApiJson, HttpError};
use crate::state::AppState;

fn card(state: &AppState, backend: &Backend) -> ModelCard {
    let info = backend.info();
    let root = state.settings().model_aliases.first().map_or(info.name.as_str(), String::as_str);
    let mut card = ModelCard::new(&info.name, root, state.started(), info.max_model_len);
    card.kind = Some(ModelKind::Chat.as_str().into());
    card
}

/// The embedding models' cards.
fn embedding_cards(state: &AppState) -> Vec<ModelCard> {
    let Some(service) = state.embeddings() else { return Vec::new() };
    let card = |model: &Arc<Embedder>| {
        let mut card = ModelCard::new(&model.name, &model.source, state.started(), model.max_tokens);
        card.kind = Some(ModelKind::Embedding.as_str().into());
        card.dimensions = Some(model.dimensions);
        card
    };
    service.models().iter().map(card).collect()
}

/// A card for a name the gateway routes: a group, an alias or `auto`.
fn routed_card(state: &AppState, name: ServedName) -> ModelCard {
    let local_len = state.backend().map(|backend| backend.info().max_model_len);
    let root = name.group.clone().unwrap_or_else(|| name.name.clone());
    let mut card = ModelCard::new(&name.name, &root, state.started(), 0);
    card.max_model_len = if name.local_only { local_len } else { None };
    let route = ModelRoute {
        kind: name.kind.as_str().into(),
        group: name.group,
        deployments: name.deployments,
        tiers: name.tiers,
    };
    card.sconce = Some(route);
    card
}

/// Every name the gateway's routing serves; empty with routing off.
fn routed_cards(state: &AppState) -> Vec<ModelCard> {
    let Some(gateway) = state.gateway() else { return Vec::new() };
    let names = gateway.served_names();
    names.into_iter().map(|name| routed_card(state, name)).collect()
}

fn loading() -> ApiError {
    ApiError::unavailable("the model is still loading")
}

/// The local model, the embedding models, then the routed names (a group shadows a local
/// model of its name).
pub async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>, HttpError> {
    let routed = routed_cards(&state);
    let local = state.backend().map(|backend| card(&state, backend));
    if local.is_none() && routed.is_empty() {
        return Err(loading().into());
    }
    let local = local.into_iter().chain(embedding_cards(&state));
    let mut cards: Vec<ModelCard> = local.filter(|card| routed.iter().all(|r| r.id != card.id)).collect();
    cards.extend(routed);
    Ok(Json(ModelList::new(cards)))
}

pub async fn get_model(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ModelCard>, HttpError> {
    if let Some(routed) = routed_cards(&state).into_iter().find(|card| card.id == id) {
        return Ok(Json(routed));
    }
    if let Some(embedding) = embedding_cards(&state).into_iter().find(|card| card.id == id) {
        return Ok(Json(embedding));
    }
    let backend = state.backend().ok_or_else(loading)?;
    state.check_model(backend, Some(&id))?;
    Ok(Json(card(&state, backend)))
}

pub async fn tokenize(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<TokenizeRequest>,
) -> Result<Json<TokenizeResponse>, HttpError> {
    let backend = state.backend().ok_or_else(|| ApiError::unavailable("the model is still loading"))?;
    state.check_model(backend, request.model())?;
    let tokens = match &request {
        TokenizeRequest::Completion { prompt, add_special_tokens, .. } => {
            backend.encode_text(prompt, add_special_tokens.unwrap_or(true))?
        }
        TokenizeRequest::Chat { messages, add_generation_prompt, .. } => {
            let messages = messages
                .iter()
                .map(|message| Ok((message.role.as_str().to_string(), message.text()?)))
                .collect::<Result<Vec<_>, ApiError>>()?;
            backend.encode_chat(messages, add_generation_prompt.unwrap_or(true))?
        }
    };
    let token_strs = request.return_token_strs().then(|| {
        let text = backend.token_text();
        tokens.iter().map(|&id| text.token(id)).collect()
    });
    Ok(Json(TokenizeResponse { count: tokens.len(), max_model_len: backend.info().max_model_len, tokens, token_strs }))
}

pub async fn detokenize(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<DetokenizeRequest>,
) -> Result<Json<DetokenizeResponse>, HttpError> {
    let backend = state.backend().ok_or_else(|| ApiError::unavailable("the model is still loading"))?;
    state.check_model(backend, request.model.as_deref())?;
    let vocab = backend.info().vocab_size;
    if let Some(bad) = request.tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(ApiError::invalid_param("tokens", format!("token id {bad} is outside the vocabulary")).into());
    }
    Ok(Json(DetokenizeResponse { prompt: backend.decode(&request.tokens)? }))
}
