//! Topics and topic matchers: the character rules, the `exact` and `urlpattern` matcher types,
//! the `*` wildcard, the hub's reserved namespace, and `application/x-www-form-urlencoded`
//! parsing (query strings and publication bodies).

use std::sync::Arc;

use tower_sse::hub::Matcher;
use url::Url;
use urlpattern::{UrlPattern, UrlPatternInit, UrlPatternMatchInput, UrlPatternOptions};

/// The most topic matchers in one subscription (the hub's `max_topics`).
pub const MAX_MATCHERS: usize = 32;
/// The longest topic or matcher, in bytes.
pub const MAX_TOPIC_LEN: usize = 1024;

/// Unicode general category `Cf` (format characters), Unicode 16: invisible characters that
/// allow identifier spoofing.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Whether `c` may appear in a topic, a matcher, an id or a type: not a C0 or C1 control, not
/// DEL, not a format character (`Cf`).
pub fn allowed_char(c: char) -> bool {
    let c = u32::from(c);
    if c < 0x20 || (0x7F..=0x9F).contains(&c) {
        return false;
    }
    !FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Whether every character of `text` is [`allowed_char`].
pub fn valid_text(text: &str) -> bool {
    text.chars().all(allowed_char)
}

/// A matcher type of the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    /// Byte-for-byte comparison (`match`, `match_exact`).
    Exact,
    /// A WHATWG URL Pattern, relative ones resolved against the hub's URL (`match_urlpattern`).
    UrlPattern,
}

impl MatchType {
    /// The subscription query parameter's matcher type: `match` and `match_exact` are
    /// `exact`, `match_urlpattern` is `urlpattern`; anything else is `None`.
    pub fn from_param(name: &str) -> Option<Self> {
        match name {
            "match" | "match_exact" => Some(Self::Exact),
            "match_urlpattern" => Some(Self::UrlPattern),
            _ => None,
        }
    }

    /// The type's name (`exact`, `urlpattern`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::UrlPattern => "urlpattern",
        }
    }

    /// A `match_type` of an authorization detail.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "exact" => Some(Self::Exact),
            "urlpattern" => Some(Self::UrlPattern),
            _ => None,
        }
    }
}

/// Whether `name` is in the reserved `match` namespace of subscription parameters.
pub fn is_match_param(name: &str) -> bool {
    name.len() >= 5 && name.as_bytes()[..5].eq_ignore_ascii_case(b"match")
}

/// Why a matcher was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatcherError {
    Empty,
    TooLong,
    BadCharacter,
    BadPattern(String),
}

impl std::fmt::Display for MatcherError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("empty matcher"),
            Self::TooLong => write!(f, "matcher longer than {MAX_TOPIC_LEN} bytes"),
            Self::BadCharacter => f.write_str("control or format character in matcher"),
            Self::BadPattern(err) => write!(f, "malformed URL pattern: {err}"),
        }
    }
}

/// A topic matcher: from a subscription's query, or from a token's authorization details.
#[derive(Clone, Debug)]
pub enum TopicMatcher {
    /// The reserved `*`: every topic.
    Any,
    Exact(String),
    UrlPattern(UrlPatternMatcher),
}

impl TopicMatcher {
    /// Checks `value` and compiles it as a `kind` matcher (`*` is the wildcard whatever the
    /// kind).
    pub fn parse(kind: MatchType, value: &str, hub: &Url) -> Result<Self, MatcherError> {
        if value.is_empty() {
            return Err(MatcherError::Empty);
        }
        if value.len() > MAX_TOPIC_LEN {
            return Err(MatcherError::TooLong);
        }
        if !valid_text(value) {
            return Err(MatcherError::BadCharacter);
        }
        if value == "*" {
            return Ok(Self::Any);
        }
        match kind {
            MatchType::Exact => Ok(Self::Exact(value.to_owned())),
            MatchType::UrlPattern => UrlPatternMatcher::new(value, hub).map(Self::UrlPattern),
        }
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => exact == topic,
            Self::UrlPattern(pattern) => pattern.matches(topic),
        }
    }
}

/// A WHATWG URL Pattern over topics, for the hub ([`Matcher`]) and for token grants.
///
/// `urlpattern` compiles each component to the `regex` crate, whose matching is linear in the
/// input: a crafted pattern cannot backtrack catastrophically (the specification's
/// requirement). Patterns are at most [`MAX_TOPIC_LEN`] bytes, which bounds compilation too.
#[derive(Clone)]
pub struct UrlPatternMatcher {
    pattern: Arc<UrlPattern>,
    /// The hub's URL: the base of relative patterns and relative topics.
    base: Url,
    /// `"urlpattern:<pattern>"`.
    key: Box<str>,
}

impl std::fmt::Debug for UrlPatternMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("UrlPatternMatcher").field(&self.key).finish()
    }
}

impl UrlPatternMatcher {
    /// Compiles `pattern`, relative to `hub`. `ignoreCase` stays off, as the specification
    /// requires.
    pub fn new(pattern: &str, hub: &Url) -> Result<Self, MatcherError> {
        let init =
            UrlPatternInit::parse_constructor_string::<regex::Regex>(pattern, Some(hub.clone()))
                .map_err(|err| MatcherError::BadPattern(err.to_string()))?;
        let compiled = UrlPattern::parse(init, UrlPatternOptions::default())
            .map_err(|err| MatcherError::BadPattern(err.to_string()))?;
        Ok(Self {
            pattern: Arc::new(compiled),
            base: hub.clone(),
            key: format!("urlpattern:{pattern}").into(),
        })
    }
}

