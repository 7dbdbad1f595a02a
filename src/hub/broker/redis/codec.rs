//! Redis replies (`XRANGE`, `XREAD`) to stream entries.

use bytes::Bytes;
use redis::Value;

/// One stream entry as Redis gave it.
#[derive(Debug)]
pub(super) struct Raw {
    /// The entry id as Redis wrote it (the reader goes on from it).
    pub(super) id: String,
    /// `n` when the id is the hub's `0-<n>`; `None` for an entry someone else added.
    pub(super) n: Option<u64>,
    /// The `e` field.
    pub(super) body: Option<Bytes>,
}

/// The counter value in a hub entry id `0-<n>` (`n >= 1`).
pub(super) fn counter(id: &str) -> Option<u64> {
    let n = id.strip_prefix("0-")?;
    super::super::entry::position(n)
}

pub(super) fn bulk(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

pub(super) fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

/// Parses `[[id, [field, value, ...]], ...]`.
pub(super) fn entries(value: &Value) -> Vec<Raw> {
    let mut out = Vec::new();
    for raw in items(value) {
        let [id, fields] = items(raw) else { continue };
        let Some(id) = bulk(id).and_then(|id| std::str::from_utf8(id).ok()) else {
            continue;
        };
        let mut body = None;
        for pair in items(fields).chunks(2) {
            if let [name, value] = pair
                && bulk(name) == Some(b"e")
            {
                body = bulk(value).map(Bytes::copy_from_slice);
            }
        }
        out.push(Raw {
            id: id.to_owned(),
            n: counter(id),
            body,
        });
    }
    out
}

/// The entries of the one stream in an `XREAD` reply (RESP2 array or RESP3 map); empty for a
/// timeout (nil).
pub(super) fn read_reply(reply: &Value) -> Vec<Raw> {
    match reply {
        Value::Map(pairs) => pairs.first().map(|(_, v)| entries(v)).unwrap_or_default(),
        other => items(other)
            .first()
            .map(|pair| match items(pair) {
                [_, raw] => entries(raw),
                _ => Vec::new(),
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk_value(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn counters_are_the_hubs_ids_only() {
        assert_eq!(counter("0-1"), Some(1));
        assert_eq!(counter("0-18446744073709551615"), Some(u64::MAX));
        for bad in ["", "0-0", "1-1", "0-", "0-01", "0-x", "17000-0"] {
            assert_eq!(counter(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_xrange_and_xread_replies() {
        let entry = |id: &[u8], body: &[u8]| {
            Value::Array(vec![
                bulk_value(id),
                Value::Array(vec![bulk_value(b"e"), bulk_value(body)]),
            ])
        };
        let range = Value::Array(vec![
            entry(b"0-5", b"T1:a\ndata: x\n"),
            entry(b"1700-0", b"junk"),
            Value::Array(vec![bulk_value(b"0-6")]),
        ]);
        let got = entries(&range);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].n, got[0].body.as_deref()),
            (Some(5), Some(&b"T1:a\ndata: x\n"[..]))
        );
        assert_eq!((got[1].id.as_str(), got[1].n), ("1700-0", None));
        let resp2 = Value::Array(vec![Value::Array(vec![bulk_value(b"k"), range.clone()])]);
        assert_eq!(read_reply(&resp2).len(), 2);
        let resp3 = Value::Map(vec![(bulk_value(b"k"), range)]);
        assert_eq!(read_reply(&resp3).len(), 2);
        assert!(read_reply(&Value::Nil).is_empty());
    }
}
