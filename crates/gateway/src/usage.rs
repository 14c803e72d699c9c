//! `GET /v1/usage`: ledger rows grouped by model, key, team, user, operation or prompt, with latency
//! percentiles computed here so SQLite and Postgres answer alike.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ledger::UsageRecord;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct UsageQuery {
    /// Unix seconds, inclusive; default 0.
    pub start: Option<i64>,
    /// Unix seconds, exclusive; default: now + 1.
    pub end: Option<i64>,
    pub group_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Model,
    Key,
    Team,
    User,
    Operation,
    /// `name@version` of the registry prompt; empty for requests without one.
    Prompt,
}

impl GroupBy {
    pub fn parse(text: Option<&str>) -> Option<Self> {
        match text.unwrap_or("model") {
            "model" => Some(Self::Model),
            "key" => Some(Self::Key),
            "team" => Some(Self::Team),
            "user" => Some(Self::User),
            "operation" => Some(Self::Operation),
            "prompt" => Some(Self::Prompt),
            _ => None,
        }
    }

    fn of(self, row: &UsageRecord) -> Cow<'_, str> {
        match self {
            Self::Model => Cow::Borrowed(&row.model),
            Self::Key => Cow::Borrowed(&row.key_alias),
            Self::Team => Cow::Borrowed(&row.team),
            Self::User => Cow::Borrowed(&row.user),
            Self::Operation => Cow::Borrowed(&row.operation),
            Self::Prompt if row.prompt_name.is_empty() => Cow::Borrowed(""),
            Self::Prompt => Cow::Owned(format!("{}@{}", row.prompt_name, row.prompt_version)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageGroup {
    pub group: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: f64,
    pub ttft_p50_s: f64,
    pub ttft_p99_s: f64,
    pub latency_p50_s: f64,
    pub latency_p99_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub data: Vec<UsageGroup>,
}

/// Groups rows; groups come out sorted by name.
pub fn summarize(rows: &[UsageRecord], group_by: GroupBy) -> UsageReport {
    let mut groups: BTreeMap<Cow<'_, str>, Vec<&UsageRecord>> = BTreeMap::new();
    for row in rows {
        groups.entry(group_by.of(row)).or_default().push(row);
    }
    let data = groups.into_iter().map(|(name, rows)| group(&name, &rows)).collect();
    UsageReport { data }
}

fn group(name: &str, rows: &[&UsageRecord]) -> UsageGroup {
    let ttft: Vec<f64> = rows.iter().map(|row| row.ttft_s).collect();
    let latency: Vec<f64> = rows.iter().map(|row| row.latency_s).collect();
    UsageGroup {
        group: name.to_string(),
        requests: rows.len() as u64,
        prompt_tokens: rows.iter().map(|row| row.prompt_tokens).sum(),
        completion_tokens: rows.iter().map(|row| row.completion_tokens).sum(),
        cost: rows.iter().map(|row| row.cost).sum(),
        ttft_p50_s: percentile(ttft.clone(), 0.50),
        ttft_p99_s: percentile(ttft, 0.99),
        latency_p50_s: percentile(latency.clone(), 0.50),
        latency_p99_s: percentile(latency, 0.99),
    }
}

/// Nearest-rank percentile; 0 for no values.
pub fn percentile(mut values: Vec<f64>, q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_sum_tokens_and_take_percentiles() {
        let row = |model: &str, prompt, latency| UsageRecord {
            model: model.into(),
            prompt_tokens: prompt,
            latency_s: latency,
            ..UsageRecord::default()
        };
        let mut rows = vec![row("a", 1, 1.0), row("a", 2, 3.0), row("b", 5, 2.0)];
        let report = summarize(&rows, GroupBy::Model);
        assert_eq!(report.data.len(), 2);
        assert_eq!((report.data[0].requests, report.data[0].prompt_tokens), (2, 3));
        (rows[1].prompt_name, rows[1].prompt_version, rows[2].prompt_name) = ("p".into(), 2, "p".into());
        let by_prompt = summarize(&rows, GroupBy::Prompt);
        let groups: Vec<(&str, u64)> = by_prompt.data.iter().map(|g| (g.group.as_str(), g.requests)).collect();
        assert_eq!(groups, [("", 1), ("p@0", 1), ("p@2", 1)]);
        assert_eq!((report.data[0].latency_p50_s, report.data[0].latency_p99_s), (1.0, 3.0));
        assert_eq!(percentile((1..=100).map(f64::from).collect(), 0.99), 99.0);
    }
}
