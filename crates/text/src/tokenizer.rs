//! Thin wrapper around `tokenizers::Tokenizer` with BOS-aware prompt encoding.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};
use tokenizers::PostProcessor;

use crate::error::TextError;
use crate::gguf_vocab::{build_gguf_tokenizer, GgufVocab};
use crate::pieces::{AnchoredTokenizers, Piece};

/// A loaded tokenizer (from `tokenizer.json` or a GGUF vocabulary).
///
/// It is `Send + Sync`; share it behind an `Arc`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special_ids: HashSet<u32>,
    vocab_size: usize,
    bos: Option<(String, u32)>,
    add_bos_by_default: bool,
    /// Finds the special tokens' strings in text.
    specials: Option<AhoCorasick>,
    /// Built on first use by [`Tokenizer::encode_pieces`].
    anchored: OnceLock<Result<AnchoredTokenizers, String>>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("special_tokens", &self.special_ids.len())
            .field("bos", &self.bos)
            .field("add_bos_by_default", &self.add_bos_by_default)
            .finish()
    }
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, TextError> {
        let bytes = std::fs::read(path)?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(TextError::tokenizer)?;
        Ok(Self::from_inner(inner, 0))
    }

    /// Builds a byte-level BPE tokenizer from a GGUF vocabulary.
    ///
    /// The BOS token is preset from `bos_id`; when `add_bos` is set,
    /// `encode(text, true)` prepends it like a Hugging Face post-processor.
    pub fn from_gguf_vocab(vocab: &GgufVocab) -> Result<Self, TextError> {
        let inner = build_gguf_tokenizer(vocab)?;
        let mut tokenizer = Self::from_inner(inner, vocab.tokens.len());
        tokenizer.add_bos_by_default = vocab.add_bos;
        tokenizer.bos = vocab.bos_id.and_then(|id| Some((vocab.tokens.get(id as usize)?.clone(), id)));
        Ok(tokenizer)
    }

    /// Wraps an already built `tokenizers::Tokenizer`.
    pub fn from_tokenizers(inner: tokenizers::Tokenizer) -> Self {
        Self::from_inner(inner, 0)
    }

    fn from_inner(inner: tokenizers::Tokenizer, min_vocab_size: usize) -> Self {
        let added = inner.get_added_tokens_decoder();
        let special_ids = added.iter().filter(|(_, token)| token.special).map(|(id, _)| *id).collect();
        let special_texts = added.values().filter(|token| token.special && !token.content.is_empty());
        let patterns: Vec<&str> = special_texts.map(|token| token.content.as_str()).collect();
        let specials = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(patterns).ok();
        let max_id = inner.get_vocab(true).values().copied().max();
        let vocab_size = max_id.map_or(0, |id| id as usize + 1).max(min_vocab_size);
        let add_bos_by_default = inner.get_post_processor().is_some_and(|post| post.added_tokens(false) > 0);
        let anchored = OnceLock::new();
        Self { inner, special_ids, vocab_size, bos: None, add_bos_by_default, specials, anchored }
    }

    /// Byte ranges of the special tokens' strings written in `text`, in order.
    pub fn special_token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        let Some(specials) = &self.specials else { return Vec::new() };
        specials.find_iter(text).map(|found| (found.start(), found.end())).collect()
    }

    /// Encodes `pieces` in order as one prompt (no BOS or other post-processing): markup
    /// with special tokens recognised, text with their strings read as plain text.
    pub fn encode_pieces(&self, pieces: &[Piece<'_>]) -> Result<Vec<u32>, TextError> {
        let anchored = self.anchored.get_or_init(|| AnchoredTokenizers::new(&self.inner).map_err(|e| e.to_string()));
        let anchored = anchored.as_ref().map_err(|e| TextError::Tokenizer(e.clone()))?;
        let mut ids = Vec::new();
        let mut follows = false;
        for &piece in pieces {
            let (Piece::Markup(text) | Piece::Text(text)) = piece;
            if text.is_empty() {
                continue;
            }
            ids.extend(anchored.encode(piece, follows)?);
            follows = true;
        }
        Ok(ids)
    }

    /// Encodes text. `add_special_tokens` runs the post-processor (e.g. BOS);
    /// special tokens written in the text are always recognised.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TextError> {
        let encoding = self.inner.encode_fast(text, add_special_tokens).map_err(TextError::tokenizer)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes ids to text; unknown ids are ignored.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TextError> {
        self.inner.decode(ids, skip_special_tokens).map_err(TextError::tokenizer)
    }

    /// Number of ids, added tokens included (highest id + 1).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Whether `id` is a special (control) added token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// Sets the BOS token text and id used by [`Tokenizer::encode_prompt`].
    pub fn set_bos(&mut self, bos: Option<(String, u32)>) {
        self.bos = bos;
    }

    pub fn bos(&self) -> Option<(&str, u32)> {
        self.bos.as_ref().map(|(text, id)| (text.as_str(), *id))
    }

    /// Whether prompts of this model start with BOS: the GGUF `add_bos`
    /// flag, or for `tokenizer.json` whether its post-processor adds tokens.
    /// Override it from `tokenizer_config.json`'s `add_bos_token`.
    pub fn add_bos_by_default(&self) -> bool {
        self.add_bos_by_default
    }

    pub fn set_add_bos_by_default(&mut self, add_bos: bool) {
        self.add_bos_by_default = add_bos;
    }

    /// Encodes a prompt, adding BOS only when requested and never twice.
    ///
    /// With a BOS set, the post-processor is not run: the text is encoded
    /// plainly and BOS is prepended unless it already comes first (e.g. the
    /// chat template wrote it). Without a BOS set, `add_bos` runs the
    /// post-processor and a doubled leading token is collapsed.
    pub fn encode_prompt(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TextError> {
        if !add_bos {
            return self.encode(text, false);
        }
        match self.bos {
            Some((_, bos_id)) => {
                let mut ids = self.encode(text, false)?;
                if ids.first() != Some(&bos_id) {
                    ids.insert(0, bos_id);
                }
                Ok(ids)
            }
            None => self.encode_with_post_processor(text),
        }
    }

    fn encode_with_post_processor(&self, text: &str) -> Result<Vec<u32>, TextError> {
        let mut ids = self.encode(text, true)?;
        let plain_first = self.encode(text, false)?.first().copied();
        let doubled = ids.len() >= 2 && ids[0] == ids[1] && plain_first == Some(ids[0]);
        if doubled && self.is_special(ids[0]) {
            ids.remove(0);
        }
        Ok(ids)
    }

    /// The wrapped `tokenizers::Tokenizer`.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
