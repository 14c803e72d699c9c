//! What a cache entry holds, how a live reply is collected into one, and how an entry
//! (or the static fallback) is replayed as a token-by-token stream with its usage chunk.

use futures_util::StreamExt;
use sconce_protocol::chat::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionResponse, ChatDelta, Role,
    CHAT_CHUNK_OBJECT, CHAT_OBJECT,
};
use sconce_protocol::Usage;
use serde::{Deserialize, Serialize};

use crate::{ChatReply, ChunkStream};

/// A finished answer, with the text pieces each choice streamed in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedReply {
    pub response: ChatCompletionResponse,
    pub deltas: Vec<Vec<String>>,
}

/// Finish reasons of complete answers; anything else is never cached.
fn is_complete(reason: Option<&str>) -> bool {
    matches!(reason, Some("stop" | "length"))
}

impl CachedReply {
    /// A full response, its text split after whitespace for replay.
    pub fn from_full(response: ChatCompletionResponse) -> Option<Self> {
        if response.choices.is_empty() || !response.choices.iter().all(|c| is_complete(c.finish_reason.as_deref())) {
            return None;
        }
        let deltas = response.choices.iter().map(|c| split_pieces(&c.message.content)).collect();
        Some(Self { response, deltas })
    }

    /// The response as a hit: usage marks the prompt as cached.
    pub fn hit_response(&self) -> ChatCompletionResponse {
        let mut response = self.response.clone();
        response.usage.prompt_tokens_details.cached_tokens = response.usage.prompt_tokens;
        response
    }

    /// Replays as chunks: role, one per piece, finish, then the usage chunk.
    pub fn replay(&self) -> ChunkStream {
        let response = self.hit_response();
        let mut chunks = Vec::new();
        let chunk = |choices: Vec<ChatChunkChoice>, usage: Option<Option<Usage>>| ChatCompletionChunk {
            id: response.id.clone(),
            object: CHAT_CHUNK_OBJECT.into(),
            created: response.created,
            model: response.model.clone(),
            choices,
            usage,
        };
        let choice = |index, role, content, finish_reason| ChatChunkChoice {
            index,
            delta: ChatDelta { role, content },
            logprobs: None,
            finish_reason,
        };
        for (index, pieces) in self.deltas.iter().enumerate() {
            chunks.push(chunk(vec![choice(index, Some(Role::Assistant), Some(String::new()), None)], None));
            for piece in pieces {
                chunks.push(chunk(vec![choice(index, None, Some(piece.clone()), None)], None));
            }
            let finish = response.choices.get(index).and_then(|c| c.finish_reason.clone());
            chunks.push(chunk(vec![choice(index, None, None, finish)], None));
        }
        chunks.push(chunk(Vec::new(), Some(Some(response.usage))));
        futures_util::stream::iter(chunks.into_iter().map(Ok)).boxed()
    }
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

/// Accumulates a live stream; yields an entry only if it finished completely.
#[derive(Default)]
pub struct Collector {
    head: Option<ChatCompletionChunk>,
    texts: Vec<String>,
    deltas: Vec<Vec<String>>,
    finish: Vec<Option<String>>,
    usage: Option<Usage>,
}

impl Collector {
    pub fn observe(&mut self, chunk: &ChatCompletionChunk) {
        if self.head.is_none() {
            self.head = Some(ChatCompletionChunk { choices: Vec::new(), usage: None, ..chunk.clone() });
        }
        if let Some(Some(usage)) = chunk.usage {
            self.usage = Some(usage);
        }
        for choice in &chunk.choices {
            let i = choice.index;
            if self.texts.len() <= i {
                self.texts.resize(i + 1, String::new());
                self.deltas.resize(i + 1, Vec::new());
                self.finish.resize(i + 1, None);
            }
            if let Some(content) = choice.delta.content.as_deref().filter(|c| !c.is_empty()) {
                self.texts[i].push_str(content);
                self.deltas[i].push(content.to_string());
            }
            if choice.finish_reason.is_some() {
                self.finish[i].clone_from(&choice.finish_reason);
            }
        }
    }

    pub fn finish(self) -> Option<CachedReply> {
        let head = self.head?;
        let usage = self.usage?;
        if self.texts.is_empty() || !self.finish.iter().all(|f| is_complete(f.as_deref())) {
            return None;
        }
        let choices = self.texts.into_iter().zip(self.finish).enumerate();
        let choices = choices
            .map(|(index, (content, finish_reason))| ChatChoice {
                index,
                message: AssistantMessage { role: Role::Assistant, content },
                logprobs: None,
                finish_reason,
            })
            .collect();
        let response = ChatCompletionResponse {
            id: head.id,
            object: CHAT_OBJECT.into(),
            created: head.created,
            model: head.model,
            choices,
            usage,
        };
        Some(CachedReply { response, deltas: self.deltas })
    }
}

/// The configured last-resort answer, as a full reply or a stream.
pub fn static_reply(model: &str, text: &str, stream: bool) -> ChatReply {
    let response = ChatCompletionResponse {
        id: format!("chatcmpl-static-{}", crate::cache::now_millis()),
        object: CHAT_OBJECT.into(),
        created: crate::cache::now_millis() / 1000,
        model: model.into(),
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage { role: Role::Assistant, content: text.into() },
            logprobs: None,
            finish_reason: Some("stop".into()),
        }],
        usage: Usage::new(0, 0, 0),
    };
    let cached = CachedReply { deltas: vec![split_pieces(text)], response };
    if stream {
        ChatReply::Stream(cached.replay())
    } else {
        ChatReply::Full(Box::new(cached.response))
    }
}
