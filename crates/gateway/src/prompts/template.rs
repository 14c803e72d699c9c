//! A version's messages compiled once into minijinja templates, rendered per request.

use std::collections::BTreeSet;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use sconce_protocol::chat::{ChatMessage, MessageContent};
use sconce_protocol::ApiError;
use serde_json::{Map, Value};

use super::PromptVersion;

/// Globals minijinja defines, which are not variables a caller must pass.
const GLOBALS: &[&str] = &["range", "dict", "namespace", "debug", "lipsum", "cycler", "joiner", "loop"];
const VARIABLES_PARAM: &str = "prompt.variables";

/// One version, ready to render: template `i` is message `i`'s content.
#[derive(Debug)]
pub struct CompiledPrompt {
    pub version: PromptVersion,
    /// Every variable the templates read, sorted (some may be optional: `{% if x %}`).
    pub variables: Vec<String>,
    env: Environment<'static>,
}

impl CompiledPrompt {
    /// Compiles every message; a syntax error is a 400 naming the message.
    pub fn compile(version: PromptVersion) -> Result<Self, ApiError> {
        let mut env = Environment::new();
        // Printing an undefined variable fails; `{% if x %}` still tests for it.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_keep_trailing_newline(true);
        let mut variables = BTreeSet::new();
        for (index, message) in version.messages.iter().enumerate() {
            let syntax = |error: minijinja::Error| {
                ApiError::invalid_param(&format!("messages[{index}].content"), format!("template error: {error}"))
            };
            env.add_template_owned(index.to_string(), message.content.clone()).map_err(syntax)?;
            let template = env.get_template(&index.to_string()).map_err(syntax)?;
            variables.extend(template.undeclared_variables(false));
        }
        variables.retain(|name| !GLOBALS.contains(&name.as_str()));
        Ok(Self { version, variables: variables.into_iter().collect(), env })
    }

    /// `name@version`.
    pub fn tag(&self) -> String {
        format!("{}@{}", self.version.name, self.version.version)
    }

    /// The messages with `variables` filled in; a missing variable is a 400.
    pub fn render(&self, variables: &Map<String, Value>) -> Result<Vec<ChatMessage>, ApiError> {
        let context = minijinja::Value::from_serialize(variables);
        let mut messages = Vec::with_capacity(self.version.messages.len());
        for (index, message) in self.version.messages.iter().enumerate() {
            let text = self
                .env
                .get_template(&index.to_string())
                .and_then(|template| template.render(&context))
                .map_err(|error| self.render_error(&error, variables))?;
            messages.push(ChatMessage {
                role: message.role,
                content: Some(MessageContent::Text(text)),
                name: None,
                tool_calls: None,
                tool_call_id: None,
            });
        }
        Ok(messages)
    }

    fn render_error(&self, error: &minijinja::Error, given: &Map<String, Value>) -> ApiError {
        let missing: Vec<String> =
            self.variables.iter().filter(|name| !given.contains_key(*name)).map(|name| format!("`{name}`")).collect();
        if error.kind() == ErrorKind::UndefinedError && !missing.is_empty() {
            let message = format!("prompt {} is missing variables: {}", self.tag(), missing.join(", "));
            return ApiError::invalid_param(VARIABLES_PARAM, message).with_code("missing_prompt_variable");
        }
        ApiError::invalid_param(VARIABLES_PARAM, format!("prompt {} could not be rendered: {error}", self.tag()))
    }
}
