//! An incremental look at one JSON object as it is written: its `name` once complete, and
//! where its arguments value starts and ends (so the arguments can stream as written).

/// What a (possibly unfinished) call object shows so far.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CallScan {
    pub name: Option<String>,
    /// Byte range of the arguments value; the end is set once the value is complete.
    pub arguments_start: Option<usize>,
    pub arguments_end: Option<usize>,
    /// Byte length of the whole object once it closed.
    pub object_end: Option<usize>,
}

const ARGUMENT_KEYS: [&str; 2] = ["arguments", "parameters"];

/// Scans `text`, which starts with the object's `{`.
pub fn scan_call(text: &str) -> CallScan {
    let bytes = text.as_bytes();
    let mut scan = CallScan::default();
    let (mut depth, mut i) = (0usize, 0usize);
    // At depth 1: the last key read, and whether its value is next.
    let mut key: Option<String> = None;
    let mut value_of: Option<String> = None;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b'"' => {
                let Some(end) = string_end(bytes, i) else { return scan };
                if depth == 1 {
                    let literal = &text[i..end];
                    let decoded: Option<String> = serde_json::from_str(literal).ok();
                    match value_of.take() {
                        Some(k) if k == "name" => scan.name = decoded,
                        Some(k) => note_primitive(&mut scan, &k, i, end),
                        None => key = decoded,
                    }
                }
                i = end;
                continue;
            }
            b':' if depth == 1 => {
                value_of = key.take();
                if value_of.as_deref().is_some_and(|k| ARGUMENT_KEYS.contains(&k)) {
                    scan.arguments_start = Some(next_non_space(bytes, i + 1));
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth == 2 {
                    value_of = None;
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 1 && scan.arguments_start.is_some() && scan.arguments_end.is_none() {
                    scan.arguments_end = Some(i + 1);
                }
                if depth == 0 {
                    close_primitive(&mut scan, i);
                    scan.object_end = Some(i + 1);
                    return scan;
                }
            }
            b',' if depth == 1 => {
                close_primitive(&mut scan, i);
                value_of = None;
            }
            _ => {}
        }
        i += 1;
    }
    scan
}

/// A string value under an arguments key (not an object: passed through as written).
fn note_primitive(scan: &mut CallScan, key: &str, _start: usize, end: usize) {
    if ARGUMENT_KEYS.contains(&key) && scan.arguments_end.is_none() {
        scan.arguments_end = Some(end);
    }
}

/// A number/bool/null arguments value ends at the next `,` or `}` at depth 1.
fn close_primitive(scan: &mut CallScan, at: usize) {
    if let (Some(start), None) = (scan.arguments_start, scan.arguments_end) {
        if at >= start {
            scan.arguments_end = Some(at);
        }
    }
}

/// The index just past the closing quote of the string starting at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn next_non_space(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_name_and_the_arguments_as_they_grow() {
        let full = r#"{"name": "get_weather", "arguments": {"city": "Pa}ris", "days": [1, 2]}}"#;
        let scan = scan_call(full);
        assert_eq!(scan.name.as_deref(), Some("get_weather"));
        let (start, end) = (scan.arguments_start.unwrap(), scan.arguments_end.unwrap());
        assert_eq!(&full[start..end], r#"{"city": "Pa}ris", "days": [1, 2]}"#);
        assert_eq!(scan.object_end, Some(full.len()));
        let partial = &full[..50];
        let scan = scan_call(partial);
        assert_eq!(scan.name.as_deref(), Some("get_weather"));
        assert!(scan.arguments_start.is_some() && scan.arguments_end.is_none() && scan.object_end.is_none());
    }

    #[test]
    fn arguments_before_the_name_and_llama_parameters() {
        let full = r#"{"parameters": {"q": 1}, "name": "search"}"#;
        let scan = scan_call(full);
        assert_eq!(scan.name.as_deref(), Some("search"));
        let (start, end) = (scan.arguments_start.unwrap(), scan.arguments_end.unwrap());
        assert_eq!(&full[start..end], r#"{"q": 1}"#);
    }
}
