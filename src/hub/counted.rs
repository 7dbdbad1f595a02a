//! Counted fields, `len ":" bytes`, as the broker entries (`broker/entry.rs`) and the presence
//! messages (`presence/wire.rs`) spell names, ids and texts: `len` is decimal without a
//! leading zero, so one field has one spelling and what is read encodes back to the same bytes.

use bytes::BufMut;

/// Writes `field` as `len ":" field`.
pub(super) fn write(out: &mut impl BufMut, field: &[u8]) {
    out.put_slice(field.len().to_string().as_bytes());
    out.put_u8(b':');
    out.put_slice(field);
}

/// Reads one field at the start of `bytes` whose length has at most `max_digits` digits: the
/// field and what follows it, or `None` when `bytes` does not start with one.
pub(super) fn read(bytes: &[u8], max_digits: usize) -> Option<(&[u8], &[u8])> {
    let colon = memchr::memchr(b':', bytes)?;
    let digits = &bytes[..colon];
    if digits.is_empty()
        || digits.len() > max_digits
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return None;
    }
    let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let end = colon.checked_add(1)?.checked_add(len)?;
    let field = bytes.get(colon + 1..end)?;
    Some((field, &bytes[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_field() {
        let mut out = Vec::new();
        write(&mut out, b"a:b");
        write(&mut out, b"");
        assert_eq!(&out[..], b"3:a:b0:");
        let (first, rest) = read(&out, 6).unwrap();
        assert_eq!((first, rest), (&b"a:b"[..], &b"0:"[..]));
        assert_eq!(read(rest, 6), Some((&b""[..], &b""[..])));
        for bad in [
            &b""[..],
            b"3",
            b":x",
            b"03:abc",
            b"x:",
            b"4:abc",
            b"1234567:x",
        ] {
            assert_eq!(read(bad, 6), None, "{bad:?}");
        }
    }
}
