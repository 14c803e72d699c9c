//! `ByteSize`: a size in bytes, read from a number or a string with a unit.

use serde::{Deserialize, Serialize};

/// A size in bytes, written as a number or with a unit: `512MiB`, `4GB`, `1048576`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeValue", into = "u64")]
pub struct ByteSize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Number(u64),
    Text(String),
}

impl TryFrom<SizeValue> for ByteSize {
    type Error = String;
    fn try_from(value: SizeValue) -> Result<Self, String> {
        match value {
            SizeValue::Number(bytes) => Ok(ByteSize(bytes)),
            SizeValue::Text(text) => text.parse(),
        }
    }
}

impl From<ByteSize> for u64 {
    fn from(size: ByteSize) -> u64 {
        size.0
    }
}

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().map_err(|_| format!("`{text}` is not a size"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => return Err(format!("unknown size unit `{other}` (use B, KB, KiB, MB, MiB, GB, GiB)")),
        };
        Ok(ByteSize((number * scale as f64) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!("1048576".parse::<ByteSize>().unwrap().bytes(), 1 << 20);
        assert_eq!("512MiB".parse::<ByteSize>().unwrap().bytes(), 512 << 20);
        assert_eq!("2GB".parse::<ByteSize>().unwrap().bytes(), 2_000_000_000);
        assert!("3 parsecs".parse::<ByteSize>().is_err());
    }
}
