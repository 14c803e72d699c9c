//! Encoding a prompt piece by piece: markup with special tokens recognised, text with them
//! read as plain text. Each piece after the first is encoded behind an anchor token, so it
//! tokenizes as it would in the middle of the prompt (no second "first word" prefix space).

use tokenizers::AddedToken;

use crate::error::TextError;

/// One piece of a prompt, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Written by the template: special-token strings are control tokens.
    Markup(&'a str),
    /// Written by a client: special-token strings are plain text.
    Text(&'a str),
}

/// Marks where a piece starts; an added token (not special) that no prompt contains.
const ANCHOR: &str = "\u{F8FF}sconce-piece-anchor\u{F8FF}";

/// Two copies of the tokenizer that know the anchor: one reads special tokens, one does not.
pub(crate) struct AnchoredTokenizers {
    markup: tokenizers::Tokenizer,
    text: tokenizers::Tokenizer,
    anchor: u32,
}

impl AnchoredTokenizers {
    pub(crate) fn new(inner: &tokenizers::Tokenizer) -> Result<Self, TextError> {
        let mut markup = inner.clone();
        markup.add_tokens(&[AddedToken::from(ANCHOR, false).normalized(false)]);
        let anchor = markup.token_to_id(ANCHOR).ok_or_else(|| TextError::Tokenizer("no anchor token".into()))?;
        let mut text = markup.clone();
        text.set_encode_special_tokens(true);
        Ok(Self { markup, text, anchor })
    }

    /// Encodes `piece`; `follows` encodes it as if it followed other text (the anchor is dropped).
    pub(crate) fn encode(&self, piece: Piece<'_>, follows: bool) -> Result<Vec<u32>, TextError> {
        let (tokenizer, text) = match piece {
            Piece::Markup(text) => (&self.markup, text),
            Piece::Text(text) => (&self.text, text),
        };
        let input = if follows { format!("{ANCHOR}{text}") } else { text.to_string() };
        let encoding = tokenizer.encode_fast(input, false).map_err(TextError::tokenizer)?;
        let ids = encoding.get_ids();
        let ids = match ids.split_first() {
            Some((&first, rest)) if follows && first == self.anchor => rest,
            _ if follows => return Err(reserved()),
            _ => ids,
        };
        if ids.contains(&self.anchor) {
            return Err(reserved());
        }
        Ok(ids.to_vec())
    }
}

fn reserved() -> TextError {
    TextError::Tokenizer("the prompt contains text reserved by the tokenizer".into())
}
