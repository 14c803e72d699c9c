//! `/v1/completions` as the stages see it: one type for full responses and chunks.

use sconce_protocol::completion::{
    CompletionChoice, CompletionRequest, CompletionResponse, Prompt, COMPLETION_OBJECT, DEFAULT_COMPLETION_TOKENS,
};
use sconce_protocol::logprobs::CompletionLogprobs;
use sconce_protocol::{ApiError, RequestLimits, SamplingOptions, Usage};

use super::{bytes_to_tokens, slot, split_pieces, ApiReply, ApiRequest, ChoiceText, TextRef};

impl ApiRequest for CompletionRequest {
    const PROMPT_PARAM: &'static str = "prompt";

    common_request_fields!();

    fn validate(&self, limits: &RequestLimits) -> Result<(), ApiError> {
        CompletionRequest::validate(self, limits)
    }

    fn max_tokens(&self) -> Option<usize> {
        Some(self.sampling.max_tokens.unwrap_or(DEFAULT_COMPLETION_TOKENS))
    }

    fn set_max_tokens(&mut self, max_tokens: usize) {
        self.sampling.max_tokens = Some(max_tokens);
    }

    /// Text prompts count their bytes and two special tokens (BOS, EOS); token prompts count exactly.
    fn prompt_token_bound(&self) -> u64 {
        let text = |text: &String| text.len() as u64 + 2;
        match &self.prompt {
            Prompt::Text(one) => text(one),
            Prompt::Texts(texts) => texts.iter().map(text).sum(),
            Prompt::Tokens(tokens) => tokens.len() as u64,
            Prompt::TokenLists(lists) => lists.iter().map(|tokens| tokens.len() as u64).sum(),
        }
    }

    fn prompt_count(&self) -> usize {
        match &self.prompt {
            Prompt::Text(_) | Prompt::Tokens(_) => 1,
            Prompt::Texts(texts) => texts.len(),
            Prompt::TokenLists(lists) => lists.len(),
        }
        .max(1)
    }

    /// Every prompt of a batch counts; token prompts count exactly.
    fn estimated_prompt_tokens(&self) -> u64 {
        let tokens = match &self.prompt {
            Prompt::Text(text) => bytes_to_tokens(text.len()),
            Prompt::Texts(texts) => texts.iter().map(|text| bytes_to_tokens(text.len())).sum(),
            Prompt::Tokens(tokens) => tokens.len() as u64,
            Prompt::TokenLists(lists) => lists.iter().map(|tokens| tokens.len() as u64).sum(),
        };
        tokens.max(1)
    }

    /// Text prompts only: token-id prompts carry no text to check.
    fn visit_prompt_texts(&mut self, visit: &mut dyn FnMut(&mut String)) -> Result<(), ApiError> {
        match &mut self.prompt {
            Prompt::Text(text) => visit(text),
            Prompt::Texts(texts) => texts.iter_mut().for_each(visit),
            Prompt::Tokens(_) | Prompt::TokenLists(_) => {}
        }
        Ok(())
    }

    fn prompt_text(&self) -> String {
        match &self.prompt {
            Prompt::Text(text) => text.clone(),
            Prompt::Texts(texts) => texts.join("\n"),
            Prompt::Tokens(_) | Prompt::TokenLists(_) => String::new(),
        }
    }
}

/// Both the full response and its chunks.
impl ApiReply for CompletionResponse {
    common_reply_fields!();

    optional_usage!();

    fn shows_text(&self) -> bool {
        self.choices.iter().any(|choice| !choice.text.is_empty())
    }

