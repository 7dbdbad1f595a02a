//! One hub event as a broker carries it: its topics (or "every topic"), flags and SSE fields,
//! in one byte string that any broker can store (a Redis stream entry's field, a NATS message
//! body). Decoding is strict and bounded: what a broker hands back may have been written by
//! anyone with access to it.
//!
//! ```text
//! entry  = *topic ["A"] [id] ["P"] ["C"] LF fields
//! topic  = "T" len ":" name            ; len: decimal, the name's length in bytes
//! id     = "I" len ":" value           ; the publisher's id (else the position is the id)
//! flags  : "A" every topic, "P" private, "C" closes its topics
//! fields = the event's SSE fields without an id, ending with LF (may be empty)
//! ```
//!
//! A publisher's id is never a position's spelling (decimal digits): [`publisher_id`] refuses
//! those, so an id a client sends back names one or the other, never both.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{EncodedEvent, hub::counted};

/// Most topics one entry may name (a `publish_many` larger than this is refused).
pub(crate) const MAX_TOPICS: usize = 1024;

/// Who an entry is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Targets {
    /// These topics (sorted, unique).
    Topics(Vec<Box<str>>),
    /// Every topic (a broadcast).
    All,
}

/// A decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) targets: Targets,
    pub(crate) private: bool,
    pub(crate) close: bool,
    /// The publisher's id (`None`: the position is the id).
    pub(crate) id: Option<Box<str>>,
    /// The SSE fields without an id (`None`: a close without a final event).
    pub(crate) fields: Option<Bytes>,
}

/// The longest publisher's id a broker carries, in bytes (its index key must fit a NATS
/// subject in the protocol's 4 KiB control line, escaped).
pub(crate) const MAX_ID_LEN: usize = 1024;

/// Whether `id` may be a publisher's id on a broker: not empty, at most [`MAX_ID_LEN`] bytes,
/// not a position's spelling (all digits), no CR, LF or NUL.
pub(crate) fn publisher_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.bytes().all(|b| b.is_ascii_digit())
        && memchr::memchr3(b'\r', b'\n', b'\0', id.as_bytes()).is_none()
}

/// Encodes an entry. `id` is the publisher's (checked with [`publisher_id`]); `fields` are the
/// event's fields without an id (`None` for a close without a final event).
pub(crate) fn encode(
    targets: &Targets,
    private: bool,
    close: bool,
    id: Option<&str>,
    fields: Option<&[u8]>,
) -> Bytes {
    let names = match targets {
        Targets::Topics(names) => &names[..],
        Targets::All => &[],
    };
    let head: usize =
        names.iter().map(|n| n.len() + 24).sum::<usize>() + id.map_or(0, |id| id.len() + 24) + 4;
    let mut buf = BytesMut::with_capacity(head + fields.map_or(0, <[u8]>::len));
    for name in names {
        buf.put_u8(b'T');
        counted::write(&mut buf, name.as_bytes());
    }
    if matches!(targets, Targets::All) {
        buf.put_u8(b'A');
    }
    if let Some(id) = id {
        buf.put_u8(b'I');
        counted::write(&mut buf, id.as_bytes());
    }
    if private {
        buf.put_u8(b'P');
    }
    if close {
        buf.put_u8(b'C');
    }
    buf.put_u8(b'\n');
    if let Some(fields) = fields {
        buf.put_slice(fields);
    }
    buf.freeze()
}

/// Why an entry could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadEntry;

/// Decodes an entry (strictly: anything else is [`BadEntry`]).
pub(crate) fn decode(bytes: &Bytes) -> Result<Entry, BadEntry> {
    let mut names = Vec::new();
    let (mut all, mut private, mut close) = (false, false, false);
    let mut id = None;
    let mut at = 0;
    // In the order the encoder writes them (topics, then `A`, `I`, `P`, `C`), each flag once:
    // one entry has one spelling (the `broker_entry` fuzz target found a flag before a topic).
    loop {
        match bytes.get(at) {
            Some(b'T') if !(all || id.is_some() || private || close) => {
                let (name, end) = counted(bytes, at + 1)?;
                if names.len() >= MAX_TOPICS {
                    return Err(BadEntry);
                }
                names.push(Box::<str>::from(name));
                at = end;
            }
            Some(b'A') if !(all || id.is_some() || private || close) => {
                all = true;
                at += 1;
            }
            Some(b'I') if !(id.is_some() || private || close) => {
                let (value, end) = counted(bytes, at + 1)?;
                if !publisher_id(value) {
                    return Err(BadEntry);
                }
                id = Some(Box::<str>::from(value));
                at = end;
            }
            Some(b'P') if !(private || close) => {
                private = true;
                at += 1;
            }
            Some(b'C') if !close => {
                close = true;
                at += 1;
            }
            Some(b'\n') => break,
            _ => return Err(BadEntry),
        }
    }
    let targets = match (all, names.is_empty()) {
        (true, true) => Targets::All,
        (false, false) => {
            if !names.windows(2).all(|w| w[0] < w[1]) {
                return Err(BadEntry);
            }
            Targets::Topics(names)
        }
        _ => return Err(BadEntry),
    };
    let fields = bytes.slice(at + 1..);
    let fields = if fields.is_empty() && close {
        None
    } else {
        // Checked now, so that a bad entry is refused whole, not half delivered.
        stamp(&fields, 0, None).ok_or(BadEntry)?;
        Some(fields)
    };
    Ok(Entry {
        targets,
        private,
        close,
        id,
        fields,
    })
}

