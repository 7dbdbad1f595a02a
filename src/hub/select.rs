//! What a subscription follows: topics by name, and patterns ([`Matcher`]s) over topic names.

use std::{fmt, sync::Arc};

/// Decides whether a topic's events belong to a subscription: the plug-in point for patterns.
///
/// [`Pattern`] has the built-in ones (prefix and glob); implement this for your own, for
/// example a WHATWG URL Pattern for a Mercure hub. A matcher runs once per publish for every
/// distinct [`key`](Self::key) that has subscribers (subscriptions whose matchers have the
/// same key share one live ring), and over the retained topics when a subscription replays:
/// keep it linear in the topic's length.
///
/// ```
/// use tower_sse::hub::Matcher;
///
/// /// Topics that end with `suffix`.
/// struct EndsWith(String, String);
///
/// impl EndsWith {
///     fn new(suffix: &str) -> Self {
///         Self(suffix.to_owned(), format!("ends-with:{suffix}"))
///     }
/// }
///
/// impl Matcher for EndsWith {
///     fn matches(&self, topic: &str) -> bool {
///         topic.ends_with(&self.0)
///     }
///     fn key(&self) -> &str {
///         &self.1
///     }
/// }
///
/// assert!(EndsWith::new("/alerts").matches("rooms/1/alerts"));
/// ```
pub trait Matcher: Send + Sync + 'static {
    /// Whether the events of `topic` belong to the subscription.
    fn matches(&self, topic: &str) -> bool;

    /// What identifies this matcher: two matchers with the same key must match the same
    /// topics. Start it with the matcher's kind (`"glob:"`, `"urlpattern:"`), so matchers of
    /// different kinds never share a key.
    fn key(&self) -> &str;
}

/// The built-in patterns over topic names.
///
/// - [`Pattern::prefix`]: every topic that starts with the prefix.
/// - [`Pattern::glob`]: `*` matches any run of characters without `/` (within one segment),
///   `**` any run of characters, `/` included; every other character matches itself.
///
/// Matching is linear in the topic's length for a prefix, and bounded by the pattern's length
/// times the topic's for a glob (patterns are limited to
/// [`Pattern::MAX_LEN`] bytes and [`Pattern::MAX_WILDCARDS`] wildcards).
///
/// ```
/// use tower_sse::hub::{Matcher, Pattern};
///
/// let rooms = Pattern::glob("rooms/*").unwrap();
/// assert!(rooms.matches("rooms/1"));
/// assert!(!rooms.matches("rooms/1/typing"));
/// assert!(Pattern::glob("rooms/**").unwrap().matches("rooms/1/typing"));
/// assert!(Pattern::prefix("users/alice/").unwrap().matches("users/alice/inbox"));
/// assert_eq!(Pattern::glob("rooms/*").unwrap().key(), "glob:rooms/*");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    kind: Kind,
    /// `"<kind>:<text>"`; the text starts after the kind's prefix.
    key: Box<str>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Prefix,
    Glob,
}

/// Why a pattern or a subscription's set of topics and patterns was refused.
///
/// ```
/// use tower_sse::hub::{Pattern, SelectionError};
///
/// assert_eq!(Pattern::glob("").unwrap_err(), SelectionError::EmptyPattern);
/// assert_eq!(SelectionError::EmptyPattern.to_string(), "empty pattern");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelectionError {
    /// A subscription with no topic and no pattern.
    Empty,
    /// More topics and patterns than the hub allows in one subscription
    /// ([`HubBuilder::max_topics`](super::HubBuilder::max_topics)).
    TooManyTopics {
        /// The limit.
        max: usize,
    },
    /// A pattern with no text.
    EmptyPattern,
    /// A pattern longer than [`Pattern::MAX_LEN`] bytes.
    PatternTooLong,
    /// A glob with more than [`Pattern::MAX_WILDCARDS`] wildcards.
    TooManyWildcards,
    /// A glob with three or more `*` in a row.
    BadWildcard,
    /// A pattern with a control character.
    ControlCharacter,
    /// This hub's broker cannot serve this selection (none of the built-in brokers refuses
    /// one today; kept for brokers that cannot).
    Unsupported,
}

