//! Tool calling on the text side: which call format a model writes (from its chat template
//! or the `tool_call_parser` setting), the grammar that makes it write valid calls, the
//! prompt for templates without tool support, and the streaming parser of its output.

mod grammar;
mod parser;
mod prompt;
mod scan;

use serde::{Deserialize, Serialize};

pub use grammar::{call_grammar, json_layout as grammar_json_layout, CallGrammar};
pub use parser::{ToolCallStream, ToolEvent};
pub use prompt::{fallback_system_prompt, hermes_call_text, tool_response_text};

/// The `tool_call_parser` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolCallParser {
    /// From the chat template; Hermes with Sconce's tool prompt when the template has none.
    #[default]
    Auto,
    Hermes,
    Llama3Json,
    Mistral,
    /// Refuse `tools`.
    None,
}

impl std::str::FromStr for ToolCallParser {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value.replace('-', "_").as_str() {
            "auto" => Ok(Self::Auto),
            "hermes" | "qwen" => Ok(Self::Hermes),
            "llama3_json" | "llama" => Ok(Self::Llama3Json),
            "mistral" => Ok(Self::Mistral),
            "none" => Ok(Self::None),
            other => Err(format!("unknown tool call parser `{other}`: auto, hermes, llama3_json, mistral or none")),
        }
    }
}

/// How a model writes its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCallFormat {
    /// `<tool_call>{"name": …, "arguments": …}</tool_call>` (Hermes, Qwen).
    Hermes,
    /// `{"name": …, "parameters": …}` as the whole reply, `;`-separated (Llama 3.x).
    Llama3Json,
    /// `[TOOL_CALLS][{"name": …, "arguments": …}]` (Mistral).
    Mistral,
}

impl ToolCallFormat {
    pub fn open_marker(self) -> Option<&'static str> {
        match self {
            ToolCallFormat::Hermes => Some("<tool_call>"),
            ToolCallFormat::Llama3Json => None,
            ToolCallFormat::Mistral => Some("[TOOL_CALLS]"),
        }
    }

    pub fn close_marker(self) -> Option<&'static str> {
        match self {
            ToolCallFormat::Hermes => Some("</tool_call>"),
            ToolCallFormat::Llama3Json | ToolCallFormat::Mistral => None,
        }
    }

    /// The key the arguments go under.
    pub fn arguments_key(self) -> &'static str {
        match self {
            ToolCallFormat::Llama3Json => "parameters",
            ToolCallFormat::Hermes | ToolCallFormat::Mistral => "arguments",
        }
    }
}

/// How tools reach a model and how its calls are read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolSupport {
    pub format: ToolCallFormat,
    /// The chat template renders `tools` and `tool_calls` itself; otherwise Sconce writes the
    /// tool prompt and the calls in the history (Hermes style).
    pub native: bool,
}

/// What `setting` gives for a model with this chat template; `None`: tools are refused.
pub fn tool_support(setting: ToolCallParser, template_source: &str) -> Option<ToolSupport> {
    let native = template_source.contains("tools");
    let detected = if template_source.contains("<tool_call>") {
        Some(ToolCallFormat::Hermes)
    } else if template_source.contains("[TOOL_CALLS]") {
        Some(ToolCallFormat::Mistral)
    } else if template_source.contains("<|python_tag|>") || template_source.contains("ipython") {
        Some(ToolCallFormat::Llama3Json)
    } else {
        None
    };
    let format = match setting {
        ToolCallParser::None => return None,
        ToolCallParser::Auto => detected.unwrap_or(ToolCallFormat::Hermes),
        ToolCallParser::Hermes => ToolCallFormat::Hermes,
        ToolCallParser::Llama3Json => ToolCallFormat::Llama3Json,
        ToolCallParser::Mistral => ToolCallFormat::Mistral,
    };
    // Sconce's own prompt writes Hermes calls, so a template without tools reads as Hermes.
    let native = native && (detected.is_some() || setting != ToolCallParser::Auto);
    Some(ToolSupport { format: if native { format } else { ToolCallFormat::Hermes }, native })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_the_template_unless_set() {
        let qwen = "{% if tools %}<tools>{% endif %}<tool_call>";
        assert_eq!(
            tool_support(ToolCallParser::Auto, qwen),
            Some(ToolSupport { format: ToolCallFormat::Hermes, native: true })
        );
        let llama = "{% if tools %}{{ '<|python_tag|>' }}{% endif %}";
        assert_eq!(tool_support(ToolCallParser::Auto, llama).unwrap().format, ToolCallFormat::Llama3Json);
        let chatml = "{% for message in messages %}<|im_start|>{% endfor %}";
        assert_eq!(
            tool_support(ToolCallParser::Auto, chatml),
            Some(ToolSupport { format: ToolCallFormat::Hermes, native: false })
        );
        assert_eq!(tool_support(ToolCallParser::None, qwen), None);
        assert_eq!("llama3-json".parse::<ToolCallParser>(), Ok(ToolCallParser::Llama3Json));
        assert!("xml".parse::<ToolCallParser>().is_err());
    }
}
