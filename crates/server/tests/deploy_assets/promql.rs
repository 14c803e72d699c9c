//! Reading a Prometheus exposition and the metric and label names in PromQL expressions.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The exposition's sample names, each with the label names its samples carry, and the families
/// (`# TYPE` names: a histogram's base name).
pub struct Scrape {
    pub samples: BTreeMap<String, BTreeSet<String>>,
    pub families: BTreeSet<String>,
}

pub fn parse_exposition(text: &str) -> Scrape {
    let mut samples: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut families = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.insert(rest.split_whitespace().next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap();
        let labels = samples.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            let body = &line[end + 1..line.rfind('}').unwrap()];
            for pair in split_label_pairs(body) {
                labels.insert(pair.split('=').next().unwrap().trim().to_string());
            }
        }
    }
    Scrape { samples, families }
}

/// `a="x",b="y,z"` -> [`a="x"`, `b="y,z"`] (commas inside quoted values stay).
pub fn split_label_pairs(body: &str) -> Vec<&str> {
    let (mut pairs, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                pairs.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pairs.push(&body[start..]);
    pairs.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// Metric names and label names in one PromQL expression. Functions and aggregations are words
/// followed by `(`; words inside `{...}` and in `by (...)`-style clauses are labels; string
/// literals and `[...]` ranges are skipped; every other word that is not a keyword is a metric.
#[derive(Debug, Default)]
pub struct Refs {
    pub metrics: BTreeSet<String>,
    pub labels: BTreeSet<String>,
}

/// Operators and literals, and aggregations (which may be followed by `by (...)` instead of `(`).
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"];
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

pub fn promql_refs(expr: &str) -> Refs {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = Refs::default();
    let (mut i, mut in_braces, mut grouping_depth) = (0, false, None::<usize>);
    let mut depth = 0usize;
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
            }
            '{' => (in_braces, i) = (true, i + 1),
            '}' => (in_braces, i) = (false, i + 1),
            '(' => (depth, i) = (depth + 1, i + 1),
            ')' => {
                depth -= 1;
                if grouping_depth == Some(depth) {
                    grouping_depth = None;
                }
                i += 1;
            }
            '$' => {
                i += 1;
                while i < chars.len() && is_part(chars[i]) {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (is_part(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if is_start(c) => {
                let start = i;
                while i < chars.len() && is_part(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
                if in_braces || grouping_depth.is_some() {
                    refs.labels.insert(word);
                } else if GROUPING.contains(&word.as_str()) {
                    if next == Some('(') {
                        grouping_depth = Some(depth);
                    }
                } else if next != Some('(')
                    && !KEYWORDS.contains(&word.as_str())
                    && !AGGREGATIONS.contains(&word.as_str())
                {
                    refs.metrics.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    refs
}

/// Every PromQL expression in the dashboard: panel targets (rows included) and the `label_values`
/// queries of its variables, as (where, expression, label the variable reads).
pub fn dashboard_queries(dashboard: &Value) -> Vec<(String, String, Option<String>)> {
    fn panels(list: &Value, out: &mut Vec<(String, String, Option<String>)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_else(|| panic!("panel `{title}`: a target has no expr"));
                out.push((format!("panel `{title}`"), expr.to_string(), None));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap();
        let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap();
        let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')'));
        let inner = inner.unwrap_or_else(|| panic!("variable `{name}`: expected label_values(...), got {query}"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        out.push((format!("variable `{name}`"), selector.trim().to_string(), Some(label.trim().to_string())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_parsing_tells_metrics_from_functions_and_labels() {
        let refs = promql_refs(
            r#"histogram_quantile(0.99, sum by (le, instance) (rate(a:b_bucket{job=~"$job", x="sum(y)"}[$__rate_interval]))) / on (instance) c_total * 3600"#,
        );
        assert_eq!(refs.metrics, ["a:b_bucket", "c_total"].iter().map(|s| s.to_string()).collect());
        assert_eq!(refs.labels, ["instance", "job", "le", "x"].iter().map(|s| s.to_string()).collect());
        let scrape = parse_exposition("# TYPE h histogram\nh_bucket{le=\"0.1\",model=\"a,b\"} 1\nplain 2\n");
        assert_eq!(scrape.samples["h_bucket"], ["le", "model"].iter().map(|s| s.to_string()).collect());
        assert!(scrape.samples["plain"].is_empty());
        assert_eq!(scrape.families, ["h".to_string()].into());
    }
}
