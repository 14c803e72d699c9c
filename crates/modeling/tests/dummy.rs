//! Synthetic weights build and run on the CPU, and the GPU's fused-kernel path of the decoder
//! (run here through the kernels' CPU references) matches the plain path.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use sconce_modeling::{byte_tokenizer, dummy_config, load_dummy, ModelConfig, ReferenceAttention};

const TINY_LLAMA: &str = r#"{
  "model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 300,
  "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 128,
  "tie_word_embeddings": false, "eos_token_id": 2
}"#;

fn tiny() -> ModelConfig {
    ModelConfig::from_hf_json(TINY_LLAMA).unwrap()
}

#[test]
fn dummy_llama_builds_and_runs_on_cpu() {
    let dev = Device::Cpu;
    let model = load_dummy("tiny", &tiny(), DType::F32, &dev).unwrap();
    let ids = Tensor::new(&[1u32, 5, 7, 260, 3], &dev).unwrap();
    let pos = Tensor::new(&[0u32, 1, 2, 0, 1], &dev).unwrap();
    let attn = ReferenceAttention { seq_lens: vec![3, 2] };
    let logits = model.decoder.forward(&ids, &pos, &attn, None).unwrap();
    assert_eq!(logits.dims(), &[5, 300]);
    let values: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(values.iter().any(|v| *v != 0.0));
}

#[test]
fn fused_path_matches_the_plain_path() {
    let dev = Device::Cpu;
    let mut decoder = load_dummy("tiny", &tiny(), DType::F32, &dev).unwrap().decoder;
    let ids = Tensor::new(&[4u32, 9, 200, 17, 33, 8], &dev).unwrap();
    let pos = Tensor::new(&[0u32, 1, 2, 3, 0, 1], &dev).unwrap();
    let attn = ReferenceAttention { seq_lens: vec![4, 2] };
    let plain = decoder.forward(&ids, &pos, &attn, None).unwrap();
    decoder.set_fused(true);
    let fused = decoder.forward(&ids, &pos, &attn, None).unwrap();
    let diff: f32 = (plain - fused).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert!(diff < 1e-4, "max |plain - fused| = {diff}");
}

#[test]
fn catalog_configs_resolve_for_dummy_loading() {
    for name in ["llama-3.2-1b", "llama-3.1-8b", "qwen2.5-7b"] {
        let config = dummy_config(name).unwrap();
        assert!(config.num_layers > 0 && config.vocab_size > 100_000, "{name}");
    }
    assert!(dummy_config("no-such-model").is_err());
}

#[test]
fn byte_tokenizer_round_trips_text() {
    let tok = byte_tokenizer().unwrap();
    let ids = tok.encode("héllo, world\n", false).unwrap();
    assert_eq!(ids.len(), "héllo, world\n".len());
    assert_eq!(tok.decode(&ids, true).unwrap(), "héllo, world\n");
}
