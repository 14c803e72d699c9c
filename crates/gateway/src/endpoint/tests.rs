#![allow(clippy::unwrap_used)]

use sconce_protocol::chat::{ChatCompletionRequest, ChatCompletionResponse};
use sconce_protocol::completion::{CompletionRequest, CompletionResponse, DEFAULT_COMPLETION_TOKENS};
use serde_json::json;

use super::*;
use crate::api::{Api, Chat, Completions};

fn chat_response() -> ChatCompletionResponse {
    serde_json::from_value(json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Paris is nice."}, "logprobs": null, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "Lyon"}, "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8, "prompt_tokens_details": {"cached_tokens": 0}}}))
    .unwrap()
}

fn completion_response() -> CompletionResponse {
    serde_json::from_value(json!({"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m",
        "choices": [{"index": 0, "text": "one two  three", "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5, "prompt_tokens_details": {"cached_tokens": 0}}}))
    .unwrap()
}

#[test]
fn a_replayed_chat_response_folds_back_into_itself() {
    let response = chat_response();
    let chunks = Chat::replay(&response);
    assert!(chunks.last().unwrap().is_usage_only());
    assert!(chunks.len() > 6, "text is cut into pieces");
    assert_eq!(Chat::fold(chunks).unwrap(), response);
}

#[test]
fn a_replayed_completion_folds_back_into_itself() {
    let response = completion_response();
    let chunks = Completions::replay(&response);
    assert_eq!(chunks.iter().filter(|c| !c.choices.is_empty()).count(), 3);
    assert_eq!(Completions::fold(chunks).unwrap(), response);
}

#[test]
fn a_stream_without_its_usage_chunk_folds_to_nothing() {
    let mut chunks = Chat::replay(&chat_response());
    chunks.pop();
    assert!(Chat::fold(chunks).is_none());
}

#[test]
fn prompt_texts_are_rewritten_in_place() {
    let mut chat: ChatCompletionRequest = serde_json::from_value(json!({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": "keep"}]}))
    .unwrap();
    chat.visit_prompt_texts(&mut |text| *text = text.replace('a', "X")).unwrap();
    assert_eq!(chat.messages[0].text().unwrap(), "X\nb");
    assert_eq!(chat.messages[1].text().unwrap(), "keep");
    let mut completion: CompletionRequest = serde_json::from_value(json!({"prompt": ["abc", "a"]})).unwrap();
    completion.visit_prompt_texts(&mut |text| text.push('!')).unwrap();
    assert_eq!(completion.prompt_text(), "abc!\na!");
}

#[test]
fn completion_batches_estimate_every_prompt_and_default_to_sixteen_tokens() {
    let request: CompletionRequest =
        serde_json::from_value(json!({"prompt": ["abcdefgh", "abcd"], "model": "m"})).unwrap();
    assert_eq!(request.estimated_prompt_tokens(), 3);
    assert_eq!(ApiRequest::max_tokens(&request), Some(DEFAULT_COMPLETION_TOKENS));
    let tokens: CompletionRequest = serde_json::from_value(json!({"prompt": [[1, 2, 3], [4]]})).unwrap();
    assert_eq!(tokens.estimated_prompt_tokens(), 4);
}

#[test]
fn a_registry_prompt_may_stand_in_for_messages() {
    let with_prompt: ChatCompletionRequest = serde_json::from_value(json!({"prompt": {"name": "p"}})).unwrap();
    assert!(ApiRequest::validate(&with_prompt, &RequestLimits::default()).is_ok());
    let without: ChatCompletionRequest = serde_json::from_value(json!({"messages": []})).unwrap();
    assert!(ApiRequest::validate(&without, &RequestLimits::default()).is_err());
}

#[test]
fn role_deltas_keep_an_empty_content() {
    let mut content = Some("x".to_string());
    TextRef::Delta { content: &mut content, opens: true }.set(String::new());
    assert_eq!(content.as_deref(), Some(""));
    TextRef::Delta { content: &mut content, opens: false }.set(String::new());
    assert_eq!(content, None);
}

#[test]
fn usage_only_chunks_are_told_apart() {
    let chunk: CompletionResponse = serde_json::from_value(json!({"id": "c", "object": "text_completion",
        "created": 0, "model": "m", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2,
        "total_tokens": 3, "prompt_tokens_details": {"cached_tokens": 0}}}))
    .unwrap();
    assert!(chunk.is_usage_only() && !chunk.shows_text());
    assert_eq!(chunk.usage().map(|usage| usage.completion_tokens), Some(2));
}
