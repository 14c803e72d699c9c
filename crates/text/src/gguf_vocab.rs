//! Builds a byte-level BPE tokenizer from the vocabulary stored in GGUF metadata.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use serde::{Deserialize, Serialize};

use crate::error::TextError;

/// Llama-3 pre-tokenizer regex (numbers in groups of up to three digits).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2 pre-tokenizer regex (single digits).
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Vocabulary parts read from a GGUF file's `tokenizer.ggml.*` metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: only "gpt2" (byte-level BPE) is supported.
    pub model: String,
    /// `tokenizer.ggml.pre`: pre-tokenizer name ("smollm", "llama-bpe", "qwen2", ...).
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    /// Merges as "left right" pairs.
    pub merges: Vec<String>,
    /// Per-token [`GgufTokenType`] codes; may be empty (all normal).
    pub token_types: Vec<i32>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub add_bos: bool,
}

/// Token type codes used by GGUF (`tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufTokenType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl GgufTokenType {
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(Self::Normal),
            2 => Some(Self::Unknown),
            3 => Some(Self::Control),
            4 => Some(Self::UserDefined),
            5 => Some(Self::Unused),
            6 => Some(Self::Byte),
            _ => None,
        }
    }
}

/// How text is split before BPE, chosen from the GGUF `pre` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreTokenizerKind {
    /// GPT-2 regex inside the byte-level pre-tokenizer.
    Gpt2,
    /// Digits split one by one, then the GPT-2 regex.
    IndividualDigits,
    Llama3,
    Qwen2,
}

impl PreTokenizerKind {
    fn from_pre(pre: Option<&str>) -> Self {
        match pre.unwrap_or("default") {
            "smollm" | "starcoder" | "refact" => Self::IndividualDigits,
            "llama3" | "llama-bpe" | "falcon3" | "pixtral" | "dbrx" | "smaug-bpe" => Self::Llama3,
            "qwen2" | "stablelm2" | "deepseek-r1-qwen" | "megrez" => Self::Qwen2,
            _ => Self::Gpt2,
        }
    }

    fn build(self) -> Result<PreTokenizerWrapper, TextError> {
        let byte_level = ByteLevel::default().add_prefix_space(false);
        let split = |regex: &str| -> Result<PreTokenizerWrapper, TextError> {
            let pattern = SplitPattern::Regex(regex.to_string());
            let split = Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
                .map_err(|err| TextError::InvalidVocab(format!("pre-tokenizer regex: {err}")))?;
            Ok(split.into())
        };
        let parts: Vec<PreTokenizerWrapper> = match self {
            Self::Gpt2 => return Ok(byte_level.use_regex(true).into()),
            Self::IndividualDigits => vec![Digits::new(true).into(), byte_level.use_regex(true).into()],
            Self::Llama3 => vec![split(LLAMA3_REGEX)?, byte_level.use_regex(false).into()],
            Self::Qwen2 => vec![split(QWEN2_REGEX)?, byte_level.use_regex(false).into()],
        };
        Ok(Sequence::new(parts).into())
    }
}

/// Builds the `tokenizers` tokenizer for a "gpt2" GGUF vocabulary.
pub(crate) fn build_gguf_tokenizer(v: &GgufVocab) -> Result<tokenizers::Tokenizer, TextError> {
    check_vocab(v)?;
    let kind = PreTokenizerKind::from_pre(v.pre.as_deref());
    let mut tokenizer = tokenizers::Tokenizer::new(build_bpe(v, kind)?);
    tokenizer.with_pre_tokenizer(Some(kind.build()?));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    if let Some(bos) = bos_token(v).filter(|_| v.add_bos) {
        tokenizer.with_post_processor(Some(bos_template(bos)?));
    }
    add_special_and_user_tokens(&mut tokenizer, v);
    Ok(tokenizer)
}

fn check_vocab(v: &GgufVocab) -> Result<(), TextError> {
    if v.model != "gpt2" {
        return Err(TextError::InvalidVocab(format!(
            "unsupported GGUF tokenizer model {:?}: only \"gpt2\" (byte-level BPE) is supported",
            v.model
        )));
    }
    if v.tokens.is_empty() {
        return Err(TextError::InvalidVocab("the vocabulary has no tokens".into()));
    }
    if !v.token_types.is_empty() && v.token_types.len() != v.tokens.len() {
        return Err(TextError::InvalidVocab(format!(
            "{} token types for {} tokens",
            v.token_types.len(),
            v.tokens.len()
        )));
    }
    Ok(())
}

fn build_bpe(v: &GgufVocab, kind: PreTokenizerKind) -> Result<BPE, TextError> {
    let mut vocab = Vocab::default();
    for (id, token) in (0u32..).zip(&v.tokens) {
        // Duplicated token strings keep their first id.
        vocab.entry(token.clone()).or_insert(id);
    }
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, parse_merges(&v.merges)?)
        .ignore_merges(kind == PreTokenizerKind::Llama3);
    if let Some(unk) = v.unk_id.and_then(|id| v.tokens.get(id as usize)) {
        builder = builder.unk_token(unk.clone());
    }
    builder.build().map_err(|err| TextError::InvalidVocab(format!("BPE model: {err}")))
}

fn parse_merges(merges: &[String]) -> Result<Vec<(String, String)>, TextError> {
    merges
        .iter()
        .map(|merge| {
            merge
                .split_once(' ')
                .map(|(left, right)| (left.to_string(), right.to_string()))
                .ok_or_else(|| TextError::InvalidVocab(format!("merge without a space: {merge:?}")))
        })
        .collect()
}

fn bos_token(v: &GgufVocab) -> Option<(String, u32)> {
    let id = v.bos_id?;
    Some((v.tokens.get(id as usize)?.clone(), id))
}

/// Post-processor that prepends BOS, as Hugging Face does for such models.
fn bos_template((text, id): (String, u32)) -> Result<TemplateProcessing, TextError> {
    let invalid = |err: String| TextError::InvalidVocab(format!("BOS post-processor: {err}"));
    TemplateProcessing::builder()
        .try_single(vec![text.clone(), "$A".to_string()])
        .map_err(invalid)?
        .try_pair(vec![text.clone(), "$A".to_string(), text.clone(), "$B:1".to_string()])
        .map_err(invalid)?
        .special_tokens(vec![(text, id)])
        .build()
        .map_err(|err| invalid(err.to_string()))
}

/// Control tokens become special added tokens, user-defined ones plain
/// added tokens, so both encode to a single id when written in text.
fn add_special_and_user_tokens(tokenizer: &mut tokenizers::Tokenizer, v: &GgufVocab) {
    let mut special = Vec::new();
    let mut user_defined = Vec::new();
    for (token, code) in v.tokens.iter().zip(&v.token_types) {
        match GgufTokenType::from_code(*code) {
            Some(GgufTokenType::Control) => special.push(AddedToken::from(token.clone(), true)),
            Some(GgufTokenType::UserDefined) => user_defined.push(AddedToken::from(token.clone(), false)),
            _ => {}
        }
    }
    tokenizer.add_special_tokens(&special);
    tokenizer.add_tokens(&user_defined);
}
