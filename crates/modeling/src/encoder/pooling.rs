//! How token states become one vector, as the sentence-transformers files say:
//! `modules.json` (is there a `Normalize` module?) and `1_Pooling/config.json`.

use std::path::Path;

use candle_core::{DType, Tensor, D};
use serde_json::Value;

use crate::error::ModelError;

/// The pooling a model declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of the non-padding tokens' states.
    Mean,
    /// The first token's (`[CLS]`) state.
    Cls,
    /// The last non-padding token's state.
    LastToken,
}

/// Pooling plus whether the vector is L2-normalised afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolingConfig {
    pub pooling: Pooling,
    pub normalize: bool,
}

impl PoolingConfig {
    /// Reads `modules.json` and the pooling module's `config.json` under `dir`. Without
    /// `modules.json`: mean pooling, no normalisation.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let Some(modules) = read_json(&dir.join("modules.json"))? else {
            return Ok(Self { pooling: Pooling::Mean, normalize: false });
        };
        let modules = modules.as_array().cloned().unwrap_or_default();
        let has = |kind: &str| modules.iter().find(|m| m["type"].as_str().is_some_and(|t| t.ends_with(kind)));
        let normalize = has(".Normalize").is_some();
        let pooling = match has(".Pooling").and_then(|m| m["path"].as_str().map(str::to_string)) {
            Some(path) => read_json(&dir.join(path).join("config.json"))?.map_or(Ok(Pooling::Mean), |c| parse(&c))?,
            None => Pooling::Mean,
        };
        Ok(Self { pooling, normalize })
    }

    /// Pools `states` (batch, seq, hidden) under `mask` (batch, seq; 1 for real tokens),
    /// then normalises when declared: (batch, hidden).
    pub fn apply(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor, ModelError> {
        let pooled = match self.pooling {
            Pooling::Mean => mean(states, mask)?,
            Pooling::Cls => states.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::LastToken => last_token(states, mask)?,
        };
        Ok(if self.normalize { l2_normalize(&pooled)? } else { pooled })
    }
}

/// The one pooling mode set in a `1_Pooling/config.json`.
fn parse(config: &Value) -> Result<Pooling, ModelError> {
    let on = |key: &str| config[key].as_bool().unwrap_or(false);
    let modes = [("pooling_mode_mean_tokens", Pooling::Mean), ("pooling_mode_cls_token", Pooling::Cls)];
    let last = [("pooling_mode_lasttoken", Pooling::LastToken)];
    let chosen: Vec<Pooling> = modes.iter().chain(&last).filter(|(key, _)| on(key)).map(|(_, mode)| *mode).collect();
    let unsupported =
        ["pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens"];
    if let Some(key) = unsupported.iter().find(|key| on(key)) {
        return Err(ModelError::Unsupported(format!("pooling `{key}` (supported: mean, cls, last token)")));
    }
    match chosen.as_slice() {
        [] => Ok(Pooling::Mean),
        [one] => Ok(*one),
        _ => Err(ModelError::Unsupported("more than one pooling mode at once".into())),
    }
}

fn mean(states: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(states.dtype())?.unsqueeze(D::Minus1)?;
    let summed = states.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    summed.broadcast_div(&counts)
}

fn last_token(states: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let lengths = mask.to_dtype(DType::F32)?.sum(1)?.to_vec1::<f32>()?;
    let rows = lengths
        .iter()
        .enumerate()
        .map(|(row, len)| states.get(row)?.get((*len as usize).saturating_sub(1)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::stack(&rows, 0)
}

/// Each row divided by its L2 norm (a zero row stays zero).
pub fn l2_normalize(rows: &Tensor) -> candle_core::Result<Tensor> {
    let norms = rows.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    rows.broadcast_div(&norms)
}

fn read_json(path: &Path) -> Result<Option<Value>, ModelError> {
    if !path.exists() {
        return Ok(None);
    }
    let io = |source| ModelError::Io { path: path.display().to_string(), source };
    let text = std::fs::read_to_string(path).map_err(io)?;
    serde_json::from_str(&text).map(Some).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pooling_modes_parse() {
        assert_eq!(parse(&json!({"pooling_mode_mean_tokens": true})).unwrap(), Pooling::Mean);
        assert_eq!(parse(&json!({"pooling_mode_cls_token": true})).unwrap(), Pooling::Cls);
        assert_eq!(parse(&json!({"pooling_mode_lasttoken": true})).unwrap(), Pooling::LastToken);
        assert!(parse(&json!({"pooling_mode_max_tokens": true})).is_err());
        assert!(parse(&json!({"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true})).is_err());
    }

    #[test]
    fn poolings_skip_padding() {
        let device = candle_core::Device::Cpu;
        // Two rows; the second has one real token of two.
        let states = Tensor::new(&[[[1f32, 2.], [3., 4.]], [[5., 6.], [7., 8.]]], &device).unwrap();
        let mask = Tensor::new(&[[1u32, 1], [1, 0]], &device).unwrap();
        let run = |pooling, normalize| {
            PoolingConfig { pooling, normalize }.apply(&states, &mask).unwrap().to_vec2::<f32>().unwrap()
        };
        assert_eq!(run(Pooling::Mean, false), vec![vec![2., 3.], vec![5., 6.]]);
        assert_eq!(run(Pooling::Cls, false), vec![vec![1., 2.], vec![5., 6.]]);
        assert_eq!(run(Pooling::LastToken, false), vec![vec![3., 4.], vec![5., 6.]]);
        let unit = run(Pooling::Cls, true);
        assert!((unit[0][0] - 1. / 5f32.sqrt()).abs() < 1e-6, "{unit:?}");
    }
}
