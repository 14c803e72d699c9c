//! What a request constrains its output to, and how that becomes an llguidance grammar.

use std::hash::{Hash, Hasher};

use llguidance::api::TopLevelGrammar;
use serde_json::{json, Value};

use crate::api::EngineError;

/// A constraint as the request states it.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// Any JSON object (`response_format: json_object`).
    JsonObject,
    /// A JSON schema (`json_schema`, `structured_outputs.json`).
    JsonSchema(Value),
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A Lark grammar as llguidance reads it (`structured_outputs.grammar`, tool calls).
    Lark(String),
}

use sconce_text::json_layout;

/// `schema` with Sconce's JSON layout, unless it sets its own `x-guidance`.
pub fn with_json_layout(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Value::Object(map) = &mut schema {
        map.entry("x-guidance").or_insert_with(json_layout);
    }
    schema
}

impl GrammarSpec {
    /// The request field errors point at.
    pub fn param(&self) -> &'static str {
        match self {
            GrammarSpec::JsonObject | GrammarSpec::JsonSchema(_) => "response_format",
            GrammarSpec::Regex(_) | GrammarSpec::Choice(_) | GrammarSpec::Lark(_) => "structured_outputs",
        }
    }

    /// The size of what the client sent, bounded by the server's limit.
    pub fn source_bytes(&self) -> usize {
        match self {
            GrammarSpec::JsonObject => 0,
            GrammarSpec::JsonSchema(schema) => schema.to_string().len(),
            GrammarSpec::Regex(source) | GrammarSpec::Lark(source) => source.len(),
            GrammarSpec::Choice(choices) => choices.iter().map(String::len).sum(),
        }
    }

    /// A hash of the constraint's kind and canonical text (serde_json keeps key order as sent,
    /// so the same schema sent twice hashes the same).
    pub fn cache_key(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        match self {
            GrammarSpec::JsonObject => "json_object".hash(&mut hasher),
            GrammarSpec::JsonSchema(schema) => ("json_schema", schema.to_string()).hash(&mut hasher),
            GrammarSpec::Regex(source) => ("regex", source).hash(&mut hasher),
            GrammarSpec::Choice(choices) => ("choice", choices).hash(&mut hasher),
            GrammarSpec::Lark(source) => ("lark", source).hash(&mut hasher),
        }
        hasher.finish()
    }

    pub fn to_grammar(&self) -> Result<TopLevelGrammar, EngineError> {
        let invalid = |message: String| EngineError::InvalidParam { param: self.param(), message };
        Ok(match self {
            GrammarSpec::JsonObject => TopLevelGrammar::from_json_schema(with_json_layout(&json!({"type": "object"}))),
            GrammarSpec::JsonSchema(schema) => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(invalid("the JSON schema must be an object".into()));
                }
                TopLevelGrammar::from_json_schema(with_json_layout(schema))
            }
            GrammarSpec::Regex(source) => TopLevelGrammar::from_regex(source),
            GrammarSpec::Choice(choices) => {
                if choices.is_empty() {
                    return Err(invalid("`choice` needs at least one string".into()));
                }
                let literals: Vec<String> =
                    choices.iter().map(|choice| Value::from(choice.as_str()).to_string()).collect();
                TopLevelGrammar::from_lark(format!("start: {}", literals.join(" | ")))
            }
            GrammarSpec::Lark(source) => TopLevelGrammar::from_lark(source.clone()),
        })
    }
}
