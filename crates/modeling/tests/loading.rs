//! Loading the tiny fixture, and typed errors for damaged files.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sconce_modeling::{causal_attention, load_hf_folder, ModelError, ReferenceAttention};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-llama")
}

fn copy_fixture(to: &Path) {
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn tiny_fixture_loads_in_every_dtype_and_runs() {
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let model = load_hf_folder(&fixture(), dtype, &Device::Cpu).unwrap();
        let ids = Tensor::from_slice(&[5u32, 6, 7], 3, &Device::Cpu).unwrap();
        let pos = Tensor::from_slice(&[0u32, 1, 2], 3, &Device::Cpu).unwrap();
        let logits = model.decoder.forward(&ids, &pos, &ReferenceAttention { seq_lens: vec![3] }, None).unwrap();
        assert_eq!(logits.dims(), &[3, model.decoder.config().vocab_size]);
        let values: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "{dtype:?} gives non-finite logits");
        assert!(!model.eos_token_ids.is_empty());
    }
}

#[test]
fn batched_reference_equals_one_sequence_at_a_time() {
    let model = load_hf_folder(&fixture(), DType::F32, &Device::Cpu).unwrap();
    let dev = Device::Cpu;
    let run = |tokens: &[u32], positions: &[u32], lens: Vec<usize>| -> Vec<f32> {
        let ids = Tensor::from_slice(tokens, tokens.len(), &dev).unwrap();
        let pos = Tensor::from_slice(positions, positions.len(), &dev).unwrap();
        let out = model.decoder.forward(&ids, &pos, &ReferenceAttention { seq_lens: lens }, None).unwrap();
        out.flatten_all().unwrap().to_vec1().unwrap()
    };
    let a = run(&[4, 5, 6], &[0, 1, 2], vec![3]);
    let b = run(&[9, 10], &[0, 1], vec![2]);
    let both = run(&[4, 5, 6, 9, 10], &[0, 1, 2, 0, 1], vec![3, 2]);
    let joined: Vec<f32> = a.into_iter().chain(b).collect();
    let diff = joined.iter().zip(&both).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn causal_attention_first_token_sees_only_itself() {
    let dev = Device::Cpu;
    let q = Tensor::randn(0f32, 1.0, (3, 2, 4), &dev).unwrap();
    let k = Tensor::randn(0f32, 1.0, (3, 1, 4), &dev).unwrap();
    let v = Tensor::randn(0f32, 1.0, (3, 1, 4), &dev).unwrap();
    let out = causal_attention(&q, &k, &v).unwrap();
    let first: Vec<f32> = out.get(0).unwrap().get(1).unwrap().to_vec1().unwrap();
    let v0: Vec<f32> = v.get(0).unwrap().get(0).unwrap().to_vec1().unwrap();
    assert_eq!(first, v0);
}

#[test]
fn truncated_or_corrupt_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_hf_folder(dir.path(), DType::F32, &Device::Cpu).err().unwrap();
    assert!(matches!(err, ModelError::Weights { .. }), "{err}");
    std::fs::write(&weights, b"garbage").unwrap();
    assert!(matches!(load_hf_folder(dir.path(), DType::F32, &Device::Cpu), Err(ModelError::Weights { .. })));
    std::fs::write(dir.path().join("config.json"), b"{\"hidden_size\": 1").unwrap();
    assert!(matches!(load_hf_folder(dir.path(), DType::F32, &Device::Cpu), Err(ModelError::Config(_))));
    let missing = dir.path().join("nope");
    assert!(load_hf_folder(&missing, DType::F32, &Device::Cpu).is_err());
}
