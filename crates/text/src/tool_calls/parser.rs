//! Reads tool calls out of generated text as it streams: text outside calls is content,
//! a call's name is announced once known and its arguments stream as written. Markup
//! (`<tool_call>`, `[TOOL_CALLS]`, separators) never reaches the content.

use super::scan::scan_call;
use super::ToolCallFormat;

/// What a piece of output turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolEvent {
    Content(String),
    /// A call begins: its position among this choice's calls and the function name.
    Start {
        index: usize,
        name: String,
    },
    /// More of a call's arguments (a JSON text once all fragments are joined).
    Arguments {
        index: usize,
        fragment: String,
    },
}

#[derive(Debug, PartialEq, Eq)]
enum Region {
    /// Free text (content).
    Text,
    /// Inside the calls' markup, between objects.
    Calls,
}

/// One choice's parser.
#[derive(Debug)]
pub struct ToolCallStream {
    format: ToolCallFormat,
    region: Region,
    /// Text not yet turned into events.
    pending: String,
    /// The object being written (from its `{`), how many argument bytes went out, and
    /// whether its start was announced.
    object: Option<(String, usize, bool)>,
    calls: usize,
    /// Only whitespace has been seen so far (Llama's JSON calls start the output).
    at_start: bool,
}

impl ToolCallStream {
    pub fn new(format: ToolCallFormat) -> Self {
        Self { format, region: Region::Text, pending: String::new(), object: None, calls: 0, at_start: true }
    }

    /// How many calls have started.
    pub fn calls(&self) -> usize {
        self.calls
    }

    pub fn push(&mut self, text: &str) -> Vec<ToolEvent> {
        self.pending.push_str(text);
        let mut events = Vec::new();
        loop {
            let progressed = match self.region {
                Region::Text => self.step_text(&mut events),
                Region::Calls => self.step_calls(&mut events),
            };
            if !progressed {
                return events;
            }
        }
    }

    /// The end of the output: held-back text is content; an unfinished call's markup is dropped
    /// (its announced part stays).
    pub fn finish(&mut self) -> Vec<ToolEvent> {
        let mut events = Vec::new();
        if self.region == Region::Text && !self.pending.is_empty() {
            events.push(ToolEvent::Content(std::mem::take(&mut self.pending)));
        }
        // An unfinished call: what was announced stays; the rest is markup.
        self.object = None;
        self.pending.clear();
        events
    }

    fn step_text(&mut self, events: &mut Vec<ToolEvent>) -> bool {
        if self.format == ToolCallFormat::Llama3Json && self.at_start {
            let trimmed = self.pending.trim_start();
            let trimmed = trimmed.strip_prefix("<|python_tag|>").unwrap_or(trimmed);
            if trimmed.is_empty() || "<|python_tag|>".starts_with(trimmed) {
                return false;
            }
            self.at_start = false;
            if trimmed.starts_with('{') {
                self.pending = trimmed.to_string();
                self.region = Region::Calls;
                return true;
            }
        }
        let Some(open) = self.format.open_marker() else {
            return self.emit_content(self.pending.len(), events);
        };
        if let Some(at) = self.pending.find(open) {
            self.emit_content(at, events);
            self.pending.drain(..open.len());
            self.region = Region::Calls;
            return true;
        }
        // Hold back a tail that may be the start of the marker.
        let keep = (1..open.len()).rev().find(|&n| self.pending.ends_with(&open[..n])).unwrap_or(0);
        self.emit_content(self.pending.len() - keep, events)
    }

    fn emit_content(&mut self, upto: usize, events: &mut Vec<ToolEvent>) -> bool {
        let mut upto = upto;
        while !self.pending.is_char_boundary(upto) {
            upto -= 1;
        }
        if upto == 0 {
            return false;
        }
        let text: String = self.pending.drain(..upto).collect();
        // Whitespace between calls is layout, not content.
        if self.calls == 0 || !text.trim().is_empty() {
            events.push(ToolEvent::Content(text));
        }
        self.at_start = false;
        false
    }

    fn step_calls(&mut self, events: &mut Vec<ToolEvent>) -> bool {
        if self.object.is_none() {
            if let Some(close) = self.format.close_marker() {
                let before_close = self.pending.find(close);
                let before_object = self.pending.find('{');
                if let Some(at) = before_close.filter(|&at| before_object.is_none_or(|object| at < object)) {
                    self.pending.drain(..at + close.len());
                    let rest = self.pending.trim_start().len();
                    self.pending.drain(..self.pending.len() - rest);
                    self.region = Region::Text;
                    return true;
                }
            }
            let Some(start) = self.pending.find('{') else {
                // Separators only (`;`, `,`, `[`, whitespace): nothing to show.
                if self.format.close_marker().is_none() {
                    self.pending.clear();
                }
                return false;
            };
            self.pending.drain(..start);
            self.object = Some((String::new(), 0, false));
        }
        let Some((mut body, emitted, started)) = self.object.take() else { return false };
        body.push_str(&std::mem::take(&mut self.pending));
        let scan = scan_call(&body);
        let (mut emitted, mut started) = (emitted, started);
        if let (Some(name), Some(_), false) = (&scan.name, scan.arguments_start, started) {
            events.push(ToolEvent::Start { index: self.calls, name: name.clone() });
            started = true;
        }
        if started {
            if let Some(start) = scan.arguments_start {
                let end = scan.arguments_end.unwrap_or(body.len());
                let from = start + emitted;
                if end > from && body.is_char_boundary(from) && body.is_char_boundary(end) {
                    events.push(ToolEvent::Arguments { index: self.calls, fragment: body[from..end].to_string() });
                    emitted = end - start;
                }
            }
        }
        let Some(object_end) = scan.object_end else {
            self.object = Some((body, emitted, started));
            return false;
        };
        if !started {
            self.announce_whole(&body[..object_end], events);
        } else {
            self.calls += 1;
        }
        self.pending = body[object_end..].to_string();
        true
    }

    /// A call whose name came after its arguments (or that ended unannounced): all at once.
    fn announce_whole(&mut self, body: &str, events: &mut Vec<ToolEvent>) {
        let scan = scan_call(body);
        let Some(name) = scan.name else { return };
        let arguments = match (scan.arguments_start, scan.arguments_end) {
            (Some(start), Some(end)) => body[start..end].to_string(),
            _ => "{}".to_string(),
        };
        events.push(ToolEvent::Start { index: self.calls, name });
        events.push(ToolEvent::Arguments { index: self.calls, fragment: arguments });
        self.calls += 1;
    }
}

#[cfg(test)]
#[path = "parser_tests.rs"]
mod tests;
