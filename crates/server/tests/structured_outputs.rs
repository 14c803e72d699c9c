//! Structured outputs and tool calls with the real SmolLM2 over HTTP: every schema in the
//! suite gives JSON that a real JSON-schema validator accepts, forced tool calls parse and
//! their arguments validate, and streamed calls fold into what the full reply holds.
#![allow(clippy::unwrap_used)]

mod common;

use common::{chunks, TestServer};
use futures_util::future::join_all;
use serde_json::{json, Value};

const SMOLLM2: &str = "smollm2-135m-instruct";

async fn smollm2() -> TestServer {
    TestServer::start_with(|config| {
        config.model.name = SMOLLM2.into();
        config.model.served_model_name = None;
        config.model.allow_hub = true;
        config.engine.kv_cache_memory = Some(sconce_server::config::ByteSize(512 << 20));
    })
    .await
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options().should_validate_formats(true).build(schema).unwrap_or_else(|e| panic!("{schema}: {e}"))
}

fn ask(question: &str) -> Value {
    json!([{"role": "system", "content": "You answer in JSON."}, {"role": "user", "content": question}])
}

#[tokio::test]
async fn every_schema_in_the_suite_gives_valid_json() {
    let server = smollm2().await;
    let schemas: Vec<Value> = serde_json::from_str(include_str!("structured/schemas.json")).unwrap();
    assert!(schemas.len() >= 30);
    let requests = schemas.iter().enumerate().map(|(i, schema)| {
        let body = json!({
            "model": SMOLLM2, "messages": ask(&format!("Give an example that fits this schema: {schema}")),
            "max_tokens": 200, "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": format!("s{i}"), "schema": schema, "strict": true}}
        });
        let server = &server;
        async move { server.post_json("/v1/chat/completions", &body).await }
    });
    let replies = join_all(requests).await;
    for ((status, reply), schema) in replies.iter().zip(&schemas) {
        assert_eq!(*status, 200, "{schema}: {reply}");
        let choice = &reply["choices"][0];
        assert_eq!(choice["finish_reason"], "stop", "{schema}: {reply}");
        let text = choice["message"]["content"].as_str().unwrap();
        let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{schema}: {text:?} is not JSON: {e}"));
        let errors: Vec<String> = validator(schema).iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{schema}: {text} fails: {errors:?}");
    }
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time", "description": "Local time in a time zone",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 40}},
                "required": ["zone"], "additionalProperties": false}}}
    ])
}

fn parameters_of(tools: &Value, name: &str) -> Value {
    let tool = tools.as_array().unwrap().iter().find(|tool| tool["function"]["name"] == name);
    tool.unwrap_or_else(|| panic!("no tool {name}"))["function"]["parameters"].clone()
}

