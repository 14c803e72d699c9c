//! A plain f64 BERT forward for one input, straight from `model.safetensors`: embeddings +
//! LayerNorm, self-attention, erf-GELU FFN, post-LayerNorms, mean pooling, L2 norm. It
//! shares no code with the encoder under test (candle is not used).

use std::collections::HashMap;
use std::path::Path;

const HEADS: usize = 12;
const EPS: f64 = 1e-12;

/// Every f32 tensor of the file, as f64 values with its shape.
pub struct Weights(HashMap<String, (Vec<usize>, Vec<f64>)>);

impl Weights {
    pub fn read(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut map = HashMap::new();
        for (name, view) in file.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                continue;
            }
            let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64);
            map.insert(name, (view.shape().to_vec(), values.collect()));
        }
        Self(map)
    }

    fn get(&self, name: &str) -> &[f64] {
        &self.0.get(name).unwrap_or_else(|| panic!("no tensor {name}")).1
    }

    fn rows(&self, name: &str) -> usize {
        self.0[name].0[0]
    }
}

/// The unit sentence vector of `ids` (special tokens included).
pub fn embed(w: &Weights, ids: &[u32]) -> Vec<f64> {
    let hidden = w.rows("embeddings.LayerNorm.weight");
    let mut x: Vec<Vec<f64>> = ids
        .iter()
        .enumerate()
        .map(|(pos, id)| {
            let word = &w.get("embeddings.word_embeddings.weight")[*id as usize * hidden..][..hidden];
            let place = &w.get("embeddings.position_embeddings.weight")[pos * hidden..][..hidden];
            let kind = &w.get("embeddings.token_type_embeddings.weight")[..hidden];
            let sum: Vec<f64> = (0..hidden).map(|i| word[i] + place[i] + kind[i]).collect();
            layer_norm(&sum, w, "embeddings.LayerNorm")
        })
        .collect();
    let mut layer = 0;
    while w.0.contains_key(&format!("encoder.layer.{layer}.attention.self.query.weight")) {
        x = block(w, &format!("encoder.layer.{layer}"), &x);
        layer += 1;
    }
    let mean: Vec<f64> = (0..hidden).map(|i| x.iter().map(|row| row[i]).sum::<f64>() / x.len() as f64).collect();
    let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
    mean.iter().map(|v| v / norm).collect()
}

/// One encoder layer (post-LN, as BERT).
fn block(w: &Weights, prefix: &str, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let attention = self_attention(w, &format!("{prefix}.attention.self"), x);
    let attended: Vec<Vec<f64>> = x
        .iter()
        .zip(&attention)
        .map(|(row, ctx)| {
            let out = linear(w, &format!("{prefix}.attention.output.dense"), ctx);
            let sum: Vec<f64> = row.iter().zip(&out).map(|(a, b)| a + b).collect();
            layer_norm(&sum, w, &format!("{prefix}.attention.output.LayerNorm"))
        })
        .collect();
    attended
        .iter()
        .map(|row| {
            let inner: Vec<f64> =
                linear(w, &format!("{prefix}.intermediate.dense"), row).into_iter().map(gelu).collect();
            let out = linear(w, &format!("{prefix}.output.dense"), &inner);
            let sum: Vec<f64> = row.iter().zip(&out).map(|(a, b)| a + b).collect();
            layer_norm(&sum, w, &format!("{prefix}.output.LayerNorm"))
        })
        .collect()
}

fn self_attention(w: &Weights, prefix: &str, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let project =
        |name: &str| -> Vec<Vec<f64>> { x.iter().map(|row| linear(w, &format!("{prefix}.{name}"), row)).collect() };
    let (q, k, v) = (project("query"), project("key"), project("value"));
    let hidden = q[0].len();
    let dim = hidden / HEADS;
    let scale = 1.0 / (dim as f64).sqrt();
    let mut out = vec![vec![0.0; hidden]; x.len()];
    for head in 0..HEADS {
        let span = head * dim..(head + 1) * dim;
        for (i, qi) in q.iter().enumerate() {
            let scores: Vec<f64> = k
                .iter()
                .map(|kj| qi[span.clone()].iter().zip(&kj[span.clone()]).map(|(a, b)| a * b).sum::<f64>() * scale)
                .collect();
            let top = scores.iter().cloned().fold(f64::MIN, f64::max);
            let exps: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
            let total: f64 = exps.iter().sum();
            for (j, e) in exps.iter().enumerate() {
                for d in span.clone() {
                    out[i][d] += e / total * v[j][d];
                }
            }
        }
    }
    out
}

/// `W x + b` with W stored (out, in).
fn linear(w: &Weights, prefix: &str, x: &[f64]) -> Vec<f64> {
    let weight = w.get(&format!("{prefix}.weight"));
    let bias = w.get(&format!("{prefix}.bias"));
    bias.iter()
        .enumerate()
        .map(|(o, b)| b + weight[o * x.len()..][..x.len()].iter().zip(x).map(|(a, c)| a * c).sum::<f64>())
        .collect()
}

fn layer_norm(x: &[f64], w: &Weights, prefix: &str) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let (gamma, beta) = (w.get(&format!("{prefix}.weight")), w.get(&format!("{prefix}.bias")));
    x.iter().enumerate().map(|(i, v)| (v - mean) / (var + EPS).sqrt() * gamma[i] + beta[i]).collect()
}

/// The exact GELU, `x Φ(x)`.
fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// erf by its Maclaurin series for |x| < 3 (error < 1e-12), else its asymptotic value (< 1e-6).
fn erf(x: f64) -> f64 {
    if x.abs() >= 3.0 {
        let tail = (-x * x).exp() / (x.abs() * std::f64::consts::PI.sqrt());
        return x.signum() * (1.0 - tail * (1.0 - 1.0 / (2.0 * x * x)));
    }
    let (mut term, mut sum, mut n) = (x, x, 0.0);
    while term.abs() > 1e-17 {
        n += 1.0;
        term *= -x * x / n;
        sum += term / (2.0 * n + 1.0);
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn erf_is_right() {
    assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-12);
    assert!((erf(-1.5) + 0.966_105_146_475_310_7).abs() < 1e-12);
    assert!((erf(2.9) - 0.999_958_902_121_900_7).abs() < 1e-12);
}