    fn texts_mut(&mut self) -> Vec<ChoiceText<'_>> {
        let choices = self.choices.iter_mut();
        choices
            .map(|choice| ChoiceText {
                index: choice.index,
                logprobs: choice
                    .logprobs
                    .as_ref()
                    .map(|l| l.token_logprobs.iter().flatten().copied().collect())
                    .unwrap_or_default(),
                text: TextRef::Full(&mut choice.text),
                finish_reason: &mut choice.finish_reason,
            })
            .collect()
    }

    fn carries_nothing(&self) -> bool {
        let shows = |c: &CompletionChoice| {
            !c.text.is_empty() || c.finish_reason.is_some() || c.logprobs.as_ref().is_some_and(|l| !l.tokens.is_empty())
        };
        !self.choices.is_empty() && !self.choices.iter().any(shows)
    }
}

/// The full response of a finished stream: texts and logprobs joined per choice.
pub fn fold(chunks: Vec<CompletionResponse>) -> Option<CompletionResponse> {
    let head = chunks.first()?.clone();
    let mut choices: Vec<Option<CompletionChoice>> = Vec::new();
    let mut usage = None;
    for chunk in chunks {
        if let Some(Some(total)) = chunk.usage {
            usage = Some(total);
        }
        for piece in chunk.choices {
            let choice = slot(&mut choices, piece.index).get_or_insert_with(|| empty_choice(piece.index));
            choice.text.push_str(&piece.text);
            if let Some(logprobs) = piece.logprobs {
                let out = choice.logprobs.get_or_insert_with(CompletionLogprobs::default);
                out.tokens.extend(logprobs.tokens);
                out.token_logprobs.extend(logprobs.token_logprobs);
                out.top_logprobs.extend(logprobs.top_logprobs);
                out.text_offset.extend(logprobs.text_offset);
            }
            if piece.finish_reason.is_some() {
                choice.finish_reason = piece.finish_reason;
            }
        }
    }
    let choices = choices.into_iter().enumerate().map(|(i, c)| c.unwrap_or_else(|| empty_choice(i))).collect();
    Some(CompletionResponse { choices, usage: Some(Some(usage?)), object: COMPLETION_OBJECT.into(), ..head })
}

fn empty_choice(index: usize) -> CompletionChoice {
    CompletionChoice { index, text: String::new(), logprobs: None, finish_reason: None }
}

/// Per choice: one chunk per piece of text, the last with the finish; then the usage chunk.
pub fn replay(response: &CompletionResponse) -> Vec<CompletionResponse> {
    let chunk = |choices: Vec<CompletionChoice>, usage: Option<Option<Usage>>| CompletionResponse {
        choices,
        usage,
        ..response.clone_head()
    };
    let mut chunks = Vec::new();
    for choice in &response.choices {
        let mut pieces = split_pieces(&choice.text);
        let last = pieces.pop().unwrap_or_default();
        for text in pieces {
            chunks.push(chunk(vec![CompletionChoice { text, ..empty_choice(choice.index) }], None));
        }
        let finish =
            CompletionChoice { text: last, finish_reason: choice.finish_reason.clone(), ..empty_choice(choice.index) };
        chunks.push(chunk(vec![finish], None));
    }
    chunks.push(chunk(Vec::new(), Some(response.usage.flatten())));
    chunks
}

trait CloneHead {
    fn clone_head(&self) -> CompletionResponse;
}

impl CloneHead for CompletionResponse {
    /// The id, object, created and model, without choices or usage.
    fn clone_head(&self) -> CompletionResponse {
        CompletionResponse {
            id: self.id.clone(),
            object: self.object.clone(),
            created: self.created,
            model: self.model.clone(),
            choices: Vec::new(),
            usage: None,
        }
    }
}

pub fn text_response(id: String, model: &str, text: &str) -> CompletionResponse {
    let choice = CompletionChoice { text: text.into(), finish_reason: Some("stop".into()), ..empty_choice(0) };
    CompletionResponse {
        id,
        object: COMPLETION_OBJECT.into(),
        created: crate::usage::unix_now().max(0).unsigned_abs(),
        model: model.into(),
        choices: vec![choice],
        usage: Some(Some(Usage::new(0, 0, 0))),
    }
}