/// The counted text (at most 6 length digits) at `start`: the text and where it ends.
fn counted(bytes: &Bytes, start: usize) -> Result<(&str, usize), BadEntry> {
    let (value, rest) = counted::read(bytes.get(start..).ok_or(BadEntry)?, 6).ok_or(BadEntry)?;
    let value = std::str::from_utf8(value).map_err(|_| BadEntry)?;
    Ok((value, bytes.len() - rest.len()))
}

/// The event as subscribers get it: the stored fields, then `id: <publisher's id>` or
/// `id: <pos>` last (so it is the id the client keeps). `None` when `fields` is not exactly
/// one event's fields without the blank line's end: it must end with LF, have no blank line and
/// no CR. Empty fields (an event that only had an id) give the id alone.
pub(crate) fn stamp(fields: &[u8], pos: u64, id: Option<&str>) -> Option<EncodedEvent> {
    if !fields.is_empty()
        && (!fields.ends_with(b"\n")
            || fields.starts_with(b"\n")
            || memchr::memmem::find(fields, b"\n\n").is_some()
            || memchr::memchr(b'\r', fields).is_some())
    {
        return None;
    }
    let position;
    let id = match id {
        Some(id) => id,
        None => {
            position = itoa_u64(pos);
            &position
        }
    };
    let mut buf = BytesMut::with_capacity(fields.len() + id.len() + 6);
    buf.put_slice(fields);
    buf.put_slice(b"id: ");
    let start = buf.len();
    buf.put_slice(id.as_bytes());
    buf.put_slice(b"\n\n");
    Some(EncodedEvent::from_parts(
        buf.freeze(),
        Some(start..start + id.len()),
    ))
}

