//! Tool calling on the wire: `tools`, `tool_choice`, the calls an assistant makes, and their
//! stream deltas (OpenAI's shapes).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// One function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of the arguments object; absent means any object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

fn function_kind() -> String {
    "function".into()
}

/// `tool_choice`: a mode, or one named function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Named(NamedToolChoice),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedToolChoice {
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionName,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionName {
    pub name: String,
}

/// What the request lets the model do with its tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolMode {
    /// No tools, or `tool_choice: "none"`.
    None,
    /// Text or calls, as the model likes.
    Auto,
    /// At least one call.
    Required,
    /// A call to this function.
    Named(String),
}

/// Checks `tools` and `tool_choice` together and says what the model may do.
pub fn tool_mode(tools: &[Tool], choice: Option<&ToolChoice>) -> Result<ToolMode, ApiError> {
    let mut names = std::collections::HashSet::new();
    for tool in tools {
        if tool.kind != "function" {
            return Err(ApiError::invalid_param(
                "tools",
                format!("tool type `{}` is not supported: only `function`", tool.kind),
            ));
        }
        let name = &tool.function.name;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(ApiError::invalid_param(
                "tools",
                format!("function name `{name}` must be 1-64 letters, digits, `_` or `-`"),
            ));
        }
        if !names.insert(name.as_str()) {
            return Err(ApiError::invalid_param("tools", format!("function `{name}` is declared twice")));
        }
        if let Some(parameters) = &tool.function.parameters {
            if !parameters.is_object() {
                return Err(ApiError::invalid_param(
                    "tools",
                    format!("the parameters of `{name}` must be a JSON schema object"),
                ));
            }
        }
    }
    let mode = match choice {
        None if tools.is_empty() => ToolMode::None,
        None => ToolMode::Auto,
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "none" => ToolMode::None,
            "auto" => ToolMode::Auto,
            "required" => ToolMode::Required,
            other => {
                let message =
                    format!("tool_choice `{other}` is not one of `none`, `auto`, `required` or a named function");
                return Err(ApiError::invalid_param("tool_choice", message));
            }
        },
        Some(ToolChoice::Named(named)) => {
            if !names.contains(named.function.name.as_str()) {
                let message = format!("tool_choice names `{}`, which is not in `tools`", named.function.name);
                return Err(ApiError::invalid_param("tool_choice", message));
            }
            ToolMode::Named(named.function.name.clone())
        }
    };
    if tools.is_empty() && matches!(mode, ToolMode::Required | ToolMode::Auto) {
        return Err(ApiError::invalid_param("tool_choice", "tool_choice needs `tools`"));
    }
    Ok(mode)
}

/// A call the assistant made (in a reply, or in the history sent back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as a JSON text (OpenAI sends a string, not an object).
    pub arguments: String,
}

/// A piece of a tool call in a stream chunk: the first carries id, type and name; later ones
/// carry argument fragments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Folds stream deltas into whole calls, by their index.
pub fn fold_tool_calls(calls: &mut Vec<ToolCall>, deltas: Vec<ToolCallDelta>) {
    for delta in deltas {
        while calls.len() <= delta.index {
            let function = FunctionCall { name: String::new(), arguments: String::new() };
            calls.push(ToolCall { id: String::new(), kind: function_kind(), function });
        }
        let call = &mut calls[delta.index];
        if let Some(id) = delta.id {
            call.id = id;
        }
        if let Some(kind) = delta.kind {
            call.kind = kind;
        }
        if let Some(function) = delta.function {
            if let Some(name) = function.name {
                call.function.name.push_str(&name);
            }
            if let Some(arguments) = function.arguments {
                call.function.arguments.push_str(&arguments);
            }
        }
    }
}

/// The stream deltas of whole calls: one with id, type, name and all arguments per call.
pub fn tool_call_deltas(calls: &[ToolCall]) -> Vec<ToolCallDelta> {
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| ToolCallDelta {
            index,
            id: Some(call.id.clone()),
            kind: Some(call.kind.clone()),
            function: Some(FunctionCallDelta {
                name: Some(call.function.name.clone()),
                arguments: Some(call.function.arguments.clone()),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools(names: &[&str]) -> Vec<Tool> {
        names
            .iter()
            .map(|name| serde_json::from_value(json!({"type": "function", "function": {"name": name}})).unwrap())
            .collect()
    }

    #[test]
    fn modes_follow_tool_choice() {
        let two = tools(&["a", "b"]);
        assert_eq!(tool_mode(&two, None).unwrap(), ToolMode::Auto);
        assert_eq!(tool_mode(&[], None).unwrap(), ToolMode::None);
        let named: ToolChoice = serde_json::from_value(json!({"type": "function", "function": {"name": "b"}})).unwrap();
        assert_eq!(tool_mode(&two, Some(&named)).unwrap(), ToolMode::Named("b".into()));
        let required = ToolChoice::Mode("required".into());
        assert_eq!(tool_mode(&two, Some(&required)).unwrap(), ToolMode::Required);
    }

    #[test]
    fn bad_tools_name_the_problem() {
        let unknown: ToolChoice =
            serde_json::from_value(json!({"type": "function", "function": {"name": "zz"}})).unwrap();
        let err = tool_mode(&tools(&["a"]), Some(&unknown)).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("tool_choice"));
        assert!(err.message.contains("zz"));
        assert_eq!(tool_mode(&tools(&["a", "a"]), None).unwrap_err().param.as_deref(), Some("tools"));
        assert_eq!(tool_mode(&tools(&["a b"]), None).unwrap_err().param.as_deref(), Some("tools"));
        assert!(tool_mode(&[], Some(&ToolChoice::Mode("required".into()))).is_err());
        assert!(tool_mode(&tools(&["a"]), Some(&ToolChoice::Mode("sometimes".into()))).is_err());
    }

    #[test]
    fn deltas_fold_back_into_calls() {
        let call = ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: FunctionCall { name: "f".into(), arguments: "{\"x\": 1}".into() },
        };
        let mut deltas = tool_call_deltas(std::slice::from_ref(&call));
        let fragment = ToolCallDelta {
            index: 0,
            id: None,
            kind: None,
            function: Some(FunctionCallDelta { name: None, arguments: Some(" ".into()) }),
        };
        deltas.push(fragment);
        let mut folded = Vec::new();
        fold_tool_calls(&mut folded, deltas);
        assert_eq!(folded[0].function.arguments, "{\"x\": 1} ");
        assert_eq!(folded[0].id, "call_1");
    }
}
