//! Stop strings matched over a stream of text pieces.

/// Result of feeding one piece to a [`StopMatcher`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopOutput {
    /// Text that is now safe to send to the client (may be empty).
    pub text: String,
    /// A stop string matched; the stream should finish.
    pub stopped: bool,
}

/// Finds stop strings in streamed text without leaking partial matches.
///
/// Any suffix that could start a stop string is held back until it is
/// either completed (a stop) or ruled out (released). The stop that
/// completes first in the stream wins, so the result does not depend on
/// how the text was split into pieces.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    include_stop_str: bool,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// Empty stop strings are ignored.
    pub fn new(stops: Vec<String>, include_stop_str: bool) -> Self {
        let stops = stops.into_iter().filter(|stop| !stop.is_empty()).collect();
        Self { stops, include_stop_str, held: String::new(), stopped: false }
    }

    /// Whether there is no stop string to look for.
    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Whether a stop string has matched.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds a piece; after a stop, further pieces are ignored.
    pub fn push(&mut self, piece: &str) -> StopOutput {
        if self.stopped {
            return StopOutput { text: String::new(), stopped: true };
        }
        self.held.push_str(piece);
        if let Some((start, end)) = self.first_completed_stop() {
            self.stopped = true;
            let cut = if self.include_stop_str { end } else { start };
            let mut text = std::mem::take(&mut self.held);
            text.truncate(cut);
            return StopOutput { text, stopped: true };
        }
        let keep = self.held.len() - self.partial_stop_len();
        let rest = self.held.split_off(keep);
        StopOutput { text: std::mem::replace(&mut self.held, rest), stopped: false }
    }

    /// Releases the held-back text at the end of a stream without a stop.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Byte range of the stop that ends first (then starts first) in `held`.
    fn first_completed_stop(&self) -> Option<(usize, usize)> {
        self.stops
            .iter()
            .filter_map(|stop| {
                let start = self.held.find(stop.as_str())?;
                Some((start + stop.len(), start))
            })
            .min()
            .map(|(end, start)| (start, end))
    }

    /// Length of the longest suffix of `held` that begins some stop string.
    fn partial_stop_len(&self) -> usize {
        self.stops
            .iter()
            .filter_map(|stop| {
                (1..stop.len())
                    .rev()
                    .filter(|&len| stop.is_char_boundary(len))
                    .find(|&len| self.held.ends_with(&stop[..len]))
            })
            .max()
            .unwrap_or(0)
    }
}
