//! Each choice's tool-call parser over the streamed text: content and call deltas as
//! OpenAI streams them, and `finish_reason: "tool_calls"` when the turn made calls.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use sconce_protocol::tools::{FunctionCallDelta, ToolCallDelta};
use sconce_text::tool_calls::{ToolCallFormat, ToolCallStream, ToolEvent};

use crate::backend::{Delta, FinishReason};

/// Parsers by choice index; none when the request has no tools.
pub struct ToolCalls {
    format: Option<ToolCallFormat>,
    reply_id: String,
    streams: HashMap<usize, ToolCallStream>,
}

impl ToolCalls {
    pub fn new(format: Option<ToolCallFormat>, reply_id: &str) -> Self {
        Self { format, reply_id: reply_id.to_string(), streams: HashMap::new() }
    }

    /// The delta's content, its call deltas and its finish reason.
    pub fn read(&mut self, delta: &Delta) -> (String, Option<Vec<ToolCallDelta>>, Option<String>) {
        let finish = delta.finish_reason;
        let Some(format) = self.format else {
            return (delta.text.clone(), None, finish.map(|reason| reason.as_str().to_string()));
        };
        let stream = self.streams.entry(delta.index).or_insert_with(|| ToolCallStream::new(format));
        let mut events = stream.push(&delta.text);
        if finish.is_some() {
            events.extend(stream.finish());
        }
        let made_calls = stream.calls() > 0;
        let (content, calls) = self.shape(delta.index, events);
        let finish = finish.map(|reason| match reason {
            FinishReason::Stop if made_calls => "tool_calls".to_string(),
            other => other.as_str().to_string(),
        });
        (content, (!calls.is_empty()).then_some(calls), finish)
    }

    fn shape(&self, choice: usize, events: Vec<ToolEvent>) -> (String, Vec<ToolCallDelta>) {
        let mut content = String::new();
        let mut calls = Vec::new();
        for event in events {
            match event {
                ToolEvent::Content(text) => content.push_str(&text),
                ToolEvent::Start { index, name } => calls.push(ToolCallDelta {
                    index,
                    id: Some(self.call_id(choice, index)),
                    kind: Some("function".into()),
                    function: Some(FunctionCallDelta { name: Some(name), arguments: Some(String::new()) }),
                }),
                ToolEvent::Arguments { index, fragment } => calls.push(ToolCallDelta {
                    index,
                    id: None,
                    kind: None,
                    function: Some(FunctionCallDelta { name: None, arguments: Some(fragment) }),
                }),
            }
        }
        (content, calls)
    }

    /// `call_` and 24 hex digits, unique within the reply and across replies.
    fn call_id(&self, choice: usize, index: usize) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&self.reply_id, choice, index).hash(&mut hasher);
        let high = hasher.finish();
        (high, "salt").hash(&mut hasher);
        format!("call_{:016x}{:08x}", high, hasher.finish() as u32)
    }
}
