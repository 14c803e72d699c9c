//! What the stages read and write in each endpoint's requests and replies, so one stage
//! serves `/v1/chat/completions` and `/v1/completions` alike.

/// The accessors every reply type spells alike: `id`, `model`, `choices[].finish_reason`.
macro_rules! common_reply_fields {
    () => {
        fn id(&self) -> &str {
            &self.id
        }

        fn model(&self) -> &str {
            &self.model
        }

        fn set_id(&mut self, id: String) {
            self.id = id;
        }

        fn finish_reasons(&self) -> Vec<Option<&str>> {
            self.choices.iter().map(|choice| choice.finish_reason.as_deref()).collect()
        }

        fn choice_count(&self) -> usize {
            self.choices.len()
        }

        fn retain_choices(&mut self, keep: &mut dyn FnMut(Option<&str>) -> bool) {
            self.choices.retain(|choice| keep(choice.finish_reason.as_deref()));
        }
    };
}

/// A `usage` that is absent, `null` or set (stream chunks, and completions throughout).
macro_rules! optional_usage {
    () => {
        fn usage(&self) -> Option<&Usage> {
            self.usage.as_ref().and_then(Option::as_ref)
        }

        fn usage_mut(&mut self) -> Option<&mut Usage> {
            self.usage.as_mut().and_then(Option::as_mut)
        }
    };
}

/// The request fields every endpoint spells alike: `model` and the flattened sampling.
macro_rules! common_request_fields {
    () => {
        fn model(&self) -> Option<&str> {
            self.model.as_deref()
        }

        fn set_model(&mut self, model: String) {
            self.model = Some(model);
        }

        fn sampling(&self) -> &SamplingOptions {
            &self.sampling
        }

        fn sampling_mut(&mut self) -> &mut SamplingOptions {
            &mut self.sampling
        }
    };
}

pub mod chat;
pub mod completions;
pub mod embeddings;

use std::fmt::Debug;

use sconce_protocol::chat::ChatCompletionRequest;
use sconce_protocol::{ApiError, RequestLimits, SamplingOptions, Usage};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A request as the stages see it.
pub trait ApiRequest: Clone + Debug + Serialize + Send + Sync + 'static {
    /// The request field that holds the prompt (`messages` or `prompt`), for errors.
    const PROMPT_PARAM: &'static str;

    /// The checks a route runs before the request enters the stages, within `limits`.
    fn validate(&self, limits: &RequestLimits) -> Result<(), ApiError>;
    fn model(&self) -> Option<&str>;
    fn set_model(&mut self, model: String);
    fn sampling(&self) -> &SamplingOptions;
    fn sampling_mut(&mut self) -> &mut SamplingOptions;
    /// The effective `max_tokens`; none: up to the context length.
    fn max_tokens(&self) -> Option<usize>;
    fn set_max_tokens(&mut self, max_tokens: usize);
    /// A cheap prompt-size estimate (4 bytes a token) for the TPM pre-check.
    fn estimated_prompt_tokens(&self) -> u64;
    /// An upper bound on the prompt's tokens, for budget holds: a token is at least one
    /// byte (byte-level BPE, SentencePiece with byte fallback), plus room for the chat
    /// template's markers; token prompts count exactly.
    fn prompt_token_bound(&self) -> u64;
    /// How many prompts the request holds (each gets `n` choices).
    fn prompt_count(&self) -> usize {
        1
    }
    /// Visits each prompt text, which the visitor may rewrite (guardrails mask in place).
    fn visit_prompt_texts(&mut self, visit: &mut dyn FnMut(&mut String)) -> Result<(), ApiError>;
    /// The prompt's text, joined (auto routing reads its size and markers).
    fn prompt_text(&self) -> String;
    /// The chat request, for the stages that apply only to chat (the prompt registry).
    fn as_chat_mut(&mut self) -> Option<&mut ChatCompletionRequest> {
        None
    }

    fn user(&self) -> Option<&str> {
        self.sampling().user.as_deref()
    }

    fn is_stream(&self) -> bool {
        self.sampling().is_stream()
    }

    fn include_usage(&self) -> bool {
        self.sampling().include_usage()
    }

    /// Temperature 0, or a seed given: the same request gives the same answer.
    fn is_deterministic(&self) -> bool {
        self.sampling().temperature == Some(0.0) || self.sampling().seed.is_some()
    }
}