impl Matcher for UrlPatternMatcher {
    /// A topic that does not parse as a URL reference against the hub's URL never matches.
    fn matches(&self, topic: &str) -> bool {
        match self.base.join(topic) {
            Ok(url) => self
                .pattern
                .test(UrlPatternMatchInput::Url(url))
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    fn key(&self) -> &str {
        &self.key
    }
}

/// The `*` wildcard as a hub pattern: every topic.
#[derive(Debug, Clone, Copy)]
pub struct Everything;

impl Matcher for Everything {
    fn matches(&self, _: &str) -> bool {
        true
    }

    fn key(&self) -> &str {
        "mercure:*"
    }
}

/// Whether `topic` addresses the hub's reserved namespace: resolved against the hub's URL, with
/// dot-segments removed and percent-escapes of unreserved characters decoded, its path is the
/// hub's path or below it (whatever the scheme and authority).
pub fn is_reserved(topic: &str, hub: &Url) -> bool {
    let Ok(resolved) = hub.join(topic) else {
        return false;
    };
    let decoded = decode_unreserved(resolved.path());
    // Decoding can make new dot-segments (`%2E%2E`): resolve once more.
    let path = match hub.join(&decoded) {
        Ok(again) if decoded.starts_with('/') => again.path().to_owned(),
        _ => decoded,
    };
    let base = hub.path();
    path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `path` with every `%XX` that encodes an unreserved character (`A-Z a-z 0-9 - . _ ~`)
/// decoded; other escapes kept as they are.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(byte) = hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(char::from(byte));
                    i += 3;
                    continue;
                }
            }
        }
        // `path` is ASCII (a serialized URL path), so byte by byte is char by char.
        out.push(char::from(bytes[i]));
        i += 1;
    }
    out
}

/// Parses `application/x-www-form-urlencoded` (the WHATWG algorithm: `&`-separated, `+` is a
/// space, percent-decoding), refusing names and values that are not UTF-8 once decoded.
pub fn form_pairs(input: &[u8]) -> Result<Vec<(String, String)>, std::string::FromUtf8Error> {
    let mut pairs = Vec::new();
    for part in input.split(|&b| b == b'&').filter(|part| !part.is_empty()) {
        let (name, value) = match part.iter().position(|&b| b == b'=') {
            Some(at) => (&part[..at], &part[at + 1..]),
            None => (part, &[][..]),
        };
        pairs.push((decode_form(name)?, decode_form(value)?));
    }
    Ok(pairs)
}

fn decode_form(raw: &[u8]) -> Result<String, std::string::FromUtf8Error> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    String::from_utf8(percent_encoding::percent_decode(&spaced).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Url {
        Url::parse("https://localhost/.well-known/mercure").unwrap()
    }

    #[test]
    fn reserved_namespace() {
        let hub = hub();
        for topic in [
            "/.well-known/mercure",
            "/.well-known/mercure/subscriptions/x",
            "https://evil.example/.well-known/mercure/x",
            "/.well-known/%6Dercure/x",
            "/.well-known/mercure/../mercure/x",
            "/a/%2E%2E/.well-known/mercure",
            "mercure/x",
        ] {
            assert!(is_reserved(topic, &hub), "{topic}");
        }
        for topic in [
            "foo",
            "https://example.com/.well-known/mercurex",
            "/.well-known/mercure%2Fx",
        ] {
            assert!(!is_reserved(topic, &hub), "{topic}");
        }
    }

    #[test]
    fn characters() {
        assert!(valid_text("https://example.com/é"));
        for bad in [
            "a\u{0}",
            "a\u{7f}",
            "a\u{85}",
            "a\u{200b}",
            "a\u{feff}",
            "\u{e0041}",
        ] {
            assert!(!valid_text(bad), "{bad:?}");
        }
    }

    #[test]
    fn url_patterns() {
        let hub = hub();
        let books = UrlPatternMatcher::new("https://example.com/books/:id", &hub).unwrap();
        assert!(books.matches("https://example.com/books/1"));
        assert!(!books.matches("https://example.com/books/1/x"));
        assert!(!books.matches("https://EXAMPLE.com/Books/1"));
        let relative =
            UrlPatternMatcher::new("/.well-known/mercure/subscriptions/*", &hub).unwrap();
        assert!(relative.matches("/.well-known/mercure/subscriptions/exact/a/b"));
        assert!(UrlPatternMatcher::new("https://example.com/(a", &hub).is_err());
    }

    #[test]
    fn forms() {
        let pairs = form_pairs(b"a=b+c&&d&e=%C3%A9%3D").unwrap();
        assert_eq!(
            pairs,
            [
                ("a".into(), "b c".into()),
                ("d".into(), String::new()),
                ("e".into(), "é=".into())
            ]
        );
        assert!(form_pairs(b"a=%FF").is_err());
    }
}