impl fmt::Display for SelectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no topic to subscribe to"),
            Self::TooManyTopics { max } => write!(f, "more than {max} topics and patterns"),
            Self::EmptyPattern => f.write_str("empty pattern"),
            Self::PatternTooLong => write!(f, "pattern longer than {} bytes", Pattern::MAX_LEN),
            Self::TooManyWildcards => write!(
                f,
                "pattern with more than {} wildcards",
                Pattern::MAX_WILDCARDS
            ),
            Self::BadWildcard => f.write_str("pattern with three or more `*` in a row"),
            Self::ControlCharacter => f.write_str("pattern with a control character"),
            Self::Unsupported => f.write_str("this hub's broker cannot serve this selection"),
        }
    }
}

impl std::error::Error for SelectionError {}

impl Pattern {
    /// The longest pattern accepted, in bytes.
    pub const MAX_LEN: usize = 256;
    /// The most wildcards (`*` or `**`) in a glob.
    pub const MAX_WILDCARDS: usize = 16;

    /// Every topic that starts with `prefix`.
    ///
    /// # Errors
    ///
    /// An empty prefix, one over [`MAX_LEN`](Self::MAX_LEN) bytes or with a control character.
    ///
    /// ```
    /// use tower_sse::hub::{Matcher, Pattern};
    ///
    /// assert!(Pattern::prefix("rooms/").unwrap().matches("rooms/7"));
    /// ```
    pub fn prefix(prefix: &str) -> Result<Self, SelectionError> {
        check_text(prefix)?;
        Ok(Self {
            kind: Kind::Prefix,
            key: format!("prefix:{prefix}").into(),
        })
    }

    /// A glob: `*` within one `/`-separated segment, `**` across segments.
    ///
    /// # Errors
    ///
    /// As [`prefix`](Self::prefix), and more than [`MAX_WILDCARDS`](Self::MAX_WILDCARDS)
    /// wildcards or three `*` in a row.
    ///
    /// ```
    /// use tower_sse::hub::{Matcher, Pattern};
    ///
    /// let p = Pattern::glob("users/*/inbox").unwrap();
    /// assert!(p.matches("users/alice/inbox"));
    /// assert!(!p.matches("users/alice/archive/inbox"));
    /// assert!(Pattern::glob("*").unwrap().matches("lobby"));
    /// assert!(!Pattern::glob("*").unwrap().matches("rooms/1"));
    /// ```
    pub fn glob(glob: &str) -> Result<Self, SelectionError> {
        check_text(glob)?;
        if glob.contains("***") {
            return Err(SelectionError::BadWildcard);
        }
        let wildcards = glob.replace("**", "*").matches('*').count();
        if wildcards > Self::MAX_WILDCARDS {
            return Err(SelectionError::TooManyWildcards);
        }
        Ok(Self {
            kind: Kind::Glob,
            key: format!("glob:{glob}").into(),
        })
    }

    /// The pattern's text, without its kind.
    ///
    /// ```
    /// assert_eq!(tower_sse::hub::Pattern::glob("a/*").unwrap().as_str(), "a/*");
    /// ```
    pub fn as_str(&self) -> &str {
        let prefix = match self.kind {
            Kind::Prefix => "prefix:".len(),
            Kind::Glob => "glob:".len(),
        };
        &self.key[prefix..]
    }
}

fn check_text(text: &str) -> Result<(), SelectionError> {
    if text.is_empty() {
        return Err(SelectionError::EmptyPattern);
    }
    if text.len() > Pattern::MAX_LEN {
        return Err(SelectionError::PatternTooLong);
    }
    if text.chars().any(char::is_control) {
        return Err(SelectionError::ControlCharacter);
    }
    Ok(())
}