/// A full reply or one stream chunk, as the stages read and rewrite it.
pub trait ApiReply: Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static {
    fn id(&self) -> &str;
    fn model(&self) -> &str;
    /// Gives the reply another id (a cache hit answers with the current request's id).
    fn set_id(&mut self, id: String);
    /// Whether any choice carries text (the first one marks the time to first token).
    fn shows_text(&self) -> bool;
    /// The first finish reason among the choices.
    fn finish_reason(&self) -> Option<&str> {
        self.finish_reasons().into_iter().flatten().next()
    }
    /// Each choice's finish reason, in order.
    fn finish_reasons(&self) -> Vec<Option<&str>>;
    fn usage(&self) -> Option<&Usage>;
    fn usage_mut(&mut self) -> Option<&mut Usage>;
    /// The closing `choices: []` chunk that carries only the usage.
    fn is_usage_only(&self) -> bool {
        self.usage().is_some() && self.choice_count() == 0
    }
    fn choice_count(&self) -> usize;
    /// Each choice's text, finish reason and sampled-token logprobs, to check and rewrite.
    fn texts_mut(&mut self) -> Vec<ChoiceText<'_>>;
    /// Keeps the choices whose finish reason `keep` accepts.
    fn retain_choices(&mut self, keep: &mut dyn FnMut(Option<&str>) -> bool);
    /// True when no choice carries text, a role, a finish reason or logprobs (and it is
    /// no usage chunk): such a chunk is not worth sending.
    fn carries_nothing(&self) -> bool;
    /// The tool calls' argument texts (whole, or this chunk's fragments), to check and rewrite.
    fn arguments_mut(&mut self) -> Vec<ArgumentsText<'_>> {
        Vec::new()
    }
    /// Adds an argument fragment to a chunk's choice (text a stream guard held back).
    fn push_arguments(&mut self, _choice: usize, _call: usize, _text: String) {}
    /// Tool calls begun in this reply (whole calls, or first deltas of a chunk).
    fn tool_calls_started(&self) -> u64 {
        0
    }
    /// Drops a choice's tool calls (a blocked choice shows nothing).
    fn clear_calls(&mut self, _choice: usize) {}
}

/// One tool call's arguments in a reply: the choice, the call's index, the text.
pub struct ArgumentsText<'a> {
    pub choice: usize,
    pub call: usize,
    pub text: &'a mut String,
}

/// One choice's text in a reply, as a stage may rewrite it.
pub struct ChoiceText<'a> {
    pub index: usize,
    pub text: TextRef<'a>,
    pub finish_reason: &'a mut Option<String>,
    /// The logprobs of the tokens sampled in this piece (when they were asked for).
    pub logprobs: Vec<f32>,
}

/// A choice's text: a full string, or a stream delta's optional content.
pub enum TextRef<'a> {
    Full(&'a mut String),
    /// `opens`: the delta announces the role, so it keeps an empty content.
    Delta {
        content: &'a mut Option<String>,
        opens: bool,
    },
}

impl TextRef<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Full(text) => text,
            Self::Delta { content, .. } => content.as_deref().unwrap_or(""),
        }
    }

    pub fn set(&mut self, text: String) {
        match self {
            Self::Full(slot) => **slot = text,
            Self::Delta { content, opens } => **content = (!text.is_empty() || *opens).then_some(text),
        }
    }

    /// Removes the text (a blocked choice shows nothing).
    pub fn clear(&mut self) {
        match self {
            Self::Full(slot) => slot.clear(),
            Self::Delta { content, .. } => **content = None,
        }
    }
}

fn bytes_to_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// Splits after each whitespace run, so pieces look like tokens and join back exactly.
pub fn split_pieces(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut prev_space = false;
    for (i, c) in text.char_indices() {
        if !c.is_whitespace() && prev_space {
            pieces.push(text[start..i].to_string());
            start = i;
        }
        prev_space = c.is_whitespace();
    }
    if start < text.len() {
        pieces.push(text[start..].to_string());
    }
    pieces
}

/// Grows `items` so that `index` exists.
fn slot<T: Default>(items: &mut Vec<T>, index: usize) -> &mut T {
    if items.len() <= index {
        items.resize_with(index + 1, T::default);
    }
    &mut items[index]
}

#[cfg(test)]
mod tests;
