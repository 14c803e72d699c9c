//! Incremental detokenization with the prefix/read-offset technique.

use std::sync::Arc;

use crate::error::TextError;
use crate::tokenizer::Tokenizer;

/// Prompt tokens kept as decoding context (e.g. for leading spaces).
const PROMPT_CONTEXT_TOKENS: usize = 5;

/// Pending tokens after which a tail still ending in U+FFFD is taken as
/// really broken bytes and released (a UTF-8 char spans at most 4 tokens).
const MAX_PENDING_TOKENS: usize = 8;

const REPLACEMENT: char = '\u{FFFD}';

/// Turns a stream of token ids into a stream of stable text.
///
/// Each step decodes the window `ids[prefix..]` and compares it with the
/// already emitted `ids[prefix..read]`; only the new suffix is emitted, and
/// only once it does not end in an incomplete UTF-8 sequence.
#[derive(Debug)]
pub struct IncrementalDetokenizer {
    tokenizer: Arc<Tokenizer>,
    skip_special_tokens: bool,
    /// Decoding window; earlier tokens are dropped once emitted.
    ids: Vec<u32>,
    /// Start of the context tokens in `ids`.
    prefix_offset: usize,
    /// End of the tokens whose text has been emitted.
    read_offset: usize,
    emitted: String,
}

impl IncrementalDetokenizer {
    /// `prompt_ids`' last few tokens give context for the first outputs.
    pub fn new(tokenizer: Arc<Tokenizer>, prompt_ids: &[u32], skip_special_tokens: bool) -> Self {
        let context = &prompt_ids[prompt_ids.len().saturating_sub(PROMPT_CONTEXT_TOKENS)..];
        Self {
            tokenizer,
            skip_special_tokens,
            ids: context.to_vec(),
            prefix_offset: 0,
            read_offset: context.len(),
            emitted: String::new(),
        }
    }

    /// Adds one generated token; returns the newly stable text (may be empty).
    pub fn push(&mut self, token: u32) -> Result<String, TextError> {
        self.ids.push(token);
        let (prefix_text, full_text) = self.decode_window()?;
        let pending = self.ids.len() - self.read_offset;
        let incomplete = full_text.ends_with(REPLACEMENT);
        if incomplete && pending > MAX_PENDING_TOKENS {
            let delta = new_suffix(&prefix_text, &full_text);
            self.restart_window();
            return Ok(self.emit(delta));
        }
        if incomplete || full_text.len() <= prefix_text.len() {
            return Ok(String::new());
        }
        let delta = new_suffix(&prefix_text, &full_text);
        self.advance_window();
        Ok(self.emit(delta))
    }

    /// Releases any held-back text at the end of the stream (lossy).
    pub fn flush(&mut self) -> Result<String, TextError> {
        if self.read_offset == self.ids.len() {
            return Ok(String::new());
        }
        let (prefix_text, full_text) = self.decode_window()?;
        let delta = new_suffix(&prefix_text, &full_text);
        self.advance_window();
        Ok(self.emit(delta))
    }

    /// Everything emitted so far.
    pub fn text(&self) -> &str {
        &self.emitted
    }

    /// Decodes the emitted part of the window and the whole window.
    fn decode_window(&self) -> Result<(String, String), TextError> {
        let window = &self.ids[self.prefix_offset..];
        let emitted_len = self.read_offset - self.prefix_offset;
        let skip = self.skip_special_tokens;
        let prefix_text = self.tokenizer.decode(&window[..emitted_len], skip)?;
        let full_text = self.tokenizer.decode(window, skip)?;
        Ok((prefix_text, full_text))
    }

    /// The newly read tokens become the context of the next step.
    fn advance_window(&mut self) {
        self.ids.drain(..self.read_offset);
        self.prefix_offset = 0;
        self.read_offset = self.ids.len();
    }

    /// Drops all context, so released broken bytes are never re-decoded.
    fn restart_window(&mut self) {
        self.ids.clear();
        self.prefix_offset = 0;
        self.read_offset = 0;
    }

    fn emit(&mut self, delta: String) -> String {
        self.emitted.push_str(&delta);
        delta
    }
}

/// The part of `full` after `prefix`; if the decoder changed the prefix,
/// falls back to cutting at the first char boundary past its length.
fn new_suffix(prefix: &str, full: &str) -> String {
    if let Some(rest) = full.strip_prefix(prefix) {
        return rest.to_string();
    }
    let cut = (prefix.len()..=full.len()).find(|&index| full.is_char_boundary(index)).unwrap_or(full.len());
    full[cut..].to_string()
}
