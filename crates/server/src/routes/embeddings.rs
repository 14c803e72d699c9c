//! `POST /v1/embeddings`.

use axum::extract::State;
use axum::response::Response;
use sconce_gateway::Embeddings;
use sconce_protocol::embeddings::EmbeddingRequest;

use super::{run, CallHead};
use crate::http::ApiJson;
use crate::state::AppState;

pub async fn embeddings(
    State(state): State<AppState>,
    head: CallHead,
    ApiJson(request): ApiJson<EmbeddingRequest>,
) -> Response {
    run::<Embeddings>(&state, head, request).await
}
