//! Topic names as NATS subject tokens (and key-value keys).
//!
//! A token is `_` followed by the name with every byte outside `[A-Za-z0-9_-]` written as `=`
//! and two upper-case hex digits. It is never empty, has no `.`, `*`, `>` or whitespace (so it
//! can neither split a subject nor widen a subscription), is a valid key-value key, and maps
//! back to exactly one name.

/// The token for `topic`.
pub(super) fn token(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len() + 1);
    out.push('_');
    for &b in topic.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('=');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

/// The topic a token names, or `None` when it is not one [`token`] makes.
#[cfg(test)]
pub(super) fn topic(token: &str) -> Option<String> {
    let rest = token.strip_prefix('_')?.as_bytes();
    let mut out = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            b'=' => {
                let hex = rest.get(i + 1..i + 3)?;
                if !hex
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
                {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_round_trip_and_stay_one_token() {
        for name in [
            "",
            "rooms/1",
            "a.b",
            "*",
            ">",
            "a b\tc\nd",
            "=3D",
            "_",
            "caf\u{e9} \u{1f600}",
            "sse.t.>",
            "-_AZaz09",
        ] {
            let t = token(name);
            assert!(t.starts_with('_') && t.len() > 1 || name.is_empty(), "{t}");
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'='),
                "{name:?} -> {t}"
            );
            assert_eq!(topic(&t).as_deref(), Some(name), "{t}");
        }
        assert_ne!(token("a.b"), token("a=2Eb"));
        assert_eq!(topic("x"), None);
        assert_eq!(topic("_=2"), None);
        assert_eq!(topic("_=ZZ"), None);
        assert_eq!(topic("_a.b"), None);
    }
}