impl Matcher for Pattern {
    fn matches(&self, topic: &str) -> bool {
        match self.kind {
            Kind::Prefix => topic.starts_with(self.as_str()),
            Kind::Glob => glob_matches(self.as_str().as_bytes(), topic.as_bytes()),
        }
    }

    fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// Wildcard matching, greedy with two resume points: the last `*` (which may not take a `/`)
/// and the last `**`. Without `**` the `/`s of pattern and topic line up one to one, so a
/// segment that fails cannot be mended by an earlier segment's star; only the last `**` can
/// shift the alignment, and every star before it is subsumed by it. At most
/// `pattern.len() * topic.len()` steps.
fn glob_matches(pattern: &[u8], topic: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume: (pattern index after the star, topic index the star has reached).
    let mut star: Option<(usize, usize)> = None;
    let mut double: Option<(usize, usize)> = None;
    while t < topic.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            if pattern.get(p + 1) == Some(&b'*') {
                p += 2;
                double = Some((p, t));
                star = None;
            } else {
                p += 1;
                star = Some((p, t));
            }
            continue;
        }
        if p < pattern.len() && pattern[p] == topic[t] {
            p += 1;
            t += 1;
            continue;
        }
        // Let the last star take one more character, if it may; else the last `**`.
        if let Some((after, at)) = star.filter(|&(_, at)| topic[at] != b'/') {
            star = Some((after, at + 1));
            (p, t) = (after, at + 1);
        } else if let Some((after, at)) = double {
            star = None;
            double = Some((after, at + 1));
            (p, t) = (after, at + 1);
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// A subscription's topics and patterns, as the hub holds them.
#[derive(Clone, Default)]
pub(super) struct Selection<'a> {
    pub(super) topics: Vec<&'a str>,
    pub(super) patterns: Vec<Arc<dyn Matcher>>,
}

impl Selection<'_> {
    pub(super) fn len(&self) -> usize {
        self.topics.len() + self.patterns.len()
    }

    /// Whether an event of `topic` belongs to this selection.
    #[cfg_attr(not(feature = "_broker"), allow(dead_code))]
    pub(super) fn selects(&self, topic: &str) -> bool {
        self.topics.contains(&topic) || self.patterns.iter().any(|p| p.matches(topic))
    }

    /// One exact topic and nothing else: the single-topic fast path.
    pub(super) fn single(&self) -> Option<&str> {
        match (self.topics.as_slice(), self.patterns.is_empty()) {
            ([topic], true) => Some(topic),
            _ => None,
        }
    }

    /// Sorted, without duplicates (topics by name, patterns by key).
    pub(super) fn normalize(&mut self) {
        self.topics.sort_unstable();
        self.topics.dedup();
        self.patterns.sort_by(|a, b| a.key().cmp(b.key()));
        self.patterns.dedup_by(|a, b| a.key() == b.key());
    }

