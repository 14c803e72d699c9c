//! `ModelFrontend`: the loaded model's text side (tokenizer, chat template, EOS ids), handed
//! to the caller next to the engine handle.

use std::sync::Arc;

use sconce_modeling::LoadedModel;
use sconce_text::tool_calls::ToolCallParser;
use sconce_text::{ChatMessage, ChatTemplate, ContentSpecials, TextError, Tokenizer};

/// What a caller needs to turn text into prompt tokens and tokens back into text.
#[derive(Debug, Clone)]
pub struct ModelFrontend {
    pub tokenizer: Arc<Tokenizer>,
    pub chat_template: ChatTemplate,
    pub eos_token_ids: Vec<u32>,
    /// How special-token strings in message contents are read.
    pub content_specials: ContentSpecials,
    /// How tool calls are written and read (`[model] tool_call_parser`).
    pub tool_call_parser: ToolCallParser,
}

impl ModelFrontend {
    /// The text side of `model` (shares its tokenizer).
    pub fn of(model: &LoadedModel) -> Self {
        Self {
            tokenizer: model.tokenizer.clone(),
            chat_template: model.chat_template.clone(),
            eos_token_ids: model.eos_token_ids.clone(),
            content_specials: ContentSpecials::Text,
            tool_call_parser: ToolCallParser::Auto,
        }
    }

    /// Tokenizes a completion prompt, adding BOS (once) when asked and the model wants it.
    pub fn encode_text(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TextError> {
        self.tokenizer.encode_prompt(text, add_special_tokens && self.tokenizer.add_bos_by_default())
    }

    /// Renders `messages` with the chat template and tokenizes them (the template writes BOS);
    /// special-token strings in the contents are read as `content_specials` says.
    /// `context` adds template variables such as `tools`.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        context: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<u32>, TextError> {
        let (template, tokenizer) = (&self.chat_template, &self.tokenizer);
        sconce_text::encode_chat(template, tokenizer, messages, add_generation_prompt, self.content_specials, context)
    }
}
