//! The ledger's upsert: how a row meets the row already stored under its request id, in SQL
//! and (for repeats inside one batch) in Rust, by the same rules.

use crate::ledger::{RowState, UsageRecord};

/// Rows per multi-row INSERT (22 parameters each, well under SQLite's limit).
pub(super) const ROWS_PER_INSERT: usize = 64;
const USAGE_COLUMNS: usize = 23;

/// `($1, …, $22), ($23, …)`: placeholders for `rows` rows.
fn usage_placeholders(rows: usize) -> String {
    let tuple = |row: usize| {
        let params: Vec<String> = (1..=USAGE_COLUMNS).map(|col| format!("${}", row * USAGE_COLUMNS + col)).collect();
        format!("({})", params.join(", "))
    };
    (0..rows).map(tuple).collect::<Vec<_>>().join(", ")
}

/// A token or cost column: over an admitted row, a completion replaces and a refresh raises
/// (counts only grow); over a completed row, another request under the id adds.
fn counted(column: &str) -> String {
    format!(
        "{column} = CASE WHEN usage_ledger.state <> 'admitted' THEN usage_ledger.{column} + excluded.{column} \
         WHEN excluded.state <> 'admitted' OR excluded.{column} > usage_ledger.{column} THEN excluded.{column} \
         ELSE usage_ledger.{column} END"
    )
}

/// Any other column: taken from the new row only while the stored one is admitted.
fn described(column: &str) -> String {
    format!(
        "{column} = CASE WHEN usage_ledger.state = 'admitted' THEN excluded.{column} ELSE usage_ledger.{column} END"
    )
}

pub(super) fn usage_insert_sql(rows: usize) -> String {
    let counted_columns = ["prompt_tokens", "completion_tokens", "cached_tokens", "cost"].map(counted);
    let described_columns =
        ["model", "status", "finish_reason", "ttft_s", "tpot_s", "latency_s", "overhead_s", "state", "tool_calls"]
            .map(described);
    format!(
        "INSERT INTO usage_ledger (request_id, ts, operation, model, key_id, key_alias, team, user_id, status, \
         finish_reason, prompt_tokens, completion_tokens, cached_tokens, cost, ttft_s, tpot_s, latency_s, overhead_s, \
         prompt_name, prompt_version, prompt_label, state, tool_calls) VALUES {} ON CONFLICT (request_id) DO UPDATE SET {}, {} \
         WHERE usage_ledger.state = 'admitted' OR (excluded.state <> 'admitted' AND \
         (usage_ledger.ts <> excluded.ts OR usage_ledger.latency_s <> excluded.latency_s))",
        usage_placeholders(rows),
        counted_columns.join(", "),
        described_columns.join(", "),
    )
}

/// One row per request id (an upsert may touch a row once per statement), folded in order
/// by the rules of [`usage_insert_sql`].
pub(super) fn merge_repeated_ids(rows: &[UsageRecord]) -> Vec<UsageRecord> {
    let mut merged: Vec<UsageRecord> = Vec::with_capacity(rows.len());
    let mut index = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        match index.get(&row.request_id) {
            Some(&at) => fold(&mut merged[at], row),
            None => {
                index.insert(row.request_id.clone(), merged.len());
                merged.push(row.clone());
            }
        }
    }
    merged
}

/// `row` met `into`, both under one request id.
fn fold(into: &mut UsageRecord, row: &UsageRecord) {
    let admitted = |state: RowState| state == RowState::Admitted;
    match (admitted(into.state), admitted(row.state)) {
        (true, true) => {
            let latency = row.latency_s;
            *into = UsageRecord {
                prompt_tokens: into.prompt_tokens.max(row.prompt_tokens),
                cached_tokens: into.cached_tokens.max(row.cached_tokens),
                completion_tokens: into.completion_tokens.max(row.completion_tokens),
                cost: into.cost.max(row.cost),
                ..row.clone()
            };
            into.latency_s = latency;
        }
        (true, false) => *into = row.clone(),
        (false, true) => {}
        (false, false) if into.ts == row.ts && into.latency_s == row.latency_s => {}
        (false, false) => {
            into.prompt_tokens += row.prompt_tokens;
            into.completion_tokens += row.completion_tokens;
            into.cached_tokens += row.cached_tokens;
            into.cost += row.cost;
        }
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

pub(super) fn bind_usage_rows<'q>(mut query: AnyQuery<'q>, rows: &'q [UsageRecord]) -> AnyQuery<'q> {
    for row in rows {
        query = query
            .bind(&row.request_id)
            .bind(row.ts)
            .bind(&row.operation)
            .bind(&row.model)
            .bind(&row.key_id)
            .bind(&row.key_alias)
            .bind(&row.team)
            .bind(&row.user)
            .bind(i64::from(row.status))
            .bind(&row.finish_reason)
            .bind(row.prompt_tokens as i64)
            .bind(row.completion_tokens as i64)
            .bind(row.cached_tokens as i64)
            .bind(row.cost)
            .bind(row.ttft_s)
            .bind(row.tpot_s)
            .bind(row.latency_s)
            .bind(row.overhead_s)
            .bind(&row.prompt_name)
            .bind(i64::from(row.prompt_version))
            .bind(&row.prompt_label)
            .bind(row.state.as_str())
            .bind(row.tool_calls as i64);
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: RowState, completion: u64, latency: f64) -> UsageRecord {
        UsageRecord {
            request_id: "r".into(),
            state,
            completion_tokens: completion,
            latency_s: latency,
            ..Default::default()
        }
    }

    #[test]
    fn a_completion_replaces_its_admission_and_refreshes_only_raise() {
        let folded = |rows: &[UsageRecord]| merge_repeated_ids(rows).remove(0);
        let admitted = |tokens| row(RowState::Admitted, tokens, 0.0);
        assert_eq!(folded(&[admitted(5), admitted(3)]).completion_tokens, 5);
        let done = folded(&[admitted(0), admitted(7), row(RowState::Done, 9, 1.0)]);
        assert_eq!((done.state, done.completion_tokens), (RowState::Done, 9));
        let late_refresh = folded(&[row(RowState::Done, 9, 1.0), admitted(20)]);
        assert_eq!((late_refresh.state, late_refresh.completion_tokens), (RowState::Done, 9));
        let replayed = folded(&[row(RowState::Done, 9, 1.0), row(RowState::Done, 9, 1.0)]);
        assert_eq!(replayed.completion_tokens, 9);
        let reused = folded(&[row(RowState::Done, 9, 1.0), row(RowState::Done, 4, 2.0)]);
        assert_eq!(reused.completion_tokens, 13);
    }
}
