#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too
mod common;

use common::*;
use sconce_text::{GgufVocab, TextError, Tokenizer};

#[test]
fn tokenizer_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
}

#[test]
fn byte_char_map_is_a_bijection_onto_gpt2_chars() {
    let chars: std::collections::HashSet<char> = (0..=255u8).map(byte_char).collect();
    assert_eq!(chars.len(), 256);
    assert_eq!(byte_char(b' '), 'Ġ');
    assert_eq!(byte_char(b'\n'), 'Ċ');
}

#[test]
fn encodes_words_with_merges() {
    let tok = tokenizer("smollm");
    let ids = tok.encode("Hello world!", false).unwrap();
    assert_eq!(ids, vec![merged_id("Hello"), merged_id("Ġworld"), byte_id(b'!')]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "Hello world!");
}

#[test]
fn pre_tokenizer_follows_gguf_pre_name() {
    let expect = |pre: &str, ids: Vec<u32>| {
        assert_eq!(tokenizer(pre).encode("3123", false).unwrap(), ids, "pre {pre}");
    };
    let single_digits = vec![byte_id(b'3'), byte_id(b'1'), byte_id(b'2'), byte_id(b'3')];
    expect("smollm", single_digits.clone());
    expect("starcoder", single_digits.clone());
    expect("qwen2", single_digits);
    // Llama-3 splits digits in groups of three: "312" + "3".
    expect("llama-bpe", vec![byte_id(b'3'), merged_id("12"), byte_id(b'3')]);
    // Plain GPT-2 keeps the number whole, so "12 3" can merge.
    expect("default", vec![byte_id(b'3'), merged_id("123")]);
    expect("some-unknown-pre", vec![byte_id(b'3'), merged_id("123")]);
}

#[test]
fn llama3_regex_keeps_leading_space_with_word() {
    let tok = tokenizer("llama-bpe");
    let ids = tok.encode("Hello world", false).unwrap();
    assert_eq!(ids, vec![merged_id("Hello"), merged_id("Ġworld")]);
}

#[test]
fn control_tokens_are_special_and_encode_whole() {
    let tok = tokenizer("smollm");
    let ids = tok.encode("<|im_start|>Hello<|im_end|>", false).unwrap();
    assert_eq!(ids, vec![IM_START, merged_id("Hello"), IM_END]);
    assert!(tok.is_special(IM_START) && tok.is_special(IM_END));
    assert!(!tok.is_special(merged_id("Hello")));
    assert_eq!(tok.decode(&ids, true).unwrap(), "Hello");
    assert_eq!(tok.decode(&ids, false).unwrap(), "<|im_start|>Hello<|im_end|>");
}

#[test]
fn user_defined_tokens_encode_whole_but_are_not_special() {
    let tok = tokenizer("smollm");
    let ids = tok.encode("a<tool>b", false).unwrap();
    assert_eq!(ids, vec![byte_id(b'a'), TOOL, byte_id(b'b')]);
    assert!(!tok.is_special(TOOL));
    assert_eq!(tok.decode(&ids, true).unwrap(), "a<tool>b");
}

#[test]
fn vocabulary_lookups() {
    let tok = tokenizer("smollm");
    assert_eq!(tok.vocab_size(), tokens().len());
    assert_eq!(tok.token_to_id("Ġworld"), Some(merged_id("Ġworld")));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(IM_END));
    assert_eq!(tok.id_to_token(byte_id(b' ')).as_deref(), Some("Ġ"));
    assert_eq!(tok.id_to_token(10_000), None);
    assert_eq!(tok.bos(), Some(("<|begin_of_text|>", BEGIN_OF_TEXT)));
}

#[test]
fn multibyte_text_round_trips() {
    let tok = tokenizer("qwen2");
    let text = "héyo 世界 😀\n\tend";
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(ids.len(), text.len(), "no merges apply, so one id per byte");
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
}

#[test]
fn encode_prompt_adds_bos_once() {
    let tok = tokenizer("smollm");
    let hello = merged_id("Hello");
    assert_eq!(tok.encode_prompt("Hello", false).unwrap(), vec![hello]);
    assert_eq!(tok.encode_prompt("Hello", true).unwrap(), vec![BEGIN_OF_TEXT, hello]);
    let with_bos = "<|begin_of_text|>Hello";
    assert_eq!(tok.encode_prompt(with_bos, true).unwrap(), vec![BEGIN_OF_TEXT, hello]);
    assert_eq!(tok.encode_prompt(with_bos, false).unwrap(), vec![BEGIN_OF_TEXT, hello]);
}

