#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too
mod common;

use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use sconce_text::{IncrementalDetokenizer, Tokenizer};

const REPLACEMENT: char = '\u{FFFD}';

/// Pushes every id, then flushes; returns the emitted pieces.
fn stream(tok: &Arc<Tokenizer>, prompt: &[u32], ids: &[u32], skip: bool) -> Vec<String> {
    let mut detok = IncrementalDetokenizer::new(tok.clone(), prompt, skip);
    let mut pieces: Vec<String> = ids.iter().map(|&id| detok.push(id).unwrap()).collect();
    pieces.push(detok.flush().unwrap());
    assert_eq!(detok.text(), pieces.concat());
    pieces
}

#[test]
fn emoji_split_over_four_byte_tokens_is_emitted_whole() {
    let tok = shared_tokenizer();
    let emoji = "😀".as_bytes();
    assert_eq!(emoji.len(), 4);
    let mut ids = vec![merged_id("Hello"), merged_id("Ġworld"), byte_id(b' ')];
    ids.extend(emoji.iter().map(|&b| byte_id(b)));
    ids.push(byte_id(b'!'));
    let pieces = stream(&tok, &[], &ids, false);
    assert_eq!(pieces, ["Hello", " world", " ", "", "", "", "😀", "!", ""]);
    assert_eq!(pieces.concat(), tok.decode(&ids, false).unwrap());
    assert!(pieces.iter().all(|p| !p.contains(REPLACEMENT)));
}

#[test]
fn prompt_context_keeps_leading_space() {
    let tok = shared_tokenizer();
    let prompt = tok.encode("<|im_start|>Hello", false).unwrap();
    let pieces = stream(&tok, &prompt, &[merged_id("Ġworld"), byte_id(b'!')], false);
    assert_eq!(pieces.concat(), " world!");
    assert_eq!(pieces[0], " world");
}

#[test]
fn prompt_ending_mid_char_does_not_leak_into_output() {
    let tok = shared_tokenizer();
    let euro = "€".as_bytes();
    // Only the context tail is re-decoded; it starts mid-character here.
    let prompt: Vec<u32> = [b'a', b'b', b'c', b'd', euro[0], euro[1], euro[2]].iter().map(|&b| byte_id(b)).collect();
    let pieces = stream(&tok, &prompt, &[merged_id("Hello")], false);
    assert_eq!(pieces.concat(), "Hello");
}

#[test]
fn special_tokens_are_skipped_or_kept() {
    let tok = shared_tokenizer();
    let ids = [merged_id("Hello"), IM_END, merged_id("Ġworld")];
    assert_eq!(stream(&tok, &[], &ids, true).concat(), "Hello world");
    let kept = stream(&tok, &[], &ids, false);
    assert_eq!(kept, ["Hello", "<|im_end|>", " world", ""]);
}

#[test]
fn flush_releases_incomplete_bytes_lossily() {
    let tok = shared_tokenizer();
    let emoji = "😀".as_bytes();
    let ids = [merged_id("Hello"), byte_id(emoji[0]), byte_id(emoji[1])];
    let pieces = stream(&tok, &[], &ids, false);
    assert_eq!(pieces[..3], ["Hello", "", ""]);
    assert_eq!(pieces[3], REPLACEMENT.to_string());
    assert_eq!(pieces.concat(), tok.decode(&ids, false).unwrap());
}

#[test]
fn flush_without_pending_tokens_is_empty_and_idempotent() {
    let tok = shared_tokenizer();
    let mut detok = IncrementalDetokenizer::new(tok, &[], true);
    assert_eq!(detok.flush().unwrap(), "");
    assert_eq!(detok.push(merged_id("Hello")).unwrap(), "Hello");
    assert_eq!(detok.flush().unwrap(), "");
    assert_eq!(detok.text(), "Hello");
}

#[test]
fn long_run_of_broken_bytes_is_eventually_released() {
    let tok = shared_tokenizer();
    let mut detok = IncrementalDetokenizer::new(tok, &[], false);
    let emitted: String = (0..20).map(|_| detok.push(byte_id(0xF0)).unwrap()).collect();
    assert!(emitted.chars().count() >= 8, "{emitted:?}");
    assert!(emitted.chars().all(|c| c == REPLACEMENT));
    assert_eq!(detok.push(merged_id("Hello")).unwrap().chars().last(), Some('o'));
}

fn segment() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["Hello", " world", "€", "é", "😀", "世界", "123", " ", "\n", "!", "ll"]),
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn streamed_text_equals_full_decode(
        segments in prop::collection::vec((segment(), any::<bool>()), 1..6),
        skip in any::<bool>(),
        prompt in segment(),
    ) {
        let tok = shared_tokenizer();
        let mut ids = Vec::new();
        for (text, then_special) in &segments {
            ids.extend(tok.encode(text, false).unwrap());
            if *then_special { ids.push(IM_END); }
        }
        let prompt_ids = tok.encode(&prompt, false).unwrap();
        let pieces = stream(&tok, &prompt_ids, &ids, skip);
        prop_assert_eq!(pieces.concat(), tok.decode(&ids, skip).unwrap());
        prop_assert!(pieces.iter().all(|p| !p.contains(REPLACEMENT)));
    }
}
