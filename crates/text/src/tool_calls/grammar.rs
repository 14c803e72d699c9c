//! Lark grammars (llguidance's dialect) that make a model write valid calls in its format:
//! every call names a declared function and its arguments follow that function's schema.

use serde_json::{json, Value};

use super::ToolCallFormat;

/// What the grammar allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallGrammar {
    /// Text, or calls once the model opens one (a lazy grammar: free until the marker).
    Auto,
    /// One call or more.
    Required,
    /// A call to this function.
    Named(String),
}

/// How Sconce lays JSON out unless a schema says otherwise: one space after `:` and `,`, no
/// other whitespace (a small model given free whitespace may never stop writing it).
pub fn json_layout() -> Value {
    json!({"whitespace_flexible": false, "key_separator": ": ", "item_separator": ", "})
}

/// The grammar for `tools` (name, parameters schema) in `format`. `marker_id` is the token id
/// of `[TOOL_CALLS]` for Mistral's format, when the vocabulary has one.
pub fn call_grammar(
    format: ToolCallFormat,
    which: &CallGrammar,
    tools: &[(String, Option<Value>)],
    parallel: bool,
    marker_id: Option<u32>,
) -> String {
    let chosen: Vec<&(String, Option<Value>)> = match which {
        CallGrammar::Named(name) => tools.iter().filter(|(tool, _)| tool == name).collect(),
        _ => tools.iter().collect(),
    };
    let schema = call_schema(format, &chosen);
    let many = parallel && !matches!(which, CallGrammar::Named(_));
    let (calls, text) = match format {
        ToolCallFormat::Hermes => {
            let call = "\"<tool_call>\\n\" call_json \"\\n</tool_call>\"";
            let tail = "\"\\n</tool_call>\"";
            let more = if many { format!(" (\"\\n\" {call})*") } else { String::new() };
            let calls = format!("{call}{more}");
            let after_text = format!("lazy_text \"\\n\" call_json {tail}{more}");
            let text = format!(
                "start: TEXT | {after_text}\nTEXT: /(.|\\n)*/ & ~/(.|\\n)*<tool_call>(.|\\n)*/\nlazy_text[lazy]: /(.|\\n)*<tool_call>/\n"
            );
            (calls, text)
        }
        ToolCallFormat::Llama3Json => {
            let calls = if many { "call_json (\"; \" call_json)*".to_string() } else { "call_json".to_string() };
            let text = format!("start: TEXT | {calls}\nTEXT: /[^{{ \\n](.|\\n)*/\n");
            (calls, text)
        }
        ToolCallFormat::Mistral => {
            let marker = marker_id.map_or("\"[TOOL_CALLS]\"".to_string(), |id| format!("<[{id}]>"));
            let items = if many { "call_json (\", \" call_json)*" } else { "call_json" };
            let calls = format!("{marker} \"[\" {items} \"]\"");
            let text = format!("start: TEXT | {calls}\nTEXT: /(.|\\n)*/ & ~/(.|\\n)*\\[TOOL_CALLS\\](.|\\n)*/\n");
            (calls, text)
        }
    };
    let head = match which {
        CallGrammar::Auto => text,
        CallGrammar::Required | CallGrammar::Named(_) => format!("start: {calls}\n"),
    };
    format!("%llguidance {{}}\n{head}call_json: %json {schema}\n")
}

/// One call object: `name` is one of the functions, the arguments follow its schema.
fn call_schema(format: ToolCallFormat, tools: &[&(String, Option<Value>)]) -> Value {
    let key = format.arguments_key();
    let one = |(name, parameters): &(String, Option<Value>)| {
        let parameters = parameters.clone().unwrap_or_else(|| json!({"type": "object"}));
        json!({
            "type": "object",
            "properties": {"name": {"const": name}, key: parameters},
            "required": ["name", key],
            "additionalProperties": false
        })
    };
    let mut schema = match tools {
        [only] => one(only),
        many => json!({"anyOf": many.iter().map(|tool| one(tool)).collect::<Vec<_>>()}),
    };
    if let Value::Object(map) = &mut schema {
        map.insert("x-guidance".into(), json_layout());
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_calls_list_only_that_function() {
        let tools = vec![
            ("a".to_string(), None),
            ("b".to_string(), Some(json!({"type": "object", "properties": {"x": {"type": "integer"}}}))),
        ];
        let grammar = call_grammar(ToolCallFormat::Hermes, &CallGrammar::Named("b".into()), &tools, true, None);
        assert!(grammar.contains("\"const\":\"b\""), "{grammar}");
        assert!(!grammar.contains("\"const\":\"a\""));
        assert!(!grammar.contains(")*"), "a named call is one call");
        let auto = call_grammar(ToolCallFormat::Hermes, &CallGrammar::Auto, &tools, true, None);
        assert!(auto.contains("lazy_text[lazy]") && auto.contains("anyOf"));
    }
}
