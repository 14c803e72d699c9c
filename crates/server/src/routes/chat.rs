//! `POST /v1/chat/completions`.

use axum::extract::State;
use axum::response::Response;
use sconce_gateway::Chat;
use sconce_protocol::chat::ChatCompletionRequest;

use super::{run, CallHead};
use crate::http::ApiJson;
use crate::state::AppState;

pub async fn chat_completions(
    State(state): State<AppState>,
    head: CallHead,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Response {
    run::<Chat>(&state, head, request).await
}
