//! `POST /v1/completions`: text or token prompts, batches, `echo` and legacy logprobs.

use axum::extract::State;
use axum::response::Response;
use sconce_gateway::Completions;
use sconce_protocol::completion::CompletionRequest;

use super::{run, CallHead};
use crate::http::ApiJson;
use crate::state::AppState;

pub async fn completions(
    State(state): State<AppState>,
    head: CallHead,
    ApiJson(request): ApiJson<CompletionRequest>,
) -> Response {
    run::<Completions>(&state, head, request).await
}
