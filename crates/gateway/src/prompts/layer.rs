//! The prompt stage: resolves a request's `prompt` (label, experiment arm or version),
//! renders it in front of the request's own messages and fills in the prompt's default
//! model and sampling fields, before the policy, guardrails and cache see the request.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sconce_protocol::chat::{ChatCompletionRequest, ChatMessage, PromptRef};
use sconce_protocol::ApiError;
use serde_json::{Map, Value};

use super::{PromptBook, PromptRegistry, PromptTag, PromptVersion, PROMPT_HEADER, PROMPT_LABEL_HEADER};
use crate::api::{with_headers, Api, Backend, Call, CallResult, ExtraHeaders, Failure, Service};
use crate::context::CallContext;
use crate::endpoint::ApiRequest;

/// The prompt stage over one endpoint's inner stages (chat only: see `Stage::applies_to`).
pub struct PromptStage<A: Api> {
    registry: Arc<PromptRegistry>,
    inner: Service<A>,
}

impl<A: Api> PromptStage<A> {
    pub fn new(registry: Arc<PromptRegistry>, inner: Service<A>) -> Self {
        Self { registry, inner }
    }
}

impl<A: Api> Backend<A> for PromptStage<A> {
    fn call(&self, mut call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        let Some(request) = call.request.as_chat_mut() else {
            return self.inner.call(call);
        };
        let Some(reference) = request.prompt.take() else {
            return self.inner.call(call);
        };
        let headers = match apply_prompt(&self.registry.snapshot(), &reference, request, &mut call.ctx) {
            Ok(tag) => tag_headers(&tag),
            Err(error) => return Box::pin(std::future::ready(Err(Failure::from(error)))),
        };
        let reply = self.inner.call(call);
        Box::pin(async move { with_headers(reply.await, headers) })
    }
}

/// Resolves and renders `reference` into `request`; the version goes into the context
/// for the stages inside (the cache key) and into the journal for the ledger.
pub fn apply_prompt(
    book: &PromptBook,
    reference: &PromptRef,
    request: &mut ChatCompletionRequest,
    ctx: &mut CallContext,
) -> Result<PromptTag, ApiError> {
    let resolved = book.resolve(reference, sticky_id(request, ctx))?;
    let rendered = resolved.prompt.render(&reference.variables)?;
    let version = &resolved.prompt.version;
    let model = fill_in(request, version, rendered)?;
    let tag = PromptTag { name: version.name.clone(), version: version.version, label: resolved.label, model };
    let _ = ctx.journal.prompt.set(tag.clone());
    ctx.prompt = Some(tag.clone());
    Ok(tag)
}

/// Who an experiment keeps on one version: the `user` field, else the key, else the request.
fn sticky_id<'a>(request: &'a ChatCompletionRequest, ctx: &'a CallContext) -> &'a str {
    let user = request.sampling.user.as_deref().filter(|user| !user.is_empty());
    let key = Some(ctx.principal.key_id.as_str()).filter(|key| !key.is_empty());
    user.or(key).unwrap_or(&ctx.request_id)
}

fn tag_headers(tag: &PromptTag) -> ExtraHeaders {
    let mut headers = vec![(PROMPT_HEADER, tag.to_string())];
    if let Some(label) = &tag.label {
        headers.push((PROMPT_LABEL_HEADER, label.clone()));
    }
    headers
}

/// Puts the rendered messages first and applies the defaults the request did not set;
/// returns the model it took from the prompt, if any.
pub fn fill_in(
    request: &mut ChatCompletionRequest,
    version: &PromptVersion,
    rendered: Vec<ChatMessage>,
) -> Result<Option<String>, ApiError> {
    let own = std::mem::replace(&mut request.messages, rendered);
    request.messages.extend(own);
    let mut model = None;
    if request.model.as_deref().is_none_or(str::is_empty) && version.model.is_some() {
        request.model.clone_from(&version.model);
        model.clone_from(&version.model);
    }
    if !version.params.is_empty() {
        *request = with_defaults(request, &version.params)?;
    }
    Ok(model)
}

/// The request with each of `params` that it leaves unset (absent or null) filled in.
fn with_defaults(
    request: &ChatCompletionRequest,
    params: &Map<String, Value>,
) -> Result<ChatCompletionRequest, ApiError> {
    let invalid = |error: serde_json::Error| ApiError::invalid_param("prompt", format!("prompt params: {error}"));
    let mut value = serde_json::to_value(request).map_err(invalid)?;
    if let Value::Object(fields) = &mut value {
        for (name, default) in params {
            if fields.get(name).is_none_or(Value::is_null) {
                fields.insert(name.clone(), default.clone());
            }
        }
    }
    serde_json::from_value(value).map_err(invalid)
}
