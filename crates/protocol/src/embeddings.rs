//! `/v1/embeddings` request and response types (OpenAI's, plus vLLM's
//! `truncate_prompt_tokens`), their validation and the base64 vector encoding.

use serde::{Deserialize, Serialize};

use crate::common::{SamplingOptions, Usage};
use crate::error::ApiError;
use crate::limits::RequestLimits;

/// `input`: text, texts, token ids, or lists of token ids; each list entry is one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Tokens(Vec<u32>),
    Texts(Vec<String>),
    TokenLists(Vec<Vec<u32>>),
}

/// One input of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum InputItem<'a> {
    Text(&'a str),
    Tokens(&'a [u32]),
}

impl EmbeddingInput {
    pub fn len(&self) -> usize {
        match self {
            Self::Text(_) | Self::Tokens(_) => 1,
            Self::Texts(texts) => texts.len(),
            Self::TokenLists(lists) => lists.len(),
        }
    }

    /// True for `[]`: no input at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inputs in order.
    pub fn items(&self) -> Vec<InputItem<'_>> {
        match self {
            Self::Text(text) => vec![InputItem::Text(text)],
            Self::Tokens(tokens) => vec![InputItem::Tokens(tokens)],
            Self::Texts(texts) => texts.iter().map(|text| InputItem::Text(text)).collect(),
            Self::TokenLists(lists) => lists.iter().map(|tokens| InputItem::Tokens(tokens)).collect(),
        }
    }
}

/// `encoding_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    #[default]
    Float,
    /// Little-endian f32 bytes, base64-encoded.
    Base64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub input: EmbeddingInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
    /// Shorter vectors; only for models trained for it (none served here yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// vLLM: keep only the last this-many tokens of each input instead of refusing long ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_prompt_tokens: Option<usize>,
    /// Not on the wire: embeddings sample nothing; the stages read and clamp it alike.
    #[serde(skip)]
    pub sampling: SamplingOptions,
}

impl EmbeddingRequest {
    /// What can be checked without the model: counts, empty inputs, `user`, `dimensions`.
    pub fn validate(&self, limits: &RequestLimits) -> Result<(), ApiError> {
        limits.check_model(self.model.as_deref())?;
        let user = self.user.as_deref().map_or(0, str::len);
        RequestLimits::check_at_most("user", "the length of `user` in bytes", user, limits.max_user_bytes)?;
        if self.input.is_empty() {
            return Err(ApiError::invalid_param("input", "input must not be empty"));
        }
        let count = self.input.len();
        RequestLimits::check_at_most("input", "the number of inputs", count, limits.max_embedding_inputs)?;
        let empty = self.input.items().iter().position(|item| match item {
            InputItem::Text(text) => text.is_empty(),
            InputItem::Tokens(tokens) => tokens.is_empty(),
        });
        if let Some(index) = empty {
            return Err(ApiError::invalid_param("input", format!("input[{index}] is empty")));
        }
        if self.dimensions == Some(0) {
            return Err(ApiError::invalid_param("dimensions", "dimensions must be at least 1"));
        }
        if self.truncate_prompt_tokens == Some(0) {
            return Err(ApiError::invalid_param("truncate_prompt_tokens", "truncate_prompt_tokens must be at least 1"));
        }
        Ok(())
    }

    pub fn format(&self) -> EncodingFormat {
        self.encoding_format.unwrap_or_default()
    }
}

/// One vector: floats, or base64 of its little-endian f32 bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

