//! `tojson` filter matching Python's `json.dumps(ensure_ascii=False)`, as
//! used by Hugging Face chat templates (no HTML escaping, `", "` and `": "`
//! separators, optional indent and key sorting).

use std::fmt::Write;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// Layout options taken from the filter's keyword arguments.
struct JsonStyle {
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
}

impl JsonStyle {
    fn from_kwargs(kwargs: &Kwargs) -> Result<Self, Error> {
        let indent = match kwargs.get::<Option<Value>>("indent")? {
            Some(value) if value.is_number() => Some(" ".repeat(usize::try_from(value)?)),
            Some(value) if value.as_str().is_some() => value.as_str().map(str::to_string),
            _ => None,
        };
        let default_item = if indent.is_some() { "," } else { ", " };
        let (item_separator, key_separator) = match kwargs.get::<Option<Vec<String>>>("separators")? {
            Some(pair) if pair.len() == 2 => (pair[0].clone(), pair[1].clone()),
            Some(_) => return Err(invalid("separators must be a pair of strings")),
            None => (default_item.to_string(), ": ".to_string()),
        };
        let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
        // ensure_ascii is accepted; output is never ASCII-escaped.
        let _ = kwargs.get::<Option<bool>>("ensure_ascii")?;
        Ok(Self { indent, item_separator, key_separator, sort_keys })
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.into())
}

/// The `tojson` filter.
pub(crate) fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let style = JsonStyle::from_kwargs(&kwargs)?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_value(&mut out, value, &style, 0)?;
    Ok(Value::from_safe_string(out))
}

fn write_value(out: &mut String, value: &Value, style: &JsonStyle, depth: usize) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(out, value)?,
        ValueKind::String => write_string(out, value.as_str().unwrap_or_default())?,
        ValueKind::Map => write_map(out, value, style, depth)?,
        ValueKind::Seq | ValueKind::Iterable => write_seq(out, value, style, depth)?,
        _ => write_string(out, &value.to_string())?,
    }
    Ok(())
}

fn write_number(out: &mut String, value: &Value) -> Result<(), Error> {
    if value.is_integer() {
        let _ = write!(out, "{value}");
        return Ok(());
    }
    let float = f64::try_from(value.clone())?;
    let text = match float {
        f if f.is_nan() => "NaN".to_string(),
        f if f.is_infinite() => if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string(),
        f if f.fract() == 0.0 && f.abs() < 1e16 => format!("{f:.1}"),
        f => format!("{f}"),
    };
    out.push_str(&text);
    Ok(())
}

fn write_string(out: &mut String, text: &str) -> Result<(), Error> {
    let quoted = serde_json::to_string(text).map_err(|err| invalid(err.to_string()))?;
    out.push_str(&quoted);
    Ok(())
}

fn write_seq(out: &mut String, value: &Value, style: &JsonStyle, depth: usize) -> Result<(), Error> {
    let items: Vec<Value> = value.try_iter()?.collect();
    write_container(out, ('[', ']'), items.len(), style, depth, |out, index| {
        write_value(out, &items[index], style, depth + 1)
    })
}

fn write_map(out: &mut String, value: &Value, style: &JsonStyle, depth: usize) -> Result<(), Error> {
    let mut keys: Vec<Value> = value.try_iter()?.collect();
    if style.sort_keys {
        keys.sort();
    }
    write_container(out, ('{', '}'), keys.len(), style, depth, |out, index| {
        let key = &keys[index];
        write_string(out, &key.as_str().map_or_else(|| key.to_string(), str::to_string))?;
        out.push_str(&style.key_separator);
        write_value(out, &value.get_item(key)?, style, depth + 1)
    })
}

/// Writes brackets, separators and indentation around `len` items.
fn write_container(
    out: &mut String,
    (open, close): (char, char),
    len: usize,
    style: &JsonStyle,
    depth: usize,
    mut write_item: impl FnMut(&mut String, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    for index in 0..len {
        if index > 0 {
            out.push_str(&style.item_separator);
        }
        write_newline(out, style, depth + 1);
        write_item(out, index)?;
    }
    write_newline(out, style, depth);
    out.push(close);
    Ok(())
}

fn write_newline(out: &mut String, style: &JsonStyle, depth: usize) {
    if let Some(indent) = &style.indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(indent);
        }
    }
}
