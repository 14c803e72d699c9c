//! `/v1/embeddings` as the stages see it: inputs to bound, bill and check; a reply with
//! usage and no text (output guardrails find nothing to check).

use sconce_protocol::embeddings::{EmbeddingInput, EmbeddingRequest, EmbeddingResponse, InputItem, LIST_OBJECT};
use sconce_protocol::{ApiError, RequestLimits, SamplingOptions, Usage};

use super::{bytes_to_tokens, ApiReply, ApiRequest, ChoiceText};

impl ApiRequest for EmbeddingRequest {
    const PROMPT_PARAM: &'static str = "input";

    common_request_fields!();

    fn validate(&self, limits: &RequestLimits) -> Result<(), ApiError> {
        EmbeddingRequest::validate(self, limits)
    }

    /// Nothing is generated.
    fn max_tokens(&self) -> Option<usize> {
        Some(0)
    }

    fn set_max_tokens(&mut self, _max_tokens: usize) {}

    /// Texts count their bytes plus `[CLS]` and `[SEP]`; token inputs count exactly.
    fn prompt_token_bound(&self) -> u64 {
        let count = |item: &InputItem<'_>| match item {
            InputItem::Text(text) => text.len() as u64 + 2,
            InputItem::Tokens(tokens) => tokens.len() as u64,
        };
        self.input.items().iter().map(count).sum()
    }

    fn prompt_count(&self) -> usize {
        self.input.len().max(1)
    }

    fn estimated_prompt_tokens(&self) -> u64 {
        let count = |item: &InputItem<'_>| match item {
            InputItem::Text(text) => bytes_to_tokens(text.len()),
            InputItem::Tokens(tokens) => tokens.len() as u64,
        };
        self.input.items().iter().map(count).sum::<u64>().max(1)
    }

    fn visit_prompt_texts(&mut self, visit: &mut dyn FnMut(&mut String)) -> Result<(), ApiError> {
        match &mut self.input {
            EmbeddingInput::Text(text) => visit(text),
            EmbeddingInput::Texts(texts) => texts.iter_mut().for_each(visit),
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenLists(_) => {}
        }
        Ok(())
    }

    fn prompt_text(&self) -> String {
        match &self.input {
            EmbeddingInput::Text(text) => text.clone(),
            EmbeddingInput::Texts(texts) => texts.join("\n"),
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenLists(_) => String::new(),
        }
    }

    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The same inputs give the same vectors.
    fn is_deterministic(&self) -> bool {
        true
    }
}

impl ApiReply for EmbeddingResponse {
    fn id(&self) -> &str {
        &self.id
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn set_id(&mut self, id: String) {
        self.id = id;
    }

    /// The vectors arrive all at once: the reply is its own first "token".
    fn shows_text(&self) -> bool {
        !self.data.is_empty()
    }

    fn finish_reasons(&self) -> Vec<Option<&str>> {
        Vec::new()
    }

    fn usage(&self) -> Option<&Usage> {
        Some(&self.usage)
    }

    fn usage_mut(&mut self) -> Option<&mut Usage> {
        Some(&mut self.usage)
    }

    fn choice_count(&self) -> usize {
        self.data.len()
    }

    fn texts_mut(&mut self) -> Vec<ChoiceText<'_>> {
        Vec::new()
    }

    fn retain_choices(&mut self, _keep: &mut dyn FnMut(Option<&str>) -> bool) {}

    fn carries_nothing(&self) -> bool {
        false
    }
}

/// A reply without vectors (what `Api::text_response` can honestly give for embeddings).
pub fn empty_response(id: String, model: &str) -> EmbeddingResponse {
    EmbeddingResponse { id, object: LIST_OBJECT.into(), data: Vec::new(), model: model.into(), usage: Usage::default() }
}
