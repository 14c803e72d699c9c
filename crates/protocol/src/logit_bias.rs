//! `logit_bias`: JSON object keys are token ids as strings. They are parsed to ids first,
//! so `"5"`, `"05"` and `"+5"` are the same token, and a token given twice is refused.

use std::collections::HashMap;

use crate::error::ApiError;

const PARAM: &str = "logit_bias";

/// Parses `bias` into `(token id, bias)` pairs sorted by id, at most `max_entries` of them.
/// Each bias must be in [-100, 100]; `vocab_size`, when known, bounds the ids.
pub fn parse_logit_bias(
    bias: &HashMap<String, f32>,
    max_entries: usize,
    vocab_size: Option<usize>,
) -> Result<Vec<(u32, f32)>, ApiError> {
    if bias.len() > max_entries {
        let message = format!("logit_bias has {} entries, more than the limit of {max_entries}", bias.len());
        return Err(ApiError::invalid_param(PARAM, message));
    }
    let mut parsed = Vec::with_capacity(bias.len());
    for (key, &value) in bias {
        let token = token_id(key)?;
        if !(value.is_finite() && (-100.0..=100.0).contains(&value)) {
            let message = format!("bias {value} for token {token} is outside [-100, 100]");
            return Err(ApiError::invalid_param(PARAM, message));
        }
        if vocab_size.is_some_and(|size| token as usize >= size) {
            let message = format!("token id {token} is outside the vocabulary");
            return Err(ApiError::invalid_param(PARAM, message));
        }
        parsed.push((token, value));
    }
    parsed.sort_by_key(|&(token, _)| token);
    if let Some(pair) = parsed.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        let message = format!("token id {} appears more than once (keys are parsed as numbers)", pair[0].0);
        return Err(ApiError::invalid_param(PARAM, message));
    }
    Ok(parsed)
}

/// A decimal token id: an optional `+`, then digits (leading zeros allowed).
fn token_id(key: &str) -> Result<u32, ApiError> {
    let digits = key.strip_prefix('+').unwrap_or(key);
    let valid = !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit());
    let parsed = if valid { digits.parse::<u32>().ok() } else { None };
    parsed.ok_or_else(|| ApiError::invalid_param(PARAM, format!("`{key}` is not a token id")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bias(pairs: &[(&str, f32)]) -> HashMap<String, f32> {
        pairs.iter().map(|&(key, value)| (key.to_string(), value)).collect()
    }

    fn parse(pairs: &[(&str, f32)]) -> Result<Vec<(u32, f32)>, ApiError> {
        parse_logit_bias(&bias(pairs), 300, None)
    }

    #[test]
    fn keys_become_sorted_token_ids() {
        assert_eq!(parse(&[("7", -100.0), ("3", 5.0)]).unwrap(), vec![(3, 5.0), (7, -100.0)]);
        assert_eq!(parse(&[("0", 1.0)]).unwrap(), vec![(0, 1.0)]);
        assert_eq!(parse(&[("000", 1.0)]).unwrap(), vec![(0, 1.0)]);
    }

    #[test]
    fn spellings_of_one_id_are_the_same_token_and_duplicates_are_refused() {
        for spelling in ["05", "+5", "0005", "+05"] {
            assert_eq!(parse(&[(spelling, 1.0)]).unwrap(), vec![(5, 1.0)], "{spelling}");
            let err = parse(&[("5", 1.0), (spelling, 2.0)]).unwrap_err();
            assert_eq!(err.param.as_deref(), Some("logit_bias"));
            assert!(err.message.contains("more than once"), "{}", err.message);
        }
    }

    #[test]
    fn non_ids_are_refused() {
        for key in ["", "+", "-5", " 5", "5 ", "5.0", "0x5", "abc", "++5", "4294967296", "99999999999999999999"] {
            assert!(parse(&[(key, 1.0)]).is_err(), "`{key}` was accepted");
        }
        assert_eq!(parse(&[("4294967295", 1.0)]).unwrap(), vec![(u32::MAX, 1.0)]);
    }

    #[test]
    fn values_and_counts_and_the_vocabulary_are_bounded() {
        assert!(parse(&[("5", 100.0), ("6", -100.0)]).is_ok());
        assert!(parse(&[("5", 100.5)]).is_err());
        assert!(parse(&[("5", f32::NAN)]).is_err());
        let many: HashMap<String, f32> = (0..301).map(|id| (id.to_string(), 1.0)).collect();
        assert!(parse_logit_bias(&many, 300, None).unwrap_err().message.contains("300"));
        assert!(parse_logit_bias(&bias(&[("9", 1.0)]), 300, Some(10)).is_ok());
        assert!(parse_logit_bias(&bias(&[("10", 1.0)]), 300, Some(10)).is_err());
    }
}
