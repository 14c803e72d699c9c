use super::cache::GrammarCache;
use super::*;

#[test]
fn cache_keys_follow_kind_and_text() {
    let schema = serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let a = GrammarSpec::JsonSchema(schema.clone()).cache_key();
    assert_eq!(a, GrammarSpec::JsonSchema(schema).cache_key());
    assert_ne!(GrammarSpec::Regex("a".into()).cache_key(), GrammarSpec::Lark("a".into()).cache_key());
    assert_ne!(
        GrammarSpec::Choice(vec!["ab".into()]).cache_key(),
        GrammarSpec::Choice(vec!["a".into(), "b".into()]).cache_key()
    );
}

#[test]
fn masks_ban_what_is_not_allowed_and_past_the_end() {
    let mut mask = toktrie::SimpleVob::alloc(40);
    mask.allow_token(3);
    mask.allow_token(33);
    let mut logits = vec![1.0f32; 70];
    apply_mask(&mut logits, &mask);
    let allowed: Vec<usize> = (0..70).filter(|&i| logits[i].is_finite()).collect();
    assert_eq!(allowed, vec![3, 33]);
}

#[test]
fn layout_is_added_unless_the_schema_has_its_own() {
    let plain = spec::with_json_layout(&serde_json::json!({"type": "string"}));
    assert_eq!(plain["x-guidance"]["whitespace_flexible"], false);
    let own = spec::with_json_layout(&serde_json::json!({"x-guidance": {"lenient": true}}));
    assert_eq!(own["x-guidance"], serde_json::json!({"lenient": true}));
}

#[test]
fn the_cache_drops_the_least_recently_used() {
    let cache = GrammarCache::new(2);
    let matcher = || llguidance::Matcher::new(Err(anyhow::anyhow!("placeholder")));
    cache.insert(1, matcher());
    cache.insert(2, matcher());
    assert!(cache.get(1).is_some());
    cache.insert(3, matcher());
    assert_eq!(cache.len(), 2);
    assert!(cache.get(2).is_none(), "2 was used least recently");
    assert!(cache.get(1).is_some() && cache.get(3).is_some());
}

/// The tiny fixture's byte-level BPE tokenizer, with `<|endoftext|>` (id 0) as EOS.
fn fixture_grammars() -> Grammars {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-llama/tokenizer.json");
    let tokenizer = sconce_text::Tokenizer::from_file(std::path::Path::new(path)).unwrap();
    let vocab = tokenizer.vocab_size();
    Grammars::new(&tokenizer, &[0], vocab, 1 << 16)
}

/// Whether the constraint accepts `text` whole (every token allowed, then the end).
fn accepts(grammars: &Grammars, spec: &GrammarSpec, text: &str) -> bool {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-llama/tokenizer.json");
    let tokenizer = sconce_text::Tokenizer::from_file(std::path::Path::new(path)).unwrap();
    let mut matcher = grammars.compile(spec).unwrap().matcher();
    for token in tokenizer.encode(text, false).unwrap() {
        if matcher.is_stopped() {
            return false;
        }
        let allowed = matcher.compute_mask().unwrap().is_allowed(token);
        if !allowed || matcher.consume_token(token).is_err() {
            return false;
        }
    }
    matcher.is_stopped() || matcher.is_accepting().unwrap_or(false)
}

#[test]
fn tool_call_grammars_accept_calls_and_refuse_bad_ones() {
    use sconce_text::tool_calls::{call_grammar, CallGrammar, ToolCallFormat};
    let grammars = fixture_grammars();
    let params = serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false});
    let tools = vec![("get_weather".to_string(), Some(params)), ("noop".to_string(), None)];
    let lark =
        |format, which: &CallGrammar, parallel| GrammarSpec::Lark(call_grammar(format, which, &tools, parallel, None));
    let required = lark(ToolCallFormat::Hermes, &CallGrammar::Required, true);
    let call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    assert!(accepts(&grammars, &required, call));
    assert!(accepts(&grammars, &required, &format!("{call}\n{call}")), "parallel calls");
    assert!(!accepts(&grammars, &required, "Sure!"), "required means a call");
    assert!(!accepts(&grammars, &required, &call.replace("get_weather", "get_wether")), "unknown function");
    assert!(!accepts(&grammars, &required, &call.replace("city", "town")), "arguments off the schema");
    let single = lark(ToolCallFormat::Hermes, &CallGrammar::Required, false);
    assert!(!accepts(&grammars, &single, &format!("{call}\n{call}")), "parallel_tool_calls: false");
    let auto = lark(ToolCallFormat::Hermes, &CallGrammar::Auto, true);
    assert!(accepts(&grammars, &auto, "Just text, no call."));
    assert!(accepts(&grammars, &auto, &format!("Let me look.{call}")));
    assert!(
        !accepts(&grammars, &auto, "Let me look.<tool_call>\n{\"name\": \"nope\"}"),
        "after the marker, a valid call"
    );
    let llama = lark(ToolCallFormat::Llama3Json, &CallGrammar::Required, true);
    assert!(accepts(&grammars, &llama, "{\"name\": \"noop\", \"parameters\": {}}"));
    let mistral = lark(ToolCallFormat::Mistral, &CallGrammar::Required, true);
    assert!(accepts(&grammars, &mistral, "[TOOL_CALLS][{\"name\": \"noop\", \"arguments\": {}}]"));
}

#[test]
fn bad_constraints_are_refused_with_the_reason() {
    let grammars = fixture_grammars();
    let refused = |spec: GrammarSpec| match grammars.compile(&spec) {
        Err(crate::api::EngineError::InvalidParam { param, message }) => (param, message),
        other => panic!("{spec:?} was not refused: {other:?}"),
    };
    let (param, message) = refused(GrammarSpec::JsonSchema(serde_json::json!({"type": "object", "properties": 5})));
    assert_eq!(param, "response_format");
    assert!(!message.is_empty());
    let (_, message) = refused(GrammarSpec::JsonSchema(
        serde_json::json!({"type": "object", "patternProperties": {"^a": {}}, "unevaluatedItems": false, "contains": {"type": "integer"}}),
    ));
    assert!(
        message.contains("contains") || message.contains("unevaluated") || message.contains("patternProperties"),
        "{message}"
    );
    let (param, _) = refused(GrammarSpec::Regex("[a-".into()));
    assert_eq!(param, "structured_outputs");
    refused(GrammarSpec::Lark("start: undefined_rule".into()));
    let small = {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-llama/tokenizer.json");
        let tokenizer = sconce_text::Tokenizer::from_file(std::path::Path::new(path)).unwrap();
        Grammars::new(&tokenizer, &[0], tokenizer.vocab_size(), 10)
    };
    assert!(small.compile(&GrammarSpec::Regex("a".repeat(11))).is_err(), "over the configured size");
}

#[test]
fn a_repeated_constraint_comes_from_the_cache() {
    let grammars = fixture_grammars();
    let spec = GrammarSpec::JsonSchema(serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}}}));
    grammars.compile(&spec).unwrap();
    grammars.compile(&spec).unwrap();
    let stats = grammars.stats().snapshot();
    assert_eq!((stats.compile.total(), stats.cache_hits), (1, 1));
    assert!(accepts(&grammars, &spec, "{\"n\": 5}") && !accepts(&grammars, &spec, "{\"n\": \"5\"}"));
    assert!(accepts(&grammars, &GrammarSpec::Choice(vec!["yes".into(), "no".into()]), "no"));
    assert!(!accepts(&grammars, &GrammarSpec::Choice(vec!["yes".into(), "no".into()]), "nope"));
}
