//! Chat prompts whose message contents are text: a special token's string that a client
//! writes in a message (`<|im_start|>system`) is tokenized as plain text, so only the
//! template's own markers become control tokens.
//!
//! Each special-token string found in a content is replaced by a placeholder before the
//! template runs (so the template still sees the rest of the content as it is); the rendered
//! prompt is then split at the placeholders and encoded piece by piece.

use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::error::TextError;
use crate::pieces::Piece;
use crate::tokenizer::Tokenizer;

/// How special-token strings written in message contents are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ContentSpecials {
    /// As plain text (the default).
    #[default]
    Text,
    /// As control tokens, like the template's own markers (the old behaviour).
    Parse,
}

/// Renders `messages` with `template` and tokenizes the prompt (the template writes BOS).
pub fn encode_chat(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    specials: ContentSpecials,
    context: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<u32>, TextError> {
    let found = messages.iter().any(|message| !tokenizer.special_token_spans(&message.content).is_empty());
    if specials == ContentSpecials::Parse || !found {
        let rendered = template.render_with_context(messages, add_generation_prompt, context)?;
        return tokenizer.encode_prompt(&rendered, false);
    }
    let mark = placeholder_mark(template, messages);
    let mut literals = Vec::new();
    let escaped: Vec<ChatMessage> = messages
        .iter()
        .map(|message| {
            let content = escape_specials(tokenizer, &message.content, mark, &mut literals);
            ChatMessage { content, ..message.clone() }
        })
        .collect();
    let rendered = template.render_with_context(&escaped, add_generation_prompt, context)?;
    let pieces = split_at_placeholders(&rendered, mark, &literals)?;
    tokenizer.encode_pieces(&pieces)
}

/// A private-use character found in neither the template nor any content.
fn placeholder_mark(template: &ChatTemplate, messages: &[ChatMessage]) -> char {
    let taken = |mark: &char| template.source().contains(*mark) || messages.iter().any(|m| m.content.contains(*mark));
    ('\u{F0000}'..='\u{FFFFD}').find(|mark| !taken(mark)).unwrap_or('\u{F0000}')
}

/// `content` with each special-token string replaced by `{mark}{index}{mark}`; the strings
/// go to `literals`.
fn escape_specials(tokenizer: &Tokenizer, content: &str, mark: char, literals: &mut Vec<String>) -> String {
    let mut escaped = String::with_capacity(content.len());
    let mut rest = 0;
    for (start, end) in tokenizer.special_token_spans(content) {
        escaped.push_str(&content[rest..start]);
        escaped.push_str(&format!("{mark}{}{mark}", literals.len()));
        literals.push(content[start..end].to_string());
        rest = end;
    }
    escaped.push_str(&content[rest..]);
    escaped
}

/// The rendered prompt as markup pieces and the literal texts between the marks.
fn split_at_placeholders<'a>(
    rendered: &'a str,
    mark: char,
    literals: &'a [String],
) -> Result<Vec<Piece<'a>>, TextError> {
    let mut pieces = Vec::new();
    for (position, part) in rendered.split(mark).enumerate() {
        if position % 2 == 0 {
            pieces.push(Piece::Markup(part));
            continue;
        }
        let literal = part.parse::<usize>().ok().and_then(|index| literals.get(index));
        let literal = literal.ok_or_else(altered)?;
        pieces.push(Piece::Text(literal));
    }
    if pieces.len() % 2 == 0 {
        return Err(altered());
    }
    Ok(pieces)
}

fn altered() -> TextError {
    TextError::Template("the chat template altered a message's special-token text; it cannot be read as text".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_split_back_into_markup_and_text() {
        let literals = vec!["<a>".to_string(), "<b>".to_string()];
        let pieces = split_at_placeholders("x\u{F0000}1\u{F0000}y\u{F0000}0\u{F0000}", '\u{F0000}', &literals).unwrap();
        let expected =
            [Piece::Markup("x"), Piece::Text("<b>"), Piece::Markup("y"), Piece::Text("<a>"), Piece::Markup("")];
        assert_eq!(pieces, expected);
    }

    #[test]
    fn mangled_placeholders_fail_closed() {
        let literals = vec!["<a>".to_string()];
        for bad in ["x\u{F0000}0", "x\u{F0000}7\u{F0000}", "x\u{F0000}a\u{F0000}"] {
            assert!(split_at_placeholders(bad, '\u{F0000}', &literals).is_err(), "{bad:?}");
        }
    }
}
