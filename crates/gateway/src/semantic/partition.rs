//! What a request is looked up by: the text that is embedded (the last user message) and
//! the partition it must match exactly (everything else, hashed).

use sconce_protocol::chat::Role;
use sha2::{Digest, Sha256};

use crate::api::Api;
use crate::cache::key::cache_key;
use crate::endpoint::ApiRequest;

/// One request's lookup: nearest neighbours of `text` within `partition` only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupKey {
    /// Hex SHA-256 of the exact cache's key with the last user message left out, and of
    /// the caller's team when partitioning by team.
    pub partition: String,
    /// The last user message: what is embedded.
    pub text: String,
}

/// The lookup of a chat request; none for other endpoints or without a user message.
/// The partition covers the model, every sampling field, `response_format`, `tools`, `n`,
/// the prompt version, the system prompt and every earlier turn.
pub fn lookup_key<A: Api>(
    request: &A::Request,
    model: &str,
    prompt_version: Option<&str>,
    team: Option<&str>,
) -> Option<LookupKey> {
    let mut rest = request.clone();
    let chat = rest.as_chat_mut()?;
    let last_user = chat.messages.iter_mut().rev().find(|message| message.role == Role::User)?;
    let text = last_user.text().ok().filter(|text| !text.trim().is_empty())?;
    last_user.content = None;
    let exact = cache_key::<A>(&rest, model, prompt_version);
    let mut hasher = Sha256::new();
    hasher.update(exact.as_bytes());
    if let Some(team) = team {
        hasher.update(b"\0team:");
        hasher.update(team.as_bytes());
    }
    Some(LookupKey { partition: hex::encode(hasher.finalize()), text })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::api::{Chat, Completions};
    use sconce_protocol::chat::ChatCompletionRequest;
    use sconce_protocol::completion::CompletionRequest;

    fn chat(json: serde_json::Value) -> ChatCompletionRequest {
        serde_json::from_value(json).unwrap()
    }

    fn key(request: &ChatCompletionRequest, team: Option<&str>) -> LookupKey {
        lookup_key::<Chat>(request, "m", None, team).unwrap()
    }

    #[test]
    fn the_last_user_message_is_embedded_and_the_rest_partitions() {
        let base = serde_json::json!({"messages": [{"role": "system", "content": "be brief"},
            {"role": "user", "content": "What is Rust?"}], "temperature": 0.0});
        let a = key(&chat(base.clone()), Some("t1"));
        assert_eq!(a.text, "What is Rust?");
        let mut reworded = base.clone();
        reworded["messages"][1]["content"] = "Tell me about Rust".into();
        assert_eq!(key(&chat(reworded), Some("t1")).partition, a.partition);
        let mut other_system = base.clone();
        other_system["messages"][0]["content"] = "be long".into();
        assert_ne!(key(&chat(other_system), Some("t1")).partition, a.partition);
        assert_ne!(key(&chat(base.clone()), Some("t2")).partition, a.partition);
        assert_ne!(key(&chat(base.clone()), None).partition, a.partition);
        let versioned = lookup_key::<Chat>(&chat(base.clone()), "m", Some("p@2"), Some("t1")).unwrap();
        assert_ne!(versioned.partition, a.partition);
        let mut tools = base;
        tools["tools"] = serde_json::json!([{"type": "function", "function": {"name": "f"}}]);
        assert_ne!(key(&chat(tools), Some("t1")).partition, a.partition);
    }

    #[test]
    fn completions_and_requests_without_user_text_have_no_lookup() {
        let completion: CompletionRequest = serde_json::from_value(serde_json::json!({"prompt": "hi"})).unwrap();
        assert!(lookup_key::<Completions>(&completion, "m", None, None).is_none());
        let system_only = chat(serde_json::json!({"messages": [{"role": "system", "content": "x"}]}));
        assert!(lookup_key::<Chat>(&system_only, "m", None, None).is_none());
    }
}
