#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too
mod common;

use common::*;
use sconce_text::{ChatMessage, ChatTemplate, TextError};
use serde_json::json;

// Expected outputs were rendered with Python Jinja2 configured like
// `transformers` (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
// loopcontrols, its tojson/raise_exception/strftime_now).

const SMOLLM2: &str = r#"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
' }}{% endif %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}"#;

const LLAMA3_STYLE: &str = r#"{{ bos_token }}
{% for message in messages %}
    {% if message['role'] == 'system' %}
<|start_header_id|>system<|end_header_id|>

{{ message['content'] | trim }}<|eot_id|>
    {% else %}
<|start_header_id|>{{ message['role'] }}<|end_header_id|>

{{ message['content'] | trim }}<|eot_id|>
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
<|start_header_id|>assistant<|end_header_id|>

{% endif %}
"#;

const PYCOMPAT: &str = r#"{%- set ns = namespace(count=0) -%}
{%- for message in messages -%}
  {%- if message.role == 'system' -%}{%- continue -%}{%- endif -%}
  {%- set ns.count = ns.count + 1 -%}
[{{ loop.index }}:{{ message.role.upper() }}] {{ message.content.strip() }}
  {%- for word in message.content.split() %} <{{ word.lstrip('#') }}>{% endfor %}
  {%- if message.content.strip().startswith('stop') %} STOP{% break %}{% endif %}
  {%- if message.content.endswith('?') %} Q{% endif %}

{% endfor -%}
count={{ ns.count }} {{ {'a': 1}.get('a') }} {{ 'x,y'.split(',') | join('+') }}
"#;

const TOOLS: &str = r#"{% if tools %}Tools: {{ tools | tojson }}
Indented: {{ tools | tojson(indent=2) }}
{% endif %}{% for message in messages %}{{ message.role }}: {{ message.content | tojson }}
{% if message.tool_calls is defined %}{% for call in message.tool_calls %}call {{ call.function.name }} {{ call.function.arguments | tojson }}
{% endfor %}{% endif %}{% endfor %}{{ [1, 2.5, 3.0, true, none, 'a<b>&c'] | tojson }}"#;

fn messages(pairs: &[(&str, &str)]) -> Vec<ChatMessage> {
    pairs.iter().map(|(role, content)| ChatMessage::new(*role, *content)).collect()
}

fn conversation() -> Vec<ChatMessage> {
    messages(&[("user", "Hi there"), ("assistant", "Hello!"), ("user", "How are you?")])
}