    pub(super) fn check(&self, max: usize) -> Result<(), SelectionError> {
        match self.len() {
            0 => Err(SelectionError::Empty),
            n if n > max => Err(SelectionError::TooManyTopics { max }),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for Selection<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selection")
            .field("topics", &self.topics)
            .field(
                "patterns",
                &self.patterns.iter().map(|p| p.key()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases: &[(&str, &str, bool)] = &[
            ("rooms/*", "rooms/1", true),
            ("rooms/*", "rooms/", true),
            ("rooms/*", "rooms/1/x", false),
            ("rooms/*", "rooms", false),
            ("rooms/**", "rooms/1/x", true),
            ("rooms/**", "rooms/", true),
            ("*/inbox", "alice/inbox", true),
            ("*/inbox", "a/b/inbox", false),
            ("**/inbox", "a/b/inbox", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a*b", "a/b", false),
            ("a**b", "a/b", true),
            ("*", "", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*.json", "a.b.json", true),
            ("x*", "x", true),
            ("*x*y*", "aaxbbyaa", true),
            ("*x*y*", "aaybbxaa", false),
            ("**a*", "a/a", true),
            ("**/x*", "a/b/xy", true),
            ("**/x*", "a/b/yx", false),
            ("a/**/b/*", "a/1/2/b/c", true),
            ("a/**/b/*", "a/1/2/b/c/d", false),
            ("*/b", "a/c/b", false),
        ];
        for &(pattern, topic, want) in cases {
            let glob = Pattern::glob(pattern).unwrap();
            assert_eq!(glob.matches(topic), want, "{pattern} vs {topic}");
        }
    }

    #[test]
    fn glob_matching_is_bounded_on_adversarial_input() {
        // The classic blow-up input for backtracking matchers.
        let pattern = "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let topic = "a".repeat(4096);
        assert!(!Pattern::glob(pattern).unwrap().matches(&topic));
    }

    #[test]
    fn pattern_limits() {
        assert_eq!(
            Pattern::prefix("").unwrap_err(),
            SelectionError::EmptyPattern
        );
        let long = "a".repeat(Pattern::MAX_LEN + 1);
        assert_eq!(
            Pattern::glob(&long).unwrap_err(),
            SelectionError::PatternTooLong
        );
        assert!(Pattern::glob(&long[1..]).is_ok());
        let stars = "*/".repeat(Pattern::MAX_WILDCARDS + 1);
        assert_eq!(
            Pattern::glob(&stars).unwrap_err(),
            SelectionError::TooManyWildcards
        );
        assert_eq!(
            Pattern::glob("a***").unwrap_err(),
            SelectionError::BadWildcard
        );
        assert_eq!(
            Pattern::glob("a\nb").unwrap_err(),
            SelectionError::ControlCharacter
        );
        assert_eq!(Pattern::prefix("a").unwrap().key(), "prefix:a");
        assert_ne!(
            Pattern::prefix("a").unwrap().key(),
            Pattern::glob("a").unwrap().key()
        );
    }

    mod properties {
        //! Matching as a property: `Pattern::glob` / `prefix` never panic on any text and
        //! agree with a plain backtracking matcher written from the definition.

        use proptest::prelude::*;

        use super::*;

        /// The definition: `**` takes any run of bytes, `*` any run without `/`, every other
        /// byte itself. Exponential in the worst case, so only for short inputs.
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

        /// Short texts over a small alphabet, so patterns and topics meet often.
        fn short(max: usize) -> impl Strategy<Value = String> {
            let chars = prop_oneof![Just('a'), Just('b'), Just('/'), Just('*'), Just('é')];
            prop::collection::vec(chars, 0..max).prop_map(String::from_iter)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn glob_agrees_with_the_reference(pattern in short(10), topic in short(12)) {
                let topic = topic.replace('*', "");
                if let Ok(glob) = Pattern::glob(&pattern) {
                    prop_assert_eq!(
                        glob.matches(&topic),
                        reference(pattern.as_bytes(), topic.as_bytes()),
                        "{} vs {}", pattern, topic
                    );
                }
            }

            #[test]
            fn prefix_agrees_with_starts_with(pattern in short(6), topic in short(10)) {
                if let Ok(prefix) = Pattern::prefix(&pattern) {
                    prop_assert_eq!(prefix.matches(&topic), topic.starts_with(&pattern));
                }
            }

            /// Any text: a pattern is refused with an error or made, and matching never panics
            /// (bounded work: at most pattern × topic steps).
            #[test]
            fn patterns_never_panic(pattern in any::<String>(), topic in any::<String>()) {
                for made in [Pattern::glob(&pattern), Pattern::prefix(&pattern)].into_iter().flatten() {
                    let _ = made.matches(&topic);
                    prop_assert_eq!(made.as_str(), pattern.as_str());
                }
            }
        }
    }
}
