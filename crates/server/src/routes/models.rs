//! `GET /v1/models`, `GET /v1/models/{id}`, `POST /tokenize` and `POST /detokenize`.

use axum::extract::{Path, State};
use axum::Json;
use sconce_protocol::models::{ModelCard, ModelList};
use sconce_protocol::tokenize::{DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse};
use sconce_protocol::ApiError;

use crate::backend::Backend;
use crate::http::{ApiJson, HttpError};
use crate::state::AppState;

fn card(state: &AppState, backend: &Backend) -> ModelCard {
    let info = backend.info();
    let root = state.settings().model_aliases.first().map_or(info.name.as_str(), String::as_str);
    ModelCard::new(&info.name, root, state.started(), info.max_model_len)
}

pub async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>, HttpError> {
    let backend = state.backend().ok_or_else(|| ApiError::unavailable("the model is still loading"))?;
    Ok(Json(ModelList::new(vec![card(&state, backend)])))
}

pub async fn get_model(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ModelCard>, HttpError> {
    let backend = state.backend().ok_or_else(|| ApiError::unavailable("the model is still loading"))?;
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