/// The checks behind the `broker_entry` fuzz target (see `crate::hub::__fuzz_broker_entry`).
#[cfg(feature = "_fuzz")]
pub(crate) fn fuzz_one(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(entry) = decode(&bytes) {
        let again = encode(
            &entry.targets,
            entry.private,
            entry.close,
            entry.id.as_deref(),
            entry.fields.as_deref(),
        );
        assert_eq!(&again[..], data, "a read entry encodes back to its bytes");
        let want = entry.id.as_deref().unwrap_or("42");
        if let Some(fields) = &entry.fields {
            let stamped =
                stamp(fields, 42, entry.id.as_deref()).expect("decode checked the fields");
            assert_eq!(stamped.id(), Some(want));
            let mut decoder = crate::client::Decoder::new();
            decoder.feed(stamped.as_bytes());
            let mut events = 0;
            while let Some(frame) = decoder.decode_eof().expect("a stamped entry decodes") {
                if let crate::client::Frame::Event(event) = frame {
                    events += 1;
                    assert_eq!(event.id(), want, "the publisher's id, else the position");
                }
            }
            assert!(events <= 1, "one entry, at most one event");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(pos) = position(text) {
            assert_eq!(pos.to_string(), text, "a position is its decimal digits");
        }
    }
    let _ = split_direct(data);
}

fn itoa_u64(n: u64) -> String {
    n.to_string()
}

/// The position an id of a broker names: its decimal digits (no sign, no leading zero, at
/// least 1).
pub(crate) fn position(id: &str) -> Option<u64> {
    if id.is_empty()
        || id.len() > 20
        || id.starts_with('0')
        || !id.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    id.parse().ok()
}

/// A presence message on the live channel: `P` then the message (direct messages start with
/// a digit, so the two never mix).
pub(crate) fn presence(message: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(message.len() + 1);
    payload.push(b'P');
    payload.extend_from_slice(message);
    payload
}

/// The message for `client_id`: `<len>:<client id><event>`, or `<len>:<client id>` alone to
/// disconnect it (`event` `None`).
pub(crate) fn direct(client_id: &str, event: Option<&EncodedEvent>) -> Vec<u8> {
    let head = format!("{}:{client_id}", client_id.len());
    let event = event.map_or(&[][..], |event| event.as_bytes());
    let mut message = Vec::with_capacity(head.len() + event.len());
    message.extend_from_slice(head.as_bytes());
    message.extend_from_slice(event);
    message
}

/// `<len>:<client id><event>` → (client id, `Some(event)`), when the event is one event
/// without an id (events sent to a client keep the client's id); `<len>:<client id>` alone →
/// (client id, `None`): disconnect it.
pub(crate) fn split_direct(payload: &[u8]) -> Option<(&str, Option<EncodedEvent>)> {
    let (client_id, event) = split_head(payload)?;
    if event.is_empty() {
        return Some((client_id, None));
    }
    Some((client_id, Some(raw_event(event)?)))
}

fn split_head(payload: &[u8]) -> Option<(&str, &[u8])> {
    let colon = memchr::memchr(b':', payload)?;
    let len: usize = std::str::from_utf8(&payload[..colon]).ok()?.parse().ok()?;
    let start = colon + 1;
    let end = start.checked_add(len)?;
    let client_id = std::str::from_utf8(payload.get(start..end)?).ok()?;
    Some((client_id, &payload[end..]))
}

/// One complete event, no id (events sent to a client keep the client's id), or `None`.
fn raw_event(bytes: &[u8]) -> Option<EncodedEvent> {
    let body = bytes.strip_suffix(b"\n")?;
    if !body.ends_with(b"\n")
        || memchr::memmem::find(body, b"\n\n").is_some()
        || memchr::memchr(b'\r', bytes).is_some()
        || memchr::memmem::find(bytes, b"\nid:").is_some()
        || bytes.starts_with(b"id:")
    {
        return None;
    }
    Some(EncodedEvent::from_parts(
        Bytes::copy_from_slice(bytes),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    fn topics(names: &[&str]) -> Targets {
        Targets::Topics(names.iter().map(|&n| n.into()).collect())
    }

    #[test]
    fn round_trips() {
        for (targets, private, close, id, fields) in [
            (topics(&["a"]), false, false, None, Some(&b"data: x\n"[..])),
            (
                topics(&["", "T3:x\n", "a:b", "\u{e9}"]),
                true,
                false,
                Some("urn:uuid:1"),
                Some(b"event: e\ndata: \n"),
            ),
            (Targets::All, false, false, None, Some(b"")),
            (Targets::All, false, false, None, Some(b"data: all\n")),
            (topics(&["room"]), false, true, None, None),
            (topics(&["room"]), false, true, None, Some(b"data: bye\n")),
            (topics(&["a"]), false, false, None, Some(b"")),
            (
                topics(&["", "0123456789"]),
                false,
                false,
                Some("é id"),
                Some(b"data: x\n"),
            ),
        ] {
            let bytes = encode(&targets, private, close, id, fields);
            let entry = decode(&bytes).unwrap();
            assert_eq!(entry.targets, targets);
            assert_eq!(entry.id.as_deref(), id);
            assert_eq!((entry.private, entry.close), (private, close));
            assert_eq!(
                entry.fields.as_deref(),
                fields.filter(|f| !(f.is_empty() && close))
            );
        }
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        for bad in [
            &b""[..],
            b"Ta",
            b"T:a\n",
            b"T1a\n",
            b"T5:ab\n",
            b"T1:a",
            b"T99999999:a\n",
            b"T-1:a\n",
            b"\n",
            b"AT1:a\n",
            b"T1:bT1:a\n",
            b"T1:aT1:a\n",
            b"T1:aPP\n",
            b"T1:aX\n",
            b"T1:a\ndata: x",
            b"T1:a\ndata: x\n\ndata: y\n",
            b"T1:a\ndata: x\r\n",
            b"T1:a\n\n",
            b"T1:\xff\ndata: x\n",
            // A length with a leading zero: read, it would be written back as `T1:a`
            // (the `broker_entry` fuzz target's find, `fuzz/corpus/broker_entry/leading_zero`).
            b"T01:a\ndata: x\n",
            b"T00:\ndata: x\n",
            // Flags out of the encoder's order (`CT6:roomCa` was the fuzz target's find).
            b"CT6:roomCa\nretry: 5\n",
            b"T1:aCP\n",
            b"PA\ndata: x\n",
            b"T1:aPT1:b\n",
            // Publisher's ids: after `A`, before `P`; never a position, never a line break.
            b"I1:xT1:a\n",
            b"T1:aPI1:x\n",
            b"T1:aI1:xI1:y\n",
            b"T1:aI2:12\ndata: x\n",
            b"T1:aI0:\ndata: x\n",
            b"T1:aI3:a\nb\ndata: x\n",
            b"T1:aI01:x\ndata: x\n",
        ] {
            assert_eq!(decode(&Bytes::from_static(bad)), Err(BadEntry), "{bad:?}");
        }
    }

    #[test]
    fn stamp_puts_the_id_last() {
        let event = stamp(b"event: x\ndata: y\n", 42, None).unwrap();
        assert_eq!(&event.as_bytes()[..], b"event: x\ndata: y\nid: 42\n\n");
        assert_eq!(event.id(), Some("42"));
        assert_eq!(&stamp(b"", 7, None).unwrap().as_bytes()[..], b"id: 7\n\n");
        let event = stamp(b"data: y\n", 42, Some("urn:x")).unwrap();
        assert_eq!(&event.as_bytes()[..], b"data: y\nid: urn:x\n\n");
        assert_eq!(event.id(), Some("urn:x"));
    }

    #[test]
    fn publisher_ids_are_never_positions() {
        for good in ["a", "urn:uuid:1", "1a", "-1", "é"] {
            assert!(publisher_id(good), "{good:?}");
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        for bad in ["", "1", "0", "007", "a\nb", "a\rb", "a\0b", &long] {
            assert!(!publisher_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn positions_are_plain_decimals() {
        assert_eq!(position("1"), Some(1));
        assert_eq!(position("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "0",
            "01",
            "+1",
            "-1",
            "1-0",
            "18446744073709551616",
            "x",
        ] {
            assert_eq!(position(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn direct_messages_round_trip_and_split_without_panicking() {
        let event = Event::new().data("x").encode();
        let message = direct("bob", Some(&event));
        assert_eq!(split_head(&message), Some(("bob", &b"data: x\n\n"[..])));
        let (id, back) = split_direct(&message).unwrap();
        assert_eq!(
            (id, &back.unwrap().as_bytes()[..]),
            ("bob", &b"data: x\n\n"[..])
        );
        // No event: a disconnect.
        let disconnect = direct("bob", None);
        assert_eq!(&disconnect[..], b"3:bob");
        assert!(matches!(split_direct(&disconnect), Some(("bob", None))));
        assert_eq!(
            split_head(b"0:data: x\n\n"),
            Some(("", &b"data: x\n\n"[..]))
        );
        for bad in [
            &b""[..],
            b"3",
            b"x:bob",
            b"4:bob",
            b"18446744073709551615:a",
            b"99999999999999999999999:a",
        ] {
            assert_eq!(split_head(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_one_id_less_event_is_accepted() {
        assert!(raw_event(b"data: x\n\n").is_some());
        for bad in [
            &b"data: x\n"[..],
            b"data: x\n\ndata: y\n\n",
            b"data: x\r\n\n",
            b"id: 5\ndata: x\n\n",
            b"data: x\nid: 5\n\n",
        ] {
            assert!(raw_event(bad).is_none(), "{bad:?}");
        }
    }

    // Reads events back with the crate's decoder (feature `client-plain`).
    #[cfg(feature = "client-plain")]
    mod properties {
        //! The codec as a property: what any broker hands back (written by anyone) never
        //! panics the reader, and what the hub writes comes back exactly.

        use proptest::prelude::*;

        use super::*;
        use crate::client::Decoder;

        /// Strings rich in the codec's own bytes (`T`, digits, `:`, LF) and in line breaks.
        fn text() -> impl Strategy<Value = String> {
            let special = prop_oneof![
                Just('T'),
                Just('A'),
                Just('P'),
                Just('C'),
                Just('1'),
                Just(':'),
                Just('\n'),
                Just('\r'),
                Just(' '),
                Just('\0'),
                any::<char>(),
            ];
            prop_oneof![
                prop::collection::vec(special, 0..16).prop_map(String::from_iter),
                any::<String>(),
            ]
        }

        /// An event as the crate's `Event` encoder makes it, from any strings (fields the
        /// encoder refuses are left out).
        fn event() -> impl Strategy<Value = Event> {
            (
                prop::option::of(text()),
                prop::option::of(text()),
                prop::option::of(text()),
                prop::option::of(text()),
                prop::option::of(0u64..100_000),
            )
                .prop_map(|(comment, kind, id, data, retry)| {
                    let mut event = Event::new();
                    if let Some(comment) = comment {
                        event = event.comment(comment);
                    }
                    if let Some(retry) = retry {
                        event = event.retry(std::time::Duration::from_millis(retry));
                    }
                    if let Some(kind) = kind.filter(|k| !k.contains(['\r', '\n'])) {
                        event = event.event(kind);
                    }
                    if let Some(id) = id.filter(|i| !i.contains(['\r', '\n', '\0'])) {
                        event = event.id(id);
                    }
                    if let Some(data) = data {
                        event = event.data(data);
                    }
                    event
                })
        }

        /// The fields a broker stores for `event` (as `broker::fields_of` makes them): no id,
        /// no final blank line.
        fn fields_of(event: Event) -> Bytes {
            let mut fields = event.encode().without_id();
            if fields.ends_with(b"\n") {
                fields.truncate(fields.len() - 1);
            }
            fields
        }

        /// Every frame a fresh decoder reads from `bytes` (ids aside).
        fn frames(bytes: &[u8]) -> Vec<crate::client::Frame> {
            let mut decoder = Decoder::new();
            decoder.feed(bytes);
            let mut out = Vec::new();
            while let Some(frame) = decoder.decode_eof().unwrap() {
                out.push(frame);
            }
            out
        }

        fn targets() -> impl Strategy<Value = Targets> {
            prop_oneof![
                1 => Just(Targets::All),
                4 => prop::collection::btree_set(text(), 1..6)
                    .prop_map(|names| Targets::Topics(names.into_iter().map(Into::into).collect())),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn decode_never_panics_on_any_bytes(bytes in any::<Vec<u8>>()) {
                let _ = decode(&Bytes::from(bytes));
            }

            /// Valid entries with bytes changed, cut or added: refused or read, never a panic;
            /// what is read is what an encoder would write for it.
            #[test]
            fn decode_never_panics_on_damaged_entries(
                targets in targets(),
                private in any::<bool>(),
                event in event(),
                publisher in prop::option::of(text()),
                cut in any::<prop::sample::Index>(),
                at in any::<prop::sample::Index>(),
                byte in any::<u8>(),
            ) {
                let id = publisher.as_deref().filter(|id| publisher_id(id));
                let mut bytes = encode(&targets, private, false, id, Some(&fields_of(event))).to_vec();
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                    bytes.truncate(cut.index(bytes.len() + 1).max(at));
                }
                if let Ok(entry) = decode(&Bytes::from(bytes.clone())) {
                    let again = encode(&entry.targets, entry.private, entry.close, entry.id.as_deref(), entry.fields.as_deref());
                    prop_assert_eq!(&again[..], &bytes[..]);
                }
            }

            /// encode → decode gives back the topics, flags and fields, for any topics and any
            /// event the crate's encoder makes; stamped with a position, the event reads back
            /// as the original with that id.
            #[test]
            fn encode_then_decode_round_trips(
                targets in targets(),
                private in any::<bool>(),
                close in any::<bool>(),
                event in prop::option::of(event()),
                publisher in prop::option::of(text()),
                pos in 1u64..u64::MAX,
            ) {
                let publisher = publisher.filter(|id| publisher_id(id));
                // The hub writes no fields only for a close without a final event.
                prop_assume!(event.is_some() || close);
                let original = event.clone().map(|e| frames(&e.encode().into_bytes()));
                let fields = event.map(fields_of);
                let bytes = encode(&targets, private, close, publisher.as_deref(), fields.as_deref());
                let entry = match decode(&bytes) {
                    Ok(entry) => entry,
                    Err(BadEntry) => return Err(TestCaseError::fail(format!("refused {bytes:?}"))),
                };
                prop_assert_eq!(&entry.targets, &targets);
                prop_assert_eq!((entry.private, entry.close), (private, close));
                prop_assert_eq!(entry.id.as_deref(), publisher.as_deref());
                let kept = fields.clone().filter(|f| !(f.is_empty() && close));
                prop_assert_eq!(&entry.fields, &kept);
                if let (Some(fields), Some(original)) = (entry.fields, original) {
                    let stamped = stamp(&fields, pos, publisher.as_deref()).expect("decode checked the fields");
                    let id = publisher.clone().unwrap_or_else(|| pos.to_string());
                    prop_assert_eq!(stamped.id(), Some(id.as_str()));
                    let mut read = frames(stamped.as_bytes());
                    let mut want = original;
                    // The stored event carries the position as its id; events without data
                    // dispatch nothing, with or without it.
                    for frame in want.iter_mut().chain(read.iter_mut()) {
                        if let crate::client::Frame::Event(e) = frame {
                            *e = crate::client::MessageEvent::new(e.event(), e.data(), "");
                        }
                    }
                    prop_assert_eq!(read, want);
                }
            }
        }
    }
}
