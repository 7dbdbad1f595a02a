//! `Pattern::glob` / `prefix` on any text: made or refused, never a panic; matching agrees with
//! a plain backtracking matcher written from the definition (for short inputs) and stays
//! bounded on long ones.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_sse::hub::{Matcher, Pattern};

/// `**` takes any run of bytes, `*` any run without `/`, every other byte itself.
fn reference(pattern: &[u8], topic: &[u8]) -> bool {
    match pattern {
        [] => topic.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=topic.len()).any(|k| reference(rest, &topic[k..])),
        [b'*', rest @ ..] => (0..=topic.len())
            .take_while(|&k| !topic[..k].contains(&b'/'))
            .any(|k| reference(rest, &topic[k..])),
        [p, rest @ ..] => topic.first() == Some(p) && reference(rest, &topic[1..]),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, topic) = text.split_once('\u{0}').unwrap_or((&text, ""));
    if let Ok(prefix) = Pattern::prefix(pattern) {
        assert_eq!(prefix.matches(topic), topic.starts_with(pattern));
    }
    if let Ok(glob) = Pattern::glob(pattern) {
        let matched = glob.matches(topic);
        // The reference is exponential: only where it is cheap.
        let stars = pattern.matches('*').count();
        if stars <= 4 && topic.len() <= 24 {
            assert_eq!(
                matched,
                reference(pattern.as_bytes(), topic.as_bytes()),
                "{pattern:?} vs {topic:?}"
            );
        }
    }
});