#[test]
fn smollm2_template_with_default_system_prompt() {
    let template = ChatTemplate::new(SMOLLM2, None, None).unwrap();
    let rendered = template.render(&conversation(), true).unwrap();
    assert_eq!(rendered, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn smollm2_template_with_own_system_prompt_and_trailing_newline() {
    let source = format!("{SMOLLM2}\n");
    let template = ChatTemplate::new(&source, None, None).unwrap();
    let chat = messages(&[("system", "Be brief."), ("user", "  Hi  ")]);
    assert_eq!(
        template.render(&chat, false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  Hi  <|im_end|>\n"
    );
}

#[test]
fn llama3_style_template_with_bos_does_not_double_bos() {
    let bos = Some("<|begin_of_text|>".to_string());
    let template = ChatTemplate::new(LLAMA3_STYLE, bos, Some("<|eot_id|>".into())).unwrap();
    let chat = messages(&[("system", "Be brief."), ("user", "  Hi  ")]);
    let rendered = template.render(&chat, true).unwrap();
    assert_eq!(rendered, "<|begin_of_text|>\n<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\n<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\n<|start_header_id|>assistant<|end_header_id|>\n\n");
    let tok = tokenizer("llama-bpe");
    let ids = tok.encode_prompt(&rendered, true).unwrap();
    assert_eq!(ids[0], BEGIN_OF_TEXT);
    assert_eq!(ids.iter().filter(|&&id| id == BEGIN_OF_TEXT).count(), 1);
    assert_eq!(tok.decode(&ids, false).unwrap(), rendered);
}

#[test]
fn python_methods_namespace_and_loop_controls() {
    let template = ChatTemplate::new(PYCOMPAT, None, None).unwrap();
    let chat = messages(&[
        ("system", "ignored"),
        ("user", "  #hello world?  "),
        ("assistant", "stop here now"),
        ("user", "never seen"),
    ]);
    assert_eq!(
        template.render(&chat, false).unwrap(),
        "[2:USER] #hello world? <hello> <world?>\n[3:ASSISTANT] stop here now <stop> <here> <now> STOPcount=2 1 x+y"
    );
}

fn tool_context() -> (Vec<ChatMessage>, serde_json::Map<String, serde_json::Value>) {
    let mut call = ChatMessage::new("assistant", "");
    call.extra.insert(
        "tool_calls".into(),
        json!([{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]),
    );
    let chat = vec![ChatMessage::new("user", "Weather in \"Paris\"?"), call];
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let mut extra = serde_json::Map::new();
    extra.insert("tools".into(), tools);
    (chat, extra)
}

#[test]
fn tojson_matches_python_json_dumps() {
    let template = ChatTemplate::new(TOOLS, None, None).unwrap();
    let (chat, extra) = tool_context();
    let rendered = template.render_with_context(&chat, false, &extra).unwrap();
    // serde_json keeps insertion order (as Python's dicts do), so the keys come out as sent.
    assert_eq!(rendered, "Tools: [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}]\nIndented: [\n  {\n    \"type\": \"function\",\n    \"function\": {\n      \"name\": \"get_weather\",\n      \"parameters\": {\n        \"type\": \"object\",\n        \"properties\": {\n          \"city\": {\n            \"type\": \"string\"\n          }\n        },\n        \"required\": [\n          \"city\"\n        ]\n      }\n    }\n  }\n]\nuser: \"Weather in \\\"Paris\\\"?\"\nassistant: \"\"\ncall get_weather {\"city\": \"Paris\"}\n[1, 2.5, 3.0, true, null, \"a<b>&c\"]");
}

#[test]
fn tojson_options_and_no_html_escaping() {
    let source = r#"{{ {"b": 1, "a": [1, {}], "c": []} | tojson(sort_keys=true) }}|{{ "<&'>" | tojson }}|{{ [1, 2] | tojson(indent=1, separators=[",", ":"]) }}"#;
    let template = ChatTemplate::new(source, None, None).unwrap();
    let rendered = template.render(&[], false).unwrap();
    assert_eq!(rendered, "{\"a\": [1, {}], \"b\": 1, \"c\": []}|\"<&'>\"|[\n 1,\n 2\n]");
}

#[test]
fn raise_exception_becomes_template_error_with_message() {
    let source = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}ok";
    let template = ChatTemplate::new(source, None, None).unwrap();
    assert_eq!(template.render(&messages(&[("user", "hi")]), false).unwrap(), "ok");
    match template.render(&messages(&[("assistant", "hi")]), false) {
        Err(TextError::Template(message)) => {
            assert_eq!(message, "Conversation roles must alternate user/assistant")
        }
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn strftime_now_formats_the_current_local_date() {
    let template = ChatTemplate::new("Today: {{ strftime_now('%d %b %Y') }}", None, None).unwrap();
    let before = chrono::Local::now().format("Today: %d %b %Y").to_string();
    let rendered = template.render(&[], false).unwrap();
    let after = chrono::Local::now().format("Today: %d %b %Y").to_string();
    assert!(rendered == before || rendered == after, "{rendered}");
    let bad = ChatTemplate::new("{{ strftime_now('%Q%') }}", None, None).unwrap();
    assert!(matches!(bad.render(&[], false), Err(TextError::Template(_))));
}

#[test]
fn syntax_errors_and_undefined_attributes_are_template_errors() {
    assert!(matches!(ChatTemplate::new("{% for %}", None, None), Err(TextError::Template(_))));
    let template = ChatTemplate::new("{{ nothing.attribute }}", None, None).unwrap();
    assert!(matches!(template.render(&[], false), Err(TextError::Template(_))));
}

#[test]
fn missing_special_tokens_render_empty() {
    let template = ChatTemplate::new("[{{ bos_token }}|{{ eos_token }}]", None, None).unwrap();
    assert_eq!(template.render(&[], false).unwrap(), "[|]");
    let template =
        ChatTemplate::new("[{{ bos_token }}|{{ eos_token }}]", Some("<s>".into()), Some("</s>".into())).unwrap();
    assert_eq!(template.render(&[], false).unwrap(), "[<s>|</s>]");
}

#[test]
fn generation_markers_are_accepted_as_no_ops() {
    let plain = "{% for m in messages %}\n  {%- if m.role == 'assistant' %}{{ m.content }}{% endif %}\n\n{% endfor %}";
    let marked = "{% for m in messages %}\n  {%- if m.role == 'assistant' %}{%- generation -%} {{ m.content }} {%- endgeneration -%}{% endif %}\n\n{% endfor %}";
    let chat = conversation();
    let expected = ChatTemplate::new(plain, None, None).unwrap().render(&chat, false).unwrap();
    let rendered = ChatTemplate::new(marked, None, None).unwrap().render(&chat, false).unwrap();
    assert_eq!(expected, "\nHello!\n\n", "as rendered by Jinja2");
    assert_eq!(rendered, expected);
}

#[test]
fn chatml_fallback_renders_conversation() {
    let rendered = ChatTemplate::chatml().render(&conversation()[..1], true).unwrap();
    assert_eq!(rendered, "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n");
    let tok = tokenizer("smollm");
    let ids = tok.encode_prompt(&rendered, false).unwrap();
    assert_eq!(ids[0], IM_START);
    assert_eq!(ids.iter().filter(|&&id| id == IM_END).count(), 1);
}

#[test]
fn chat_message_round_trips_extra_fields_through_serde() {
    let json = json!({"role": "tool", "content": "42", "tool_call_id": "call_1"});
    let message: ChatMessage = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(message.role, "tool");
    assert_eq!(message.extra.get("tool_call_id"), Some(&json!("call_1")));
    assert_eq!(serde_json::to_value(&message).unwrap(), json);
}

#[test]
fn standard_variables_win_over_extra_context() {
    let template =
        ChatTemplate::new("{{ messages | length }} {{ add_generation_prompt }} {{ flag }}", None, None).unwrap();
    let mut extra = serde_json::Map::new();
    extra.insert("messages".into(), json!([]));
    extra.insert("add_generation_prompt".into(), json!(false));
    extra.insert("flag".into(), json!("on"));
    let rendered = template.render_with_context(&conversation(), true, &extra).unwrap();
    assert_eq!(rendered, "3 True on", "Jinja2 prints Python booleans");
}
