//! The cache key: SHA-256 of the canonical request.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::Api;

/// Fields that change how the answer is delivered, not what it says.
const DELIVERY_FIELDS: &[&str] = &["stream", "stream_options", "user", "priority"];

/// Hex SHA-256 over the endpoint, the model, the prompt and every sampling field, with
/// object keys sorted and nulls dropped, plus the prompt version when one is used.
pub fn cache_key<A: Api>(request: &A::Request, model: &str, prompt_version: Option<&str>) -> String {
    let mut value = serde_json::to_value(request).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        for field in DELIVERY_FIELDS {
            map.remove(*field);
        }
        map.insert("endpoint".into(), Value::String(A::PATH.into()));
        map.insert("model".into(), Value::String(model.into()));
        if let Some(version) = prompt_version {
            map.insert("prompt_version".into(), Value::String(version.into()));
        }
    }
    let mut hasher = Sha256::new();
    write_canonical(&value, &mut hasher);
    hex::encode(hasher.finalize())
}

fn write_canonical(value: &Value, out: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k).collect();
            keys.sort();
            out.update(b"{");
            for key in keys {
                out.update(serde_json::to_string(key).unwrap_or_default().as_bytes());
                out.update(b":");
                write_canonical(&map[key], out);
                out.update(b",");
            }
            out.update(b"}");
        }
        Value::Array(items) => {
            out.update(b"[");
            for item in items {
                write_canonical(item, out);
                out.update(b",");
            }
            out.update(b"]");
        }
        other => out.update(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::api::Chat;
    use crate::endpoint::ApiRequest;
    use sconce_protocol::chat::ChatCompletionRequest;

    fn request(json: serde_json::Value) -> ChatCompletionRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn key_ignores_delivery_and_order_but_not_params() {
        let a = request(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0, "max_tokens": 5}),
        );
        let b = request(
            serde_json::json!({"max_tokens": 5, "stream": true, "temperature": 0.0, "messages": [{"content": "hi", "role": "user"}], "model": "m"}),
        );
        let c = request(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0, "max_tokens": 6}),
        );
        let key = |r: &ChatCompletionRequest, model: &str, prompt: Option<&str>| cache_key::<Chat>(r, model, prompt);
        assert_eq!(key(&a, "m", None), key(&b, "m", None));
        assert_ne!(key(&a, "m", None), key(&c, "m", None));
        assert_ne!(key(&a, "m", None), key(&a, "other", None));
        assert_ne!(key(&a, "m", None), key(&a, "m", Some("v2")));
        assert_eq!(key(&a, "m", None).len(), 64);
        assert!(a.is_deterministic());
        assert!(!request(serde_json::json!({"messages": []})).is_deterministic());
    }

    #[test]
    fn constraints_and_tools_are_part_of_the_key() {
        let base =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0});
        let with = |field: &str, value: serde_json::Value| {
            let mut body = base.clone();
            body[field] = value;
            cache_key::<Chat>(&request(body), "m", None)
        };
        let plain = cache_key::<Chat>(&request(base.clone()), "m", None);
        let tool = |name: &str| serde_json::json!([{"type": "function", "function": {"name": name}}]);
        let keys = [
            plain,
            with("tools", tool("a")),
            with("tools", tool("b")),
            with("tool_choice", serde_json::json!("none")),
            with("response_format", serde_json::json!({"type": "json_object"})),
            with("structured_outputs", serde_json::json!({"regex": "a+"})),
            with("structured_outputs", serde_json::json!({"regex": "b+"})),
            with("guided_choice", serde_json::json!(["x"])),
        ];
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "each constraint and tool list is its own entry");
    }
}
