use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde_json::Value;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::Tokenizer;

use super::*;

const FILES: [&str; 5] =
    ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xtask-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn generated(tag: &str, seed: u64) -> Scratch {
    let dir = Scratch::new(tag);
    generate(&dir.0, seed).unwrap();
    dir
}

fn read_all(dir: &Path) -> BTreeMap<&'static str, Vec<u8>> {
    FILES.iter().map(|f| (*f, fs::read(dir.join(f)).unwrap())).collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn same_seed_gives_identical_bytes() {
    let (a, b) = (generated("seed-a", 7), generated("seed-b", 7));
    assert_eq!(read_all(&a.0), read_all(&b.0));
    let c = generated("seed-c", 8);
    let weights = |d: &Scratch| fs::read(d.0.join("model.safetensors")).unwrap();
    assert_ne!(weights(&a), weights(&c));
}

#[test]
fn total_size_under_one_megabyte() {
    let dir = generated("size", DEFAULT_SEED);
    let total: usize = read_all(&dir.0).values().map(Vec::len).sum();
    assert!(total < 1 << 20, "{total} bytes");
}

/// Expected HF shapes, derived from `config.json` alone.
fn shapes_from_config(cfg: &Value) -> BTreeMap<String, Vec<usize>> {
    let get = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let (h, m, v, hd) = (get("hidden_size"), get("intermediate_size"), get("vocab_size"), get("head_dim"));
    let (q, kv) = (get("num_attention_heads") * hd, get("num_key_value_heads") * hd);
    let mut s = BTreeMap::new();
    s.insert("model.embed_tokens.weight".to_string(), vec![v, h]);
    s.insert("model.norm.weight".to_string(), vec![h]);
    s.insert("lm_head.weight".to_string(), vec![v, h]);
    for i in 0..get("num_hidden_layers") {
        let p = |n: &str| format!("model.layers.{i}.{n}.weight");
        s.insert(p("input_layernorm"), vec![h]);
        s.insert(p("post_attention_layernorm"), vec![h]);
        s.insert(p("self_attn.q_proj"), vec![q, h]);
        s.insert(p("self_attn.k_proj"), vec![kv, h]);
        s.insert(p("self_attn.v_proj"), vec![kv, h]);
        s.insert(p("self_attn.o_proj"), vec![h, q]);
        s.insert(p("mlp.gate_proj"), vec![m, h]);
        s.insert(p("mlp.up_proj"), vec![m, h]);
        s.insert(p("mlp.down_proj"), vec![h, m]);
    }
    s
}

#[test]
fn config_matches_tensor_shapes() {
    let dir = generated("shapes", DEFAULT_SEED);
    let cfg = read_json(&dir.0.join("config.json"));
    let tensors = candle_core::safetensors::load(dir.0.join("model.safetensors"), &Device::Cpu).unwrap();
    let actual: BTreeMap<String, Vec<usize>> = tensors.iter().map(|(k, t)| (k.clone(), t.dims().to_vec())).collect();
    assert_eq!(actual, shapes_from_config(&cfg));
    assert!(tensors.values().all(|t| t.dtype() == DType::F32));
    let tok = Tokenizer::from_file(dir.0.join("tokenizer.json")).unwrap();
    assert_eq!(cfg["vocab_size"].as_u64().unwrap() as usize, tok.get_vocab_size(true));
}

#[test]
fn saved_tokenizer_round_trips_and_has_specials() {
    let dir = generated("tok", DEFAULT_SEED);
    let tok = Tokenizer::from_file(dir.0.join("tokenizer.json")).unwrap();
    tokenizer::check_round_trip(&tok).unwrap();
    for (id, name) in tokenizer::SPECIAL_TOKENS.iter().enumerate() {
        assert_eq!(tok.token_to_id(name), Some(id as u32));
    }
    let enc = tok.encode("<|im_start|>user\nthe world<|im_end|>", false).unwrap();
    assert_eq!(enc.get_ids()[0], 1);
    assert_eq!(*enc.get_ids().last().unwrap(), 2);
    // Merges fire: " the" is one token.
    assert_eq!(tok.encode(" the", false).unwrap().get_ids().len(), 1);
}

#[test]
fn byte_table_matches_tokenizers_alphabet() {
    let ours: HashSet<char> = tokenizer::bytes_to_unicode().into_iter().collect();
    let theirs: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    assert_eq!(ours.len(), 256);
    assert_eq!(ours, theirs);
}

#[test]
fn side_configs_agree() {
    let dir = generated("side", DEFAULT_SEED);
    let gen = read_json(&dir.0.join("generation_config.json"));
    assert_eq!(gen["eos_token_id"], serde_json::json!([2, 0]));
    let tc = read_json(&dir.0.join("tokenizer_config.json"));
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["chat_template"], CHAT_TEMPLATE);
    assert!(tc["bos_token"].is_null());
}

/// The committed fixture must be what the generator produces for seed 42.
#[test]
fn committed_fixture_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DEFAULT_OUT);
    let dir = generated("fixture", DEFAULT_SEED);
    let fresh = read_all(&dir.0);
    for (name, bytes) in read_all(&root) {
        assert!(fresh[name] == bytes, "{name} is stale: rerun `cargo run -p xtask -- gen-tiny-model`");
    }
}
