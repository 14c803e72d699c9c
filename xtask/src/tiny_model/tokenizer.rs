//! A small byte-level BPE tokenizer built with the `tokenizers` crate.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Result};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// Special tokens, in id order (ids 0, 1, 2).
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Merge rules, one `left right` pair per line, in rank order.
const MERGES: &str = include_str!("merges.txt");

/// Strings that must survive encode/decode unchanged.
pub const ROUND_TRIP_SAMPLES: [&str; 4] = [
    "Hello, world! The quick brown fox jumps over the lazy dog.\n\n  x = 42;",
    "naïve café — “quotes” 日本語テキスト 🦀🚀",
    "<|im_start|>user\nhi<|im_end|>\n",
    "",
];

/// The GPT-2 `bytes_to_unicode` table: byte value -> printable char.
pub fn bytes_to_unicode() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut shifted = 0;
    (0u32..256)
        .map(|b| {
            let code = if printable(b) {
                b
            } else {
                shifted += 1;
                255 + shifted
            };
            char::from_u32(code).expect("byte-level code points are valid chars")
        })
        .collect()
}

fn parse_merges() -> Result<Vec<(String, String)>> {
    MERGES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match line.split_once(' ') {
            Some((a, b)) if !b.contains(' ') => Ok((a.to_owned(), b.to_owned())),
            _ => Err(anyhow!("bad merge line {line:?}")),
        })
        .collect()
}

/// Specials, then the 256 byte symbols, then one token per merge.
fn build_vocab(merges: &[(String, String)]) -> Result<HashMap<String, u32>> {
    let symbols = bytes_to_unicode().into_iter().map(String::from);
    let mut vocab = HashMap::new();
    for tok in SPECIAL_TOKENS.iter().map(|s| s.to_string()).chain(symbols) {
        let id = u32::try_from(vocab.len())?;
        ensure!(vocab.insert(tok.clone(), id).is_none(), "duplicate {tok:?}");
    }
    for (a, b) in merges {
        ensure!(vocab.contains_key(a) && vocab.contains_key(b), "merge {a} {b}: unknown part");
        let id = u32::try_from(vocab.len())?;
        let tok = format!("{a}{b}");
        ensure!(vocab.insert(tok.clone(), id).is_none(), "duplicate {tok:?}");
    }
    Ok(vocab)
}

/// Builds the tokenizer: BPE + ByteLevel pre-tokenizer/decoder + specials.
pub fn build() -> Result<Tokenizer> {
    let merges = parse_merges()?;
    let vocab = build_vocab(&merges)?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
        .build()
        .map_err(|e| anyhow!("building BPE: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevel::default()));
    let specials: Vec<_> = SPECIAL_TOKENS.iter().map(|s| AddedToken::from(*s, true)).collect();
    tok.add_special_tokens(&specials);
    Ok(tok)
}

/// Fails unless every sample decodes back to itself.
pub fn check_round_trip(tok: &Tokenizer) -> Result<()> {
    for text in ROUND_TRIP_SAMPLES {
        let enc = tok.encode(text, false).map_err(|e| anyhow!("encode: {e}"))?;
        let back = tok.decode(enc.get_ids(), false).map_err(|e| anyhow!("decode: {e}"))?;
        if back != text {
            bail!("round trip failed: {text:?} -> {back:?}");
        }
    }
    Ok(())
}

/// Checks the special-token ids, then writes `tokenizer.json`.
pub fn write(tok: &Tokenizer, path: &Path) -> Result<()> {
    for (id, name) in SPECIAL_TOKENS.iter().enumerate() {
        ensure!(tok.token_to_id(name) == Some(u32::try_from(id)?), "{name} id");
    }
    check_round_trip(tok)?;
    tok.save(path, false).map_err(|e| anyhow!("saving {}: {e}", path.display()))
}
