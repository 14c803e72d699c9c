//! Structured output requests: OpenAI's `response_format`, vLLM's `structured_outputs`
//! and its older `guided_*` fields, read into one constraint.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// vLLM's `structured_outputs` object; exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructuredOutputs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<Vec<String>>,
    /// A Lark grammar, as llguidance reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_object: Option<bool>,
}

/// What the output must be.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputConstraint {
    JsonObject,
    JsonSchema(Value),
    Regex(String),
    Choice(Vec<String>),
    Grammar(String),
}

/// Reads the constraint from whichever field sets it; more than one is an error.
pub fn output_constraint(
    response_format: Option<&Value>,
    structured: Option<&StructuredOutputs>,
    guided: &GuidedFields,
) -> Result<Option<OutputConstraint>, ApiError> {
    let mut found: Vec<(&str, OutputConstraint)> = Vec::new();
    if let Some(constraint) = from_response_format(response_format)? {
        found.push(("response_format", constraint));
    }
    if let Some(structured) = structured {
        found.extend(from_structured(structured)?.into_iter().map(|c| ("structured_outputs", c)));
    }
    found.extend(guided.constraints().into_iter().map(|c| ("guided_*", c)));
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop().map(|(_, constraint)| constraint)),
        _ => {
            let fields: Vec<&str> = found.iter().map(|(field, _)| *field).collect();
            let message = format!("set one output constraint, not several ({})", fields.join(", "));
            Err(ApiError::invalid_param(found[1].0, message))
        }
    }
}

fn from_response_format(format: Option<&Value>) -> Result<Option<OutputConstraint>, ApiError> {
    let Some(format) = format else { return Ok(None) };
    let invalid = |message: &str| ApiError::invalid_param("response_format", message);
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(OutputConstraint::JsonObject)),
        Some("json_schema") => {
            let spec = format
                .get("json_schema")
                .ok_or_else(|| invalid("response_format `json_schema` needs a `json_schema` object"))?;
            let schema = spec.get("schema").cloned().unwrap_or_else(|| serde_json::json!({}));
            if !schema.is_object() && !schema.is_boolean() {
                return Err(invalid("`json_schema.schema` must be a JSON schema object"));
            }
            Ok(Some(OutputConstraint::JsonSchema(schema)))
        }
        Some(kind) => {
            Err(invalid(&format!("response_format `{kind}` is not one of `text`, `json_object`, `json_schema`")))
        }
        None => Err(invalid("response_format needs a `type`")),
    }
}

fn from_structured(structured: &StructuredOutputs) -> Result<Vec<OutputConstraint>, ApiError> {
    let mut found = Vec::new();
    if let Some(schema) = &structured.json {
        // vLLM accepts the schema as an object or as its JSON text.
        let schema = match schema {
            Value::String(text) => serde_json::from_str(text).map_err(|e| {
                ApiError::invalid_param("structured_outputs", format!("`json` is not a JSON schema: {e}"))
            })?,
            other => other.clone(),
        };
        found.push(OutputConstraint::JsonSchema(schema));
    }
    if let Some(regex) = &structured.regex {
        found.push(OutputConstraint::Regex(regex.clone()));
    }
    if let Some(choice) = &structured.choice {
        if choice.is_empty() {
            return Err(ApiError::invalid_param("structured_outputs", "`choice` needs at least one string"));
        }
        found.push(OutputConstraint::Choice(choice.clone()));
    }
    if let Some(grammar) = &structured.grammar {
        found.push(OutputConstraint::Grammar(grammar.clone()));
    }
    if structured.json_object == Some(true) {
        found.push(OutputConstraint::JsonObject);
    }
    if found.len() > 1 {
        return Err(ApiError::invalid_param(
            "structured_outputs",
            "set one of `json`, `regex`, `choice`, `grammar`, `json_object`",
        ));
    }
    Ok(found)
}

/// vLLM's older top-level fields, still sent by many clients.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuidedFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_json: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_choice: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_grammar: Option<String>,
}

impl GuidedFields {
    fn constraints(&self) -> Vec<OutputConstraint> {
        // One field at a time, so several at once reach the caller's count (and its error).
        let mut found = Vec::new();
        for one in [
            StructuredOutputs { json: self.guided_json.clone(), ..Default::default() },
            StructuredOutputs { regex: self.guided_regex.clone(), ..Default::default() },
            StructuredOutputs { choice: self.guided_choice.clone(), ..Default::default() },
            StructuredOutputs { grammar: self.guided_grammar.clone(), ..Default::default() },
        ] {
            found.extend(from_structured(&one).unwrap_or_default());
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(format: Value, structured: Value) -> Result<Option<OutputConstraint>, ApiError> {
        let structured: Option<StructuredOutputs> = serde_json::from_value(structured).unwrap();
        output_constraint(Some(&format), structured.as_ref(), &GuidedFields::default())
    }

    #[test]
    fn each_field_reads_into_one_constraint() {
        assert_eq!(read(json!({"type": "text"}), json!(null)).unwrap(), None);
        assert_eq!(read(json!({"type": "json_object"}), json!(null)).unwrap(), Some(OutputConstraint::JsonObject));
        let schema = json!({"type": "object"});
        let format = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}});
        assert_eq!(read(format, json!(null)).unwrap(), Some(OutputConstraint::JsonSchema(schema)));
        let choice = read(json!({"type": "text"}), json!({"choice": ["a", "b"]})).unwrap();
        assert_eq!(choice, Some(OutputConstraint::Choice(vec!["a".into(), "b".into()])));
        let text_schema = read(json!({"type": "text"}), json!({"json": "{\"type\": \"integer\"}"})).unwrap();
        assert_eq!(text_schema, Some(OutputConstraint::JsonSchema(json!({"type": "integer"}))));
    }

    #[test]
    fn conflicts_and_unknown_kinds_are_refused() {
        assert!(read(json!({"type": "json_object"}), json!({"regex": "a+"})).is_err());
        assert!(read(json!({"type": "text"}), json!({"regex": "a", "choice": ["b"]})).is_err());
        assert!(read(json!({"type": "xml"}), json!(null)).is_err());
        assert!(read(json!({"type": "json_schema"}), json!(null)).is_err());
        assert!(read(json!({"type": "text"}), json!({"choice": []})).is_err());
        let guided = GuidedFields { guided_regex: Some("a".into()), ..Default::default() };
        assert_eq!(output_constraint(None, None, &guided).unwrap(), Some(OutputConstraint::Regex("a".into())));
    }
}
