//! Hugging Face chat templates rendered with minijinja.

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::TextError;
use crate::template_json::tojson;

const TEMPLATE_NAME: &str = "chat_template";

/// Fallback ChatML template for models without one.
const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// One chat message as seen by the template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// Text content, already flattened from content parts by the caller.
    pub content: String,
    /// Other fields handed to the template as-is (`tool_calls`, `name`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into(), extra: serde_json::Map::new() }
    }
}

/// The error payload of `raise_exception(msg)`, found again after rendering.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RaisedException(String);

/// A compiled chat template with the same environment as Hugging Face's
/// (`trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`,
/// `strftime_now`, a Python-like `tojson` and Python string/dict methods).
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl ChatTemplate {
    /// Compiles `source` once; the special tokens become template variables.
    pub fn new(source: &str, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self, TextError> {
        let mut env = hf_environment();
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(source)).map_err(template_error)?;
        Ok(Self { env, source: source.to_string(), bos_token, eos_token })
    }

    /// The template's source as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The ChatML template (`<|im_start|>role\ncontent<|im_end|>\n`).
    pub fn chatml() -> Self {
        // The built-in source is covered by tests; a failure here would
        // surface as a "template not found" error when rendering.
        Self::new(CHATML_TEMPLATE, None, None).unwrap_or_else(|_| Self {
            env: hf_environment(),
            source: String::new(),
            bos_token: None,
            eos_token: None,
        })
    }

    /// Renders `messages`, optionally opening the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, TextError> {
        self.render_with_context(messages, add_generation_prompt, &serde_json::Map::new())
    }

    /// Like [`ChatTemplate::render`], with extra template variables such as
    /// `tools`, `documents` or `enable_thinking`. The standard variables
    /// (`messages`, `add_generation_prompt`, `bos_token`, `eos_token`) win.
    pub fn render_with_context(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TextError> {
        let mut context: Vec<(String, Value)> =
            extra.iter().map(|(key, value)| (key.clone(), Value::from_serialize(value))).collect();
        context.push(("messages".into(), Value::from_serialize(messages)));
        context.push(("add_generation_prompt".into(), Value::from(add_generation_prompt)));
        let tokens = [("bos_token", &self.bos_token), ("eos_token", &self.eos_token)];
        for (name, token) in tokens {
            if let Some(token) = token {
                context.push((name.into(), Value::from(token.as_str())));
            }
        }
        let template = self.env.get_template(TEMPLATE_NAME).map_err(template_error)?;
        template.render(Value::from_iter(context)).map_err(template_error)
    }
}

/// Environment configured like `transformers`' chat template environment.
fn hf_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(RaisedException(message)))
}

/// Formats the local time with a Python/C `strftime` format.
fn strftime_now(format: String) -> Result<String, Error> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format))
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("invalid strftime format {format:?}")))?;
    Ok(out)
}

/// Maps a minijinja error, keeping `raise_exception` messages verbatim.
fn template_error(err: Error) -> TextError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(current) = source {
        if let Some(raised) = current.downcast_ref::<RaisedException>() {
            return TextError::Template(raised.0.clone());
        }
        source = current.source();
    }
    TextError::Template(err.to_string())
}

/// Replaces the `{% generation %}` / `{% endgeneration %}` markers (used by
/// `transformers` to track assistant tokens) by no-op blocks, keeping their
/// whitespace control.
fn rewrite_generation_tags(source: &str) -> String {
    if !source.contains("generation") {
        return source.to_string();
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(open) = rest.find("{%") {
        let body_start = open + 2;
        let Some(close) = rest[body_start..].find("%}").map(|end| body_start + end + 2) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rewrite_tag(&rest[open..close]));
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

/// Rewrites one `{% ... %}` tag if it is a generation marker.
fn rewrite_tag(tag: &str) -> String {
    let inner = &tag[2..tag.len() - 2];
    let body = inner.trim_start_matches(['-', '+']).trim_end_matches(['-', '+']);
    let replacement = match body.trim() {
        "generation" => "if true",
        "endgeneration" => "endif",
        _ => return tag.to_string(),
    };
    let left = &inner[..inner.len() - inner.trim_start_matches(['-', '+']).len()];
    let right = &inner[inner.trim_end_matches(['-', '+']).len()..];
    format!("{{%{left} {replacement} {right}%}}")
}
