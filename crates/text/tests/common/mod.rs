//! Shared helpers: a small synthetic byte-level BPE vocabulary.
#![allow(dead_code)]

use std::sync::Arc;

use sconce_text::{GgufVocab, Tokenizer};

pub const ENDOFTEXT: u32 = 0;
pub const IM_START: u32 = 1;
pub const IM_END: u32 = 2;
pub const TOOL: u32 = 3;
pub const BEGIN_OF_TEXT: u32 = 4;
/// Id of the token for byte 0; byte `b` has id `FIRST_BYTE_ID + b`.
pub const FIRST_BYTE_ID: u32 = 5;

/// Merges in rank order; each produces the concatenation of its two sides.
pub const MERGES: &[&str] = &["H e", "l l", "He ll", "Hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2", "12 3"];

/// GPT-2's byte-to-unicode map used by byte-level BPE.
pub fn byte_char(byte: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(byte) {
        return char::from(byte);
    }
    let rank = (0..byte).filter(|&b| !printable(b)).count() as u32;
    char::from_u32(256 + rank).unwrap()
}

pub fn byte_id(byte: u8) -> u32 {
    FIRST_BYTE_ID + u32::from(byte)
}

/// Token strings: 5 added tokens, 256 bytes, then one per merge.
pub fn tokens() -> Vec<String> {
    let mut tokens: Vec<String> =
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"].iter().map(|t| t.to_string()).collect();
    tokens.push("<|begin_of_text|>".into());
    tokens.extend((0..=255u8).map(|b| byte_char(b).to_string()));
    tokens.extend(MERGES.iter().map(|merge| merge.replace(' ', "")));
    tokens
}

/// Id of a merged token such as "Hello" or "Ġworld".
pub fn merged_id(token: &str) -> u32 {
    let index = MERGES.iter().position(|merge| merge.replace(' ', "") == token).unwrap();
    FIRST_BYTE_ID + 256 + index as u32
}

pub fn vocab(pre: &str) -> GgufVocab {
    let tokens = tokens();
    let mut token_types = vec![1; tokens.len()];
    token_types[ENDOFTEXT as usize] = 3;
    token_types[IM_START as usize] = 3;
    token_types[IM_END as usize] = 3;
    token_types[TOOL as usize] = 4;
    token_types[BEGIN_OF_TEXT as usize] = 3;
    GgufVocab {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        tokens,
        merges: MERGES.iter().map(|m| m.to_string()).collect(),
        token_types,
        bos_id: Some(BEGIN_OF_TEXT),
        eos_id: Some(IM_END),
        unk_id: Some(ENDOFTEXT),
        add_bos: false,
    }
}

pub fn tokenizer(pre: &str) -> Tokenizer {
    Tokenizer::from_gguf_vocab(&vocab(pre)).unwrap()
}

pub fn shared_tokenizer() -> Arc<Tokenizer> {
    Arc::new(tokenizer("smollm"))
}
