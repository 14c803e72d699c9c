//! Chat requests with tools or an output constraint, on the local engine: the messages and
//! template variables the chat template gets, and the grammar the output must follow.

use sconce_protocol::chat::{ChatCompletionRequest, ChatMessage as WireMessage, Role};
use sconce_protocol::structured::OutputConstraint;
use sconce_protocol::tools::ToolMode;
use sconce_protocol::{ApiError, SamplingOptions};
use sconce_text::tool_calls::{
    call_grammar, fallback_system_prompt, hermes_call_text, tool_response_text, tool_support, CallGrammar,
    ToolCallFormat, ToolSupport,
};
use sconce_text::ChatMessage;
use serde_json::{Map, Value};

use crate::backend::{Backend, Constraint, GrammarSpec};

/// A chat request made ready for the template and the engine.
pub struct ChatPlan {
    pub messages: Vec<ChatMessage>,
    pub context: Map<String, Value>,
    pub constraint: Option<Constraint>,
    /// Set when the reply may hold calls: how to read them.
    pub calls: Option<ToolCallFormat>,
}

pub fn plan_chat(backend: &Backend, request: &ChatCompletionRequest) -> Result<ChatPlan, ApiError> {
    let mode = request.tool_mode()?;
    let tools = request.tools.as_deref().unwrap_or_default();
    let frontend = backend.frontend();
    let support = tool_support(frontend.tool_call_parser, frontend.chat_template.source());
    let has_history_calls = request.messages.iter().any(|m| m.tool_calls.is_some() || m.role == Role::Tool);
    let support = match (support, mode != ToolMode::None || has_history_calls) {
        (Some(support), _) => support,
        (None, false) => ToolSupport { format: ToolCallFormat::Hermes, native: false },
        (None, true) => {
            let message = "this server does not serve tool calls for its model (tool_call_parser = \"none\")";
            return Err(ApiError::invalid_param("tools", message));
        }
    };
    let tool_values: Vec<Value> = tools.iter().map(|tool| serde_json::to_value(tool).unwrap_or(Value::Null)).collect();
    let mut messages =
        request.messages.iter().map(|m| template_message(m, support.native)).collect::<Result<Vec<_>, _>>()?;
    let mut context = Map::new();
    if mode != ToolMode::None {
        if support.native {
            context.insert("tools".into(), Value::Array(tool_values.clone()));
        } else {
            add_system_text(&mut messages, &fallback_system_prompt(&tool_values));
        }
    }
    let which = match &mode {
        ToolMode::None => None,
        ToolMode::Auto => Some(CallGrammar::Auto),
        ToolMode::Required => Some(CallGrammar::Required),
        ToolMode::Named(name) => Some(CallGrammar::Named(name.clone())),
    };
    let constraint = match which {
        Some(which) => {
            let declared: Vec<(String, Option<Value>)> =
                tools.iter().map(|tool| (tool.function.name.clone(), tool.function.parameters.clone())).collect();
            let marker = backend.frontend().tokenizer.token_to_id("[TOOL_CALLS]");
            // A model the template does not teach tools to tends to repeat a call until max_tokens:
            // several calls per turn only where the template supports tools, or when asked.
            let parallel = request.parallel_tool_calls.unwrap_or(support.native);
            let grammar = call_grammar(support.format, &which, &declared, parallel, marker);
            Some(compile_tools(backend, &GrammarSpec::Lark(grammar))?)
        }
        None => output_constraint(backend, &request.sampling)?,
    };
    let calls = (mode != ToolMode::None).then_some(support.format);
    Ok(ChatPlan { messages, context, constraint, calls })
}

/// A tool grammar that fails to compile names the function schemas, not the grammar.
fn compile_tools(backend: &Backend, spec: &GrammarSpec) -> Result<Constraint, ApiError> {
    backend.compile(spec).map_err(|mut error| {
        error.param = Some("tools".into());
        error.message = format!("a function's parameters cannot be enforced: {}", error.message);
        error
    })
}

/// The request's output constraint, compiled.
pub fn output_constraint(backend: &Backend, sampling: &SamplingOptions) -> Result<Option<Constraint>, ApiError> {
    let spec = match sampling.output_constraint()? {
        None => return Ok(None),
        Some(OutputConstraint::JsonObject) => GrammarSpec::JsonObject,
        Some(OutputConstraint::JsonSchema(schema)) => GrammarSpec::JsonSchema(schema),
        Some(OutputConstraint::Regex(regex)) => GrammarSpec::Regex(regex),
        Some(OutputConstraint::Choice(choice)) => GrammarSpec::Choice(choice),
        Some(OutputConstraint::Grammar(grammar)) => GrammarSpec::Lark(grammar),
    };
    backend.compile(&spec).map(Some)
}

/// One wire message as the template sees it. With native tool support the calls and ids go
/// through as HF templates expect (arguments as objects); otherwise they are written as text.
fn template_message(message: &WireMessage, native: bool) -> Result<ChatMessage, ApiError> {
    let mut out = ChatMessage::new(message.role.as_str(), message.text()?);
    if let Some(name) = &message.name {
        out.extra.insert("name".into(), Value::String(name.clone()));
    }
    let calls = message.tool_calls.as_deref().unwrap_or_default();
    if native {
        if !calls.is_empty() {
            let calls: Vec<Value> = calls
                .iter()
                .map(|call| {
                    let arguments: Value = serde_json::from_str(&call.function.arguments)
                        .unwrap_or_else(|_| Value::String(call.function.arguments.clone()));
                    serde_json::json!({"id": call.id, "type": call.kind,
                        "function": {"name": call.function.name, "arguments": arguments}})
                })
                .collect();
            out.extra.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some(id) = &message.tool_call_id {
            out.extra.insert("tool_call_id".into(), Value::String(id.clone()));
        }
        return Ok(out);
    }
    for call in calls {
        if !out.content.is_empty() {
            out.content.push('\n');
        }
        out.content.push_str(&hermes_call_text(&call.function.name, &call.function.arguments));
    }
    if message.role == Role::Tool {
        out.content = tool_response_text(&out.content);
    }
    Ok(out)
}

/// Appends `text` to the first system message, or opens the chat with one.
fn add_system_text(messages: &mut Vec<ChatMessage>, text: &str) {
    match messages.first_mut().filter(|m| m.role == "system" || m.role == "developer") {
        Some(system) => {
            system.content.push_str("\n\n");
            system.content.push_str(text);
        }
        None => messages.insert(0, ChatMessage::new("system", text)),
    }
}
