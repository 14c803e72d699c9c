//! Sconce's tool prompt, for chat templates that do not render `tools` themselves: the
//! functions go into the system message and the model answers in Hermes' format.

use serde_json::Value;

/// The system text that offers `tools` (OpenAI's tool objects), to follow any system prompt.
pub fn fallback_system_prompt(tools: &[Value]) -> String {
    let mut text = String::from(
        "You can call functions to help answer. The functions are listed inside <tools></tools>:\n<tools>\n",
    );
    for tool in tools {
        text.push_str(&tool.get("function").unwrap_or(tool).to_string());
        text.push('\n');
    }
    text.push_str(
        "</tools>\nTo call a function, reply with a JSON object holding its name and arguments inside \
         <tool_call></tool_call> tags, one call per block:\n<tool_call>\n{\"name\": \"<function name>\", \
         \"arguments\": {<arguments>}}\n</tool_call>",
    );
    text
}

/// An earlier call in the history, as the model would have written it.
pub fn hermes_call_text(name: &str, arguments: &str) -> String {
    let arguments: Value = serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_string()));
    let call = serde_json::json!({"name": name, "arguments": arguments});
    format!("<tool_call>\n{call}\n</tool_call>")
}

/// A tool's result, as the model is told it.
pub fn tool_response_text(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}
