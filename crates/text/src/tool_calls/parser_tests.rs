use super::*;

/// Feeds `output` in pieces of `step` bytes (on char boundaries) and joins the events.
fn run(format: ToolCallFormat, output: &str, step: usize) -> (String, Vec<(String, String)>) {
    let mut stream = ToolCallStream::new(format);
    let mut events = Vec::new();
    let mut rest = output;
    while !rest.is_empty() {
        let mut cut = step.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        events.extend(stream.push(&rest[..cut]));
        rest = &rest[cut..];
    }
    events.extend(stream.finish());
    let mut content = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    for event in events {
        match event {
            ToolEvent::Content(text) => content.push_str(&text),
            ToolEvent::Start { index, name } => {
                assert_eq!(index, calls.len(), "calls start in order");
                calls.push((name, String::new()));
            }
            ToolEvent::Arguments { index, fragment } => calls[index].1.push_str(&fragment),
        }
    }
    (content, calls)
}

#[test]
fn hermes_calls_stream_without_markup_in_content() {
    let output = "Let me check.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
    for step in [1, 2, 3, 7, 1000] {
        let (content, calls) = run(ToolCallFormat::Hermes, output, step);
        assert_eq!(content, "Let me check.", "step {step}");
        assert_eq!(calls.len(), 2, "step {step}");
        assert_eq!(calls[0], ("get_weather".into(), "{\"city\": \"Paris\"}".into()));
        assert_eq!(calls[1], ("get_time".into(), "{}".into()));
    }
}

#[test]
fn text_that_only_looks_like_a_marker_is_content() {
    let (content, calls) = run(ToolCallFormat::Hermes, "a <tool and <b> c", 2);
    assert_eq!(content, "a <tool and <b> c");
    assert!(calls.is_empty());
    let (content, _) = run(ToolCallFormat::Hermes, "ends with <tool_ca", 1);
    assert_eq!(content, "ends with <tool_ca");
}

#[test]
fn llama_json_calls_and_plain_answers() {
    let (content, calls) = run(ToolCallFormat::Llama3Json, "{\"name\": \"search\", \"parameters\": {\"q\": \"x\"}}", 3);
    assert_eq!(content, "");
    assert_eq!(calls, vec![("search".into(), "{\"q\": \"x\"}".into())]);
    let (content, calls) = run(
        ToolCallFormat::Llama3Json,
        "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"k\": [1]}}",
        4,
    );
    assert_eq!(content, "");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1], ("b".into(), "{\"k\": [1]}".into()));
    let (content, calls) = run(ToolCallFormat::Llama3Json, "The answer is {braces} 4.", 2);
    assert_eq!(content, "The answer is {braces} 4.");
    assert!(calls.is_empty());
}

#[test]
fn mistral_calls_follow_their_marker() {
    let output =
        "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"a\": 1}}, {\"name\": \"g\", \"arguments\": {\"b\": \"}\"}}]";
    let (content, calls) = run(ToolCallFormat::Mistral, output, 5);
    assert_eq!(content, "");
    assert_eq!(calls, vec![("f".into(), "{\"a\": 1}".into()), ("g".into(), "{\"b\": \"}\"}".into())]);
}

#[test]
fn a_cut_off_call_keeps_what_was_announced_and_drops_its_markup() {
    let (content, calls) = run(ToolCallFormat::Hermes, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1", 4);
    assert_eq!(content, "");
    assert_eq!(calls, vec![("f".into(), "{\"a\": 1".into())]);
}