#[tokio::test]
async fn required_and_named_tool_calls_parse_and_validate_twenty_of_twenty() {
    let server = smollm2().await;
    let tools = weather_tools();
    let cities = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Quito", "Perth", "Dakar", "Hanoi", "Bern"];
    let mut bodies = Vec::new();
    for (i, city) in cities.iter().enumerate() {
        let question = format!("What is the weather in {city} right now?");
        let mut required = json!({"model": SMOLLM2, "messages": [{"role": "user", "content": question}], "tools": tools,
            "tool_choice": "required", "max_tokens": 120, "temperature": 0.7, "seed": i});
        bodies.push(required.clone());
        required["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
        bodies.push(required);
    }
    let replies = join_all(bodies.iter().map(|body| server.post_json("/v1/chat/completions", body))).await;
    for (body, (status, reply)) in bodies.iter().zip(&replies) {
        assert_eq!(*status, 200, "{reply}");
        let choice = &reply["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{reply}");
        let calls = choice["message"]["tool_calls"].as_array().unwrap_or_else(|| panic!("no calls: {reply}"));
        assert!(!calls.is_empty());
        for call in calls {
            assert!(call["id"].as_str().unwrap().starts_with("call_"));
            assert_eq!(call["type"], "function");
            let name = call["function"]["name"].as_str().unwrap();
            if body["tool_choice"].is_object() {
                assert_eq!(name, "get_time", "the named function: {reply}");
            }
            let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
            let schema = parameters_of(&tools, name);
            assert!(validator(&schema).is_valid(&arguments), "{name}({arguments}) against {schema}");
        }
        let content = choice["message"]["content"].as_str().unwrap_or_default();
        assert!(!content.contains("tool_call"), "markup leaked into content: {content:?}");
    }
}

/// The stream's call deltas: the first carries index, id, type and name, later ones only
/// argument fragments; joined they equal the full reply's call for the same seed.
#[tokio::test]
async fn streamed_calls_fold_into_the_full_replys_calls() {
    let server = smollm2().await;
    let body = json!({"model": SMOLLM2, "messages": [{"role": "user", "content": "Weather in Rome, in celsius?"}],
        "tools": weather_tools(), "tool_choice": "required", "max_tokens": 120, "temperature": 0.8, "seed": 42});
    let (status, full) = server.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{full}");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let chunks = chunks(&server.stream("/v1/chat/completions", &streamed).await);
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = None;
    let mut fragments = 0;
    for chunk in &chunks {
        let Some(choice) = chunk["choices"].get(0) else { continue };
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = Some(reason.to_string());
        }
        assert!(!choice["delta"]["content"].as_str().unwrap_or_default().contains("<tool_call>"));
        for delta in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let index = delta["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                let id = delta["id"].as_str().expect("the first delta of a call has its id").to_string();
                assert_eq!(delta["type"], "function");
                let name = delta["function"]["name"].as_str().expect("and its name").to_string();
                calls.push((id, name, String::new()));
            } else {
                assert!(delta.get("id").is_none() && delta["function"].get("name").is_none(), "{delta}");
                fragments += 1;
            }
            calls[index].2.push_str(delta["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert!(fragments >= 2, "arguments streamed in pieces ({fragments})");
    let whole = full["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(whole.len(), calls.len());
    for (call, (_, name, arguments)) in whole.iter().zip(&calls) {
        assert_eq!(call["function"]["name"], name.as_str());
        assert_eq!(call["function"]["arguments"], arguments.as_str());
    }
}

/// A `choice`, a regex and a Lark grammar in the `structured_outputs` field.
#[tokio::test]
async fn structured_outputs_choice_regex_and_grammar() {
    let server = smollm2().await;
    let cases = [
        (json!({"choice": ["positive", "negative"]}), "Is 'I love it' positive or negative?"),
        (json!({"regex": "[0-9]{3}-[0-9]{4}"}), "Make up a phone number."),
        (json!({"grammar": "start: \"The answer is \" NUMBER \".\"\nNUMBER: /[0-9]+/"}), "What is 6 times 7?"),
    ];
    for (constraint, question) in cases {
        let body = json!({"model": SMOLLM2, "messages": [{"role": "user", "content": question}], "max_tokens": 30,
            "temperature": 0, "structured_outputs": constraint});
        let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{reply}");
        let text = reply["choices"][0]["message"]["content"].as_str().unwrap().to_string();
        let ok = match () {
            _ if constraint.get("choice").is_some() => text == "positive" || text == "negative",
            _ if constraint.get("regex").is_some() => {
                text.len() == 8
                    && text.chars().enumerate().all(|(i, c)| if i == 3 { c == '-' } else { c.is_ascii_digit() })
            }
            _ => {
                text.starts_with("The answer is ")
                    && text.ends_with('.')
                    && text[14..text.len() - 1].chars().all(|c| c.is_ascii_digit())
            }
        };
        assert!(ok, "{constraint}: {text:?}");
    }
}

/// The official `openai` SDK: call, tool result, answer; whole and streamed (skipped where the
/// SDK is missing, except in CI, which sets `SCONCE_TEST_REQUIRE_SDK`).
#[tokio::test]
async fn a_tool_round_trip_through_the_openai_sdk() {
    if !common::openai_sdk_installed() {
        return;
    }
    let server = smollm2().await;
    let printed = common::run_sdk_script("openai_tools.py", vec![server.base.clone(), SMOLLM2.into()]).await;
    assert_eq!(printed["call"], printed["stream_call"], "greedy: the streamed call is the whole one");
    assert_eq!(printed["call"]["name"], "get_weather");
    let arguments: Value = serde_json::from_str(printed["call"]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["city"].is_string(), "{arguments}");
    for (answer, finish) in [("answer", "finish"), ("stream_answer", "stream_finish")] {
        let text = printed[answer].as_str().unwrap();
        assert!(!text.is_empty() && !text.contains("<tool_call>"), "{printed}");
        assert!(printed[finish] == "stop" || printed[finish] == "length", "{printed}");
    }
    assert_eq!(printed["answer"], printed["stream_answer"], "the same greedy answer streamed and whole");
}

/// `auto`: the model may answer in text or call; either way nothing of the markup shows, and a
/// call it makes names a declared function with valid arguments.
#[tokio::test]
async fn auto_tool_choice_gives_text_or_valid_calls_never_markup() {
    let server = smollm2().await;
    let tools = weather_tools();
    for question in ["What is the weather in Paris right now?", "Say hello to me.", "What time is it in Tokyo?"] {
        let body = json!({"model": SMOLLM2, "messages": [{"role": "user", "content": question}], "tools": tools,
            "max_tokens": 80, "temperature": 0});
        let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{reply}");
        let message = &reply["choices"][0]["message"];
        let content = message["content"].as_str().unwrap_or_default();
        assert!(!content.contains("<tool_call>") && !content.contains("</tool_call>"), "{reply}");
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            let name = call["function"]["name"].as_str().unwrap();
            let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
            assert!(validator(&parameters_of(&tools, name)).is_valid(&arguments), "{reply}");
            assert_eq!(reply["choices"][0]["finish_reason"], "tool_calls");
        }
    }
}
