//! The model's tokenizer as llguidance sees it: each token's bytes in a trie
//! (`toktrie_hf_tokenizers` reads the Hugging Face tokenizer's JSON form).

use sconce_text::Tokenizer;
use toktrie::TokEnv;
use toktrie_hf_tokenizers::ByteTokenizer;

pub fn tok_env(tokenizer: &Tokenizer, eos_ids: &[u32], vocab_size: usize) -> Result<TokEnv, String> {
    let json = tokenizer.inner().to_string(false).map_err(|e| e.to_string())?;
    let mut bytes = ByteTokenizer::from_json_bytes(json.as_bytes()).map_err(|e| e.to_string())?;
    let known = bytes.tokrx_info().vocab_size;
    let eos: Vec<u32> = eos_ids.iter().copied().filter(|&id| id < known).collect();
    if !eos.is_empty() {
        bytes.set_eos_tokens(&eos);
    }
    let width = vocab_size.max(known as usize);
    bytes.into_tok_env(Some(width)).map_err(|e| e.to_string())
}