impl EmbeddingVector {
    pub fn encode(vector: Vec<f32>, format: EncodingFormat) -> Self {
        match format {
            EncodingFormat::Float => Self::Float(vector),
            EncodingFormat::Base64 => Self::Base64(base64_f32(&vector)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Always `embedding`.
    pub object: String,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

pub const EMBEDDING_OBJECT: &str = "embedding";
pub const LIST_OBJECT: &str = "list";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// Not on the wire (OpenAI's reply has no id); the stages and the ledger use it.
    #[serde(skip)]
    pub id: String,
    /// Always `list`.
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    /// `completion_tokens` is 0, as vLLM reports it.
    pub usage: Usage,
}

/// Standard base64 (with padding) of the vector's little-endian f32 bytes.
pub fn base64_f32(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|value| value.to_le_bytes()).collect();
    base64(&bytes)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk.iter().enumerate().fold(0u32, |word, (i, byte)| word | (*byte as u32) << (16 - 8 * i));
        for i in 0..4 {
            let sextet = (word >> (18 - 6 * i)) & 63;
            out.push(if i <= chunk.len() { ALPHABET[sextet as usize] as char } else { '=' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: serde_json::Value) -> EmbeddingRequest {
        serde_json::from_value(value).unwrap()
    }

    fn refused(value: serde_json::Value) -> Option<String> {
        request(value).validate(&RequestLimits::default()).err().and_then(|err| err.param)
    }

    #[test]
    fn every_input_shape_parses_in_order() {
        let items = |input| request(json!({"input": input})).input.items().len();
        assert_eq!(items(json!("hi")), 1);
        assert_eq!(items(json!(["a", "b", "c"])), 3);
        assert_eq!(items(json!([1, 2, 3])), 1);
        assert_eq!(items(json!([[1], [2, 3]])), 2);
        let texts = request(json!({"input": ["a", "b"]}));
        assert_eq!(texts.input.items(), vec![InputItem::Text("a"), InputItem::Text("b")]);
        assert_eq!(request(json!({"input": "x", "encoding_format": "base64"})).format(), EncodingFormat::Base64);
        assert!(serde_json::from_value::<EmbeddingRequest>(json!({"input": "x", "encoding_format": "hex"})).is_err());
        assert!(serde_json::from_value::<EmbeddingRequest>(json!({"input": [-1]})).is_err());
    }

    #[test]
    fn bad_inputs_name_their_parameter() {
        assert_eq!(refused(json!({"input": "x"})), None);
        assert_eq!(refused(json!({"input": []})).as_deref(), Some("input"));
        assert_eq!(refused(json!({"input": ""})).as_deref(), Some("input"));
        assert_eq!(refused(json!({"input": ["a", ""]})).as_deref(), Some("input"));
        assert_eq!(refused(json!({"input": [[1], []]})).as_deref(), Some("input"));
        assert_eq!(refused(json!({"input": vec!["a"; 100_000]})).as_deref(), Some("input"));
        assert_eq!(refused(json!({"input": vec!["a"; 2048]})), None);
        assert_eq!(refused(json!({"input": "x", "dimensions": 0})).as_deref(), Some("dimensions"));
        assert_eq!(refused(json!({"input": "x", "user": "u".repeat(257)})).as_deref(), Some("user"));
        assert_eq!(
            refused(json!({"input": "x", "truncate_prompt_tokens": 0})).as_deref(),
            Some("truncate_prompt_tokens")
        );
    }

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // 1.0f32 is 00 00 80 3f.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        let wire = serde_json::to_value(EmbeddingVector::encode(vec![1.0, -2.0], EncodingFormat::Base64)).unwrap();
        assert_eq!(wire, json!("AACAPwAAAMA="));
    }

    #[test]
    fn the_reply_has_no_id_on_the_wire() {
        let reply = EmbeddingResponse {
            id: "embd-1".into(),
            object: LIST_OBJECT.into(),
            data: vec![Embedding {
                object: EMBEDDING_OBJECT.into(),
                index: 0,
                embedding: EmbeddingVector::Float(vec![0.5]),
            }],
            model: "m".into(),
            usage: Usage::new(3, 0, 0),
        };
        let wire = serde_json::to_value(&reply).unwrap();
        assert!(wire.get("id").is_none());
        assert_eq!(wire["data"][0]["embedding"], json!([0.5]));
        assert_eq!(wire["usage"]["prompt_tokens"], 3);
        assert_eq!(wire["usage"]["total_tokens"], 3);
    }
}
