#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too
use proptest::prelude::*;
use sconce_text::{StopMatcher, StopOutput};

/// Feeds `pieces` and returns (all released text, stopped, max held bytes seen).
fn run(stops: &[&str], include: bool, pieces: &[&str]) -> (String, bool) {
    let mut matcher = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect(), include);
    let mut out = String::new();
    for piece in pieces {
        let StopOutput { text, stopped } = matcher.push(piece);
        out.push_str(&text);
        if stopped {
            return (out, true);
        }
    }
    out.push_str(&matcher.flush());
    (out, false)
}

/// Reference on the whole text: the stop that ends first wins.
fn reference(stops: &[&str], include: bool, text: &str) -> (String, bool) {
    let best = stops
        .iter()
        .filter(|stop| !stop.is_empty())
        .filter_map(|stop| text.find(stop).map(|start| (start + stop.len(), start)))
        .min();
    match best {
        Some((end, start)) => (text[..if include { end } else { start }].to_string(), true),
        None => (text.to_string(), false),
    }
}

/// Every way to cut `text` in two or three pieces at char boundaries.
fn all_splits(text: &str) -> Vec<Vec<&str>> {
    let cuts: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
    let mut splits = Vec::new();
    for &a in &cuts {
        for &b in cuts.iter().filter(|&&b| b >= a) {
            splits.push(vec![&text[..a], &text[a..b], &text[b..]]);
        }
    }
    splits
}

#[test]
fn stop_spanning_pieces_is_found_at_every_split() {
    let text = "Hello world<|end|> trailing";
    for pieces in all_splits(text) {
        assert_eq!(run(&["<|end|>"], false, &pieces), ("Hello world".into(), true), "{pieces:?}");
        assert_eq!(run(&["<|end|>"], true, &pieces), ("Hello world<|end|>".into(), true), "{pieces:?}");
    }
}

#[test]
fn false_partial_match_is_released_at_every_split() {
    let text = "a <|en and <|e done";
    for pieces in all_splits(text) {
        assert_eq!(run(&["<|end|>"], false, &pieces), (text.into(), false), "{pieces:?}");
    }
}

#[test]
fn partial_match_is_held_back_until_ruled_out() {
    let mut matcher = StopMatcher::new(vec!["STOP".into()], false);
    assert_eq!(matcher.push("abc ST").text, "abc ");
    assert_eq!(matcher.push("O").text, "");
    let out = matcher.push("x");
    assert_eq!((out.text.as_str(), out.stopped), ("STOx", false));
    assert_eq!(matcher.push("S").text, "");
    assert_eq!(matcher.flush(), "S");
}

#[test]
fn first_completed_stop_wins_and_later_pushes_are_ignored() {
    let stops = ["xabc", "ab"];
    for pieces in all_splits("__xabc__") {
        assert_eq!(run(&stops, false, &pieces), ("__x".into(), true), "{pieces:?}");
        assert_eq!(run(&stops, true, &pieces), ("__xab".into(), true), "{pieces:?}");
    }
    let mut matcher = StopMatcher::new(vec!["ab".into()], false);
    assert!(matcher.push("xaby").stopped);
    assert!(matcher.is_stopped());
    assert_eq!(matcher.push("more"), StopOutput { text: String::new(), stopped: true });
    assert_eq!(matcher.flush(), "");
}

#[test]
fn same_end_prefers_the_longer_stop() {
    for pieces in all_splits("1 xab 2") {
        assert_eq!(run(&["ab", "xab"], false, &pieces), ("1 ".into(), true), "{pieces:?}");
    }
}

#[test]
fn multibyte_stops_and_text_split_inside_chars_stay_valid() {
    let text = "prix: 5€ — fin😀 reste";
    for pieces in all_splits(text) {
        assert_eq!(run(&["fin😀"], false, &pieces), ("prix: 5€ — ".into(), true));
        assert_eq!(run(&["€€"], false, &pieces), (text.into(), false));
    }
}

#[test]
fn empty_matcher_passes_text_through() {
    let mut matcher = StopMatcher::new(vec![String::new()], false);
    assert!(matcher.is_empty());
    assert_eq!(matcher.push("abc").text, "abc");
    assert!(!StopMatcher::new(vec!["x".into()], true).is_empty());
}

proptest! {
    #[test]
    fn streaming_matches_whole_text_reference(
        text in "[ab<|>é]{0,24}",
        stops in prop::collection::vec("[ab<|>é]{1,4}", 0..4),
        cuts in prop::collection::vec(0usize..32, 0..6),
        include in any::<bool>(),
    ) {
        let stops: Vec<&str> = stops.iter().map(String::as_str).collect();
        let mut bounds: Vec<usize> = cuts
            .into_iter()
            .map(|cut| cut.min(text.len()))
            .filter(|&cut| text.is_char_boundary(cut))
            .collect();
        bounds.extend([0, text.len()]);
        bounds.sort_unstable();
        let pieces: Vec<&str> = bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect();
        prop_assert_eq!(run(&stops, include, &pieces), reference(&stops, include, &text));
    }

    #[test]
    fn held_text_is_never_longer_than_a_stop_prefix(
        text in "[abc]{0,30}",
        stop in "[abc]{2,5}",
    ) {
        let mut matcher = StopMatcher::new(vec![stop.clone()], false);
        let mut released = String::new();
        for (index, ch) in text.char_indices() {
            let out = matcher.push(&ch.to_string());
            released.push_str(&out.text);
            if out.stopped { break; }
            let seen = &text[..index + ch.len_utf8()];
            prop_assert!(seen.len() - released.len() < stop.len());
            prop_assert!(stop.starts_with(&seen[released.len()..]));
        }
    }
}
