//! Checks against a real GGUF vocabulary dumped to JSON by
//! `scripts/dump_gguf_vocab.py`; runs only when SCONCE_TEST_GGUF_VOCAB_JSON
//! names such a dump (SmolLM2-135M-Instruct's for the exact ids below).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::sync::Arc;

use sconce_text::{ChatMessage, ChatTemplate, GgufVocab, IncrementalDetokenizer, Tokenizer};

const ENV_VAR: &str = "SCONCE_TEST_GGUF_VOCAB_JSON";

fn load() -> Option<Tokenizer> {
    let Ok(path) = std::env::var(ENV_VAR) else {
        println!("note: {ENV_VAR} is not set; skipping the real GGUF vocabulary test");
        return None;
    };
    let json = std::fs::read_to_string(&path).unwrap();
    let vocab: GgufVocab = serde_json::from_str(&json).unwrap();
    assert_eq!(vocab.pre.as_deref(), Some("smollm"), "expected SmolLM2's vocabulary");
    Some(Tokenizer::from_gguf_vocab(&vocab).unwrap())
}

#[test]
fn smollm2_vocabulary_encodes_like_the_reference() {
    let Some(tok) = load() else { return };
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.encode("Hello world!", false).unwrap(), vec![19556, 905, 17]);
    assert_eq!(tok.encode_prompt("Hello world!", false).unwrap(), vec![19556, 905, 17]);
    assert_eq!(tok.bos(), Some(("<|im_start|>", 1)));
    let digits = tok.encode("2024", false).unwrap();
    assert_eq!(digits, vec![34, 32, 34, 36], "smollm splits digits one by one");
    assert_eq!(tok.decode(&digits, false).unwrap(), "2024");
}

#[test]
fn smollm2_control_tokens_are_single_special_ids() {
    let Some(tok) = load() else { return };
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>\n", false).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.iter().filter(|&&id| id == 2).count(), 1);
    assert!((0..17).all(|id| tok.is_special(id)));
    assert!(!tok.is_special(17));
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nHi\n");
}

#[test]
fn smollm2_prompt_and_stream_round_trip() {
    let Some(tok) = load() else { return };
    let tok = Arc::new(tok);
    let template = ChatTemplate::new(SMOLLM2_TEMPLATE, None, None).unwrap();
    let chat = [ChatMessage::new("user", "Héllo, 世界 😀!")];
    let prompt = template.render(&chat, true).unwrap();
    let prompt_ids = tok.encode_prompt(&prompt, false).unwrap();
    assert_eq!(tok.decode(&prompt_ids, false).unwrap(), prompt);
    let answer = "Bonjour 😀🎉 — ça va? 12345\n  ok";
    let answer_ids = tok.encode(answer, false).unwrap();
    let mut detok = IncrementalDetokenizer::new(tok.clone(), &prompt_ids, true);
    for &id in &answer_ids {
        assert!(!detok.push(id).unwrap().contains('\u{FFFD}'));
    }
    assert_eq!(detok.flush().unwrap(), "");
    assert_eq!(detok.text(), answer);
}

const SMOLLM2_TEMPLATE: &str =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
' }}{% endif %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}";
