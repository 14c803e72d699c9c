//! `/v1/embeddings` on the local embedding models: check the request against the model
//! (`dimensions`, length, vocabulary, total tokens), tokenize, run it through the model's
//! batcher and shape the reply (floats or base64, exact usage).

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use sconce_gateway::{Backend, Call, CallResult, Embeddings, Failure, Outcome, Reply};
use sconce_protocol::embeddings::{
    Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingVector, InputItem, EMBEDDING_OBJECT, LIST_OBJECT,
};
use sconce_protocol::{ApiError, RequestLimits, Usage};

use super::serving::Serving;
use super::LocalEngine;
use crate::embed::Embedder;

impl Backend<Embeddings> for LocalEngine {
    fn call(&self, call: Call<Embeddings>) -> BoxFuture<'static, CallResult<Embeddings>> {
        let _ = call.ctx.journal.backend_start.set(Instant::now());
        let serving = self.serving.clone();
        Box::pin(async move {
            let response = embed(serving, call).await.map_err(Failure::from)?;
            Ok(Outcome::new(Reply::Full(Box::new(response))))
        })
    }
}

async fn embed(serving: Arc<Serving>, call: Call<Embeddings>) -> Result<EmbeddingResponse, ApiError> {
    if serving.is_draining() {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let Call { request, ctx } = call;
    let service = serving.embeddings().ok_or_else(|| no_embedding_model(&serving, request.model.as_deref()))?;
    let model = service
        .find(request.model.as_deref())
        .ok_or_else(|| no_embedding_model(&serving, request.model.as_deref()))?
        .clone();
    request.validate(serving.limits())?;
    check_dimensions(&model, request.dimensions)?;
    let _in_flight = serving.track(&ctx.request_id)?;
    let inputs = tokenize(&model, &request, serving.limits())?;
    let prompt_tokens: usize = inputs.iter().map(Vec::len).sum();
    let vectors = model.embed_tokens(inputs).await?;
    let format = request.format();
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| Embedding {
            object: EMBEDDING_OBJECT.into(),
            index,
            embedding: EmbeddingVector::encode(vector, format),
        })
        .collect();
    let id = sconce_gateway::reply_id::<Embeddings>(&ctx.request_id);
    Ok(EmbeddingResponse {
        id,
        object: LIST_OBJECT.into(),
        data,
        model: model.name.clone(),
        usage: Usage::new(prompt_tokens, 0, 0),
    })
}

/// 404 for a name nobody serves; a 400 that says so when it names the chat model.
fn no_embedding_model(serving: &Serving, name: Option<&str>) -> ApiError {
    let chat_model = serving.loaded().map(|loaded| loaded.backend.info().name.clone());
    match name {
        Some(name) if chat_model.as_deref() == Some(name) || serving.model_aliases().iter().any(|a| a == name) => {
            ApiError::invalid_param(
                "model",
                format!("`{name}` is a chat model; /v1/embeddings needs an embedding model"),
            )
        }
        Some(name) => ApiError::model_not_found(name),
        None => ApiError::invalid_param("model", "no embedding model is served (start with --embedding-model NAME)"),
    }
}

/// MiniLM-style encoders have one output size: any `dimensions` is refused.
fn check_dimensions(model: &Embedder, dimensions: Option<usize>) -> Result<(), ApiError> {
    match dimensions {
        None => Ok(()),
        Some(_) => Err(ApiError::invalid_param(
            "dimensions",
            format!(
                "the model `{}` does not support `dimensions`: its vectors always have {} dimensions",
                model.name, model.dimensions
            ),
        )),
    }
}

/// Each input's tokens: texts with their special tokens, token lists as given; each within
/// the model's length (or cut to `truncate_prompt_tokens`) and vocabulary, all within the
/// request's token limit.
fn tokenize(model: &Embedder, request: &EmbeddingRequest, limits: &RequestLimits) -> Result<Vec<Vec<u32>>, ApiError> {
    let truncate = request.truncate_prompt_tokens;
    if let Some(max) = truncate.filter(|max| *max > model.max_tokens) {
        let message = format!("truncate_prompt_tokens is {max}, more than the model's {} tokens", model.max_tokens);
        return Err(ApiError::invalid_param("truncate_prompt_tokens", message));
    }
    let mut total = 0usize;
    let mut inputs = Vec::with_capacity(request.input.len());
    for (index, item) in request.input.items().into_iter().enumerate() {
        let tokens = input_tokens(model, item, truncate, index)?;
        total = total.saturating_add(tokens.len());
        RequestLimits::check_at_most(
            "input",
            "the number of tokens in all inputs",
            total,
            limits.max_embedding_tokens,
        )?;
        inputs.push(tokens);
    }
    Ok(inputs)
}

fn input_tokens(
    model: &Embedder,
    item: InputItem<'_>,
    truncate: Option<usize>,
    index: usize,
) -> Result<Vec<u32>, ApiError> {
    let tokens = match (item, truncate) {
        (InputItem::Text(text), Some(max)) => model.tokenize_truncated(text, max)?,
        (InputItem::Text(text), None) => model.tokenize(text)?,
        (InputItem::Tokens(tokens), Some(max)) => tokens[..tokens.len().min(max)].to_vec(),
        (InputItem::Tokens(tokens), None) => tokens.to_vec(),
    };
    if let Some(bad) = tokens.iter().find(|id| **id as usize >= model.vocab_size) {
        let message = format!("input[{index}] has token id {bad}, outside the vocabulary of {} ids", model.vocab_size);
        return Err(ApiError::invalid_param("input", message));
    }
    if tokens.len() > model.max_tokens {
        let message = format!(
            "input[{index}] has {} tokens, more than the {} the model `{}` reads; shorten it or set truncate_prompt_tokens",
            tokens.len(),
            model.max_tokens,
            model.name
        );
        return Err(ApiError::invalid_param("input", message).with_code("context_length_exceeded"));
    }
    Ok(tokens)
}