#[test]
fn gguf_add_bos_sets_post_processor_without_doubling_in_prompts() {
    let mut vocab = vocab("smollm");
    vocab.add_bos = true;
    let tok = Tokenizer::from_gguf_vocab(&vocab).unwrap();
    assert!(tok.add_bos_by_default());
    assert!(!tokenizer("smollm").add_bos_by_default());
    let hello = merged_id("Hello");
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![BEGIN_OF_TEXT, hello]);
    assert_eq!(tok.encode("Hello", false).unwrap(), vec![hello]);
    let prompt = tok.encode_prompt("<|begin_of_text|>Hello", true).unwrap();
    assert_eq!(prompt, vec![BEGIN_OF_TEXT, hello]);
}

#[test]
fn encode_prompt_without_known_bos_collapses_post_processor_duplicate() {
    let mut vocab = vocab("smollm");
    vocab.add_bos = true;
    let mut tok = Tokenizer::from_gguf_vocab(&vocab).unwrap();
    tok.set_bos(None);
    let hello = merged_id("Hello");
    assert_eq!(tok.encode_prompt("Hello", true).unwrap(), vec![BEGIN_OF_TEXT, hello]);
    let prompt = tok.encode_prompt("<|begin_of_text|>Hello", true).unwrap();
    assert_eq!(prompt, vec![BEGIN_OF_TEXT, hello]);
}

#[test]
fn set_bos_overrides_gguf_bos() {
    let mut tok = tokenizer("smollm");
    tok.set_bos(Some(("<|im_start|>".into(), IM_START)));
    assert_eq!(tok.bos(), Some(("<|im_start|>", IM_START)));
    let ids = tok.encode_prompt("Hello", true).unwrap();
    assert_eq!(ids, vec![IM_START, merged_id("Hello")]);
}

#[test]
fn sentencepiece_vocab_is_rejected_clearly() {
    let vocab = GgufVocab { model: "llama".into(), ..vocab("default") };
    match Tokenizer::from_gguf_vocab(&vocab) {
        Err(TextError::InvalidVocab(message)) => assert!(message.contains("\"llama\""), "{message}"),
        other => panic!("expected InvalidVocab, got {other:?}"),
    }
}

#[test]
fn malformed_vocabularies_are_rejected() {
    let mut short_types = vocab("smollm");
    short_types.token_types.pop();
    let mut bad_merge = vocab("smollm");
    bad_merge.merges.push("nospace".into());
    let mut unknown_merge = vocab("smollm");
    unknown_merge.merges.push("Hello zzz".into());
    let empty = GgufVocab { tokens: vec![], ..vocab("smollm") };
    for vocab in [short_types, bad_merge, unknown_merge, empty] {
        let result = Tokenizer::from_gguf_vocab(&vocab);
        assert!(matches!(result, Err(TextError::InvalidVocab(_))), "{result:?}");
    }
}

#[test]
fn from_file_loads_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    let built = tokenizer("llama-bpe");
    built.inner().save(&path, false).unwrap();
    let loaded = Tokenizer::from_file(&path).unwrap();
    let text = "<|im_start|>Hello world 3123<|im_end|>";
    assert_eq!(loaded.encode(text, false).unwrap(), built.encode(text, false).unwrap());
    assert_eq!(loaded.vocab_size(), built.vocab_size());
    assert!(loaded.is_special(IM_END));
    assert_eq!(loaded.bos(), None);
}

#[test]
fn from_file_reports_missing_file_as_io() {
    let result = Tokenizer::from_file(std::path::Path::new("/nonexistent/tokenizer.json"));
    assert!(matches!(result, Err(TextError::Io(_))), "{result:?}");
}

#[test]
fn from_file_reports_bad_json_as_tokenizer_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, "{ not json").unwrap();
    let result = Tokenizer::from_file(&path);
    assert!(matches!(result, Err(TextError::Tokenizer(_))), "{result:?}");
}

#[test]
fn from_file_detects_bos_post_processor() {
    let mut vocab = vocab("smollm");
    vocab.add_bos = true;
    let built = Tokenizer::from_gguf_vocab(&vocab).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    built.inner().save(&path, false).unwrap();
    let mut loaded = Tokenizer::from_file(&path).unwrap();
    assert!(loaded.add_bos_by_default());
    assert_eq!(loaded.encode("Hello", true).unwrap(), vec![BEGIN_OF_TEXT, merged_id("Hello")]);
    loaded.set_add_bos_by_default(false);
    assert!(!loaded.add_bos_by_default());
}

#[test]
fn unknown_ids_decode_to_nothing() {
    let tok = tokenizer("smollm");
    let ids = [merged_id("Hello"), 1_000_000, byte_id(b'!')];
    assert_eq!(tok.decode(&ids, false).unwrap(), "Hello!");
}
