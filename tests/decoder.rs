//! The event-stream decoder against the WHATWG spec's examples, the web-platform-tests
//! `eventsource/format-*` cases, a round trip through `tower_sse::Event`, a simple reference
//! parser, and random input.

use std::time::Duration;

use tower_sse::Event;
use tower_sse::client::{DecodeError, Decoder, Frame, MessageEvent};

type Output = Vec<Result<Frame, DecodeError>>;

/// Feeds `chunks`, draining the decoder after each, then ends the stream.
fn decode_chunks<'a>(mut decoder: Decoder, chunks: impl IntoIterator<Item = &'a [u8]>) -> Output {
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk);
        loop {
            match decoder.decode() {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(err) => out.push(Err(err)),
            }
        }
    }
    loop {
        match decoder.decode_eof() {
            Ok(Some(frame)) => out.push(Ok(frame)),
            Ok(None) => break,
            Err(err) => out.push(Err(err)),
        }
    }
    out
}

fn decode(input: &[u8]) -> Output {
    decode_chunks(Decoder::new(), [input])
}

fn ev(event: &str, data: &str, id: &str) -> Frame {
    Frame::Event(MessageEvent::new(event, data, id))
}

fn msg(data: &str) -> Frame {
    ev("message", data, "")
}

fn retry(ms: u64) -> Frame {
    Frame::Retry(Duration::from_millis(ms))
}

fn comment(text: &str) -> Frame {
    Frame::Comment(text.into())
}

/// Decodes `input` whole, split in two at every byte boundary, and one byte at a time.
#[track_caller]
fn check(name: &str, input: &[u8], expected: &[Frame]) {
    let expected: Output = expected.iter().cloned().map(Ok).collect();
    assert_eq!(decode(input), expected, "{name}: whole");
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(
            decode_chunks(Decoder::new(), [a, b]),
            expected,
            "{name}: split at {at}"
        );
    }
    assert_eq!(
        decode_chunks(Decoder::new(), input.chunks(1)),
        expected,
        "{name}: one byte at a time"
    );
}

/// The body `eventsource/resources/message.py` serves: the message, then "\n\n" unless
/// `newline=none`, then "\n".
fn wpt_message(message: &str, newline_none: bool) -> Vec<u8> {
    let mut body = message.as_bytes().to_vec();
    if !newline_none {
        body.extend_from_slice(b"\n\n");
    }
    body.push(b'\n');
    body
}

// ---------------------------------------------------------------------------------------------
// The spec's examples (HTML §9.2.5 "Parsing an event stream" / §9.2.6 "Interpreting an event
// stream").

#[test]
fn spec_stock() {
    check(
        "spec-stock",
        b"data: YHOO\ndata: +2\ndata: 10\n\n",
        &[msg("YHOO\n+2\n10")],
    );
}

#[test]
fn spec_four_blocks() {
    let input = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n";
    check(
        "spec-four-blocks",
        input,
        &[
            comment("test stream"),
            ev("message", "first event", "1"),
            ev("message", "second event", ""),
            ev("message", " third event", ""),
        ],
    );
}

#[test]
fn spec_three_blocks() {
    // "The first block fires events with the data set to the empty string, as would the last
    // block if it was followed by a blank line. The middle block fires an event with the data
    // set to a single newline character. The last block is discarded because it is not
    // followed by a blank line."
    check(
        "spec-three-blocks",
        b"data\n\ndata\ndata\n\ndata:",
        &[msg(""), msg("\n")],
    );
}

#[test]
fn spec_space_after_colon() {
    check(
        "spec-space-after-colon",
        b"data:test\n\ndata: test\n\n",
        &[msg("test"), msg("test")],
    );
}

#[test]
fn spec_messages_and_types() {
    check(
        "spec-messages",
        b"data: This is the first message.\n\ndata: This is the second message, it\ndata: has two lines.\n\ndata: This is the third message.\n\n",
        &[
            msg("This is the first message."),
            msg("This is the second message, it\nhas two lines."),
            msg("This is the third message."),
        ],
    );
    check(
        "spec-event-types",
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n",
        &[
            ev("add", "73857293", ""),
            ev("remove", "2153", ""),
            ev("add", "113411", ""),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// web-platform-tests `eventsource/format-*.{htm,js}`. Each input is what the test's server
// script sends; `format-mime-*` are about HTTP headers and are not here.

#[test]
fn format_bom() {
    check(
        "format-bom",
        &wpt_message("\u{FEFF}data:1\n\n\u{FEFF}data:2\n\ndata:3", false),
        &[msg("1"), msg("3")],
    );
}

#[test]
fn format_bom_2() {
    check(
        "format-bom-2",
        &wpt_message("\u{FEFF}\u{FEFF}data:1\n\ndata:2\n\ndata:3", false),
        &[msg("2"), msg("3")],
    );
}

#[test]
fn format_comments() {
    let long = "x".repeat(2 * 1024);
    let message =
        format!("data:1\r:\0\n:\r\ndata:2\n:{long}\rdata:3\n:data:fail\r:{long}\ndata:4\n");
    check(
        "format-comments",
        &wpt_message(&message, true),
        &[
            comment("\0"),
            comment(""),
            comment(&long),
            comment("data:fail"),
            comment(&long),
            msg("1\n2\n3\n4"),
        ],
    );
}

#[test]
fn format_data_before_final_empty_line() {
    let input = wpt_message("retry:1000\ndata:test1\n\nid:test\ndata:test2", true);
    check(
        "format-data-before-final-empty-line",
        &input,
        &[retry(1000), msg("test1")],
    );
    // The unfinished event's id never took effect.
    let mut decoder = Decoder::new();
    decoder.feed(&input);
    while decoder.decode_eof().unwrap().is_some() {}
    assert_eq!(decoder.last_event_id(), "");
}

#[test]
fn format_field_data() {
    check(
        "format-field-data",
        &wpt_message("data:\n\ndata\ndata\n\ndata:test", false),
        &[msg(""), msg("\n"), msg("test")],
    );
}

#[test]
fn format_field_event() {
    check(
        "format-field-event",
        &wpt_message("event:test\ndata:x\n\ndata:x", false),
        &[ev("test", "x", ""), msg("x")],
    );
}

#[test]
fn format_field_event_empty() {
    check(
        "format-field-event-empty",
        &wpt_message("event: \ndata:data", false),
        &[msg("data")],
    );
}

/// `resources/last-event-id.py`: without `Last-Event-ID` it sends `id: …`, with it it echoes it.
#[test]
fn format_field_id() {
    let first = "id: …\nretry: 200\ndata: hello\n\n".as_bytes();
    check(
        "format-field-id",
        first,
        &[retry(200), ev("message", "hello", "…")],
    );

    // The reconnection: the decoder keeps the last event ID across streams, as EventSource does.
    let mut decoder = Decoder::new();
    decoder.feed(first);
    while decoder.decode_eof().unwrap().is_some() {}
    assert_eq!(decoder.last_event_id(), "…");
    let echoed = format!("data: {}\n\n", decoder.last_event_id());
    assert_eq!(
        decode_chunks(decoder, [echoed.as_bytes()]),
        [Ok(ev("message", "…", "…"))]
    );
}

#[test]
fn format_field_id_2() {
    // Same server as format-field-id, reconnecting twice: the id stays "…" throughout.
    let mut decoder = Decoder::new();
    decoder.feed("id: …\nretry: 200\ndata: hello\n\n".as_bytes());
    let mut frames = Vec::new();
    for _ in 0..2 {
        while let Some(frame) = decoder.decode_eof().unwrap() {
            frames.push(frame);
        }
        decoder.feed(format!("data: {}\n\n", decoder.last_event_id()).as_bytes());
    }
    while let Some(frame) = decoder.decode_eof().unwrap() {
        frames.push(frame);
    }
    assert_eq!(
        frames,
        [
            retry(200),
            ev("message", "hello", "…"),
            ev("message", "…", "…"),
            ev("message", "…", "…"),
        ]
    );
}

/// `resources/last-event-id2.py`, three types.
#[test]
fn format_field_id_3() {
    check(
        "format-field-id-3 persists",
        b"id: 1\ndata: 1\n\ndata:2\n\n",
        &[ev("message", "1", "1"), ev("message", "2", "1")],
    );
    check(
        "format-field-id-3 changes and persists",
        b"id: 1\ndata: 1\n\nid: 2\ndata:2\n\ndata:3\n\n",
        &[
            ev("message", "1", "1"),
            ev("message", "2", "2"),
            ev("message", "3", "2"),
        ],
    );
    check(
        "format-field-id-3 resets",
        b"id: 1\ndata: 1\n\nid:\ndata:2\n\ndata:3\n\n",
        &[
            ev("message", "1", "1"),
            ev("message", "2", ""),
            ev("message", "3", ""),
        ],
    );
}

/// `format-field-id-null.htm` (`last-event-id.py?idvalue=%00%00`). The current spec ignores an
/// `id` containing NUL, so the id stays what it was.
#[test]
fn format_field_id_null() {
    check(
        "format-field-id-null",
        b"id: \0\0\nretry: 200\ndata: hello\n\n",
        &[retry(200), msg("hello")],
    );
    check(
        "format-field-id-null, earlier id kept",
        b"id: 1\n\nid: a\0b\ndata: x\n\nid: \0\n\ndata: y\n\n",
        &[ev("message", "x", "1"), ev("message", "y", "1")],
    );
}

#[test]
fn format_field_parsing() {
    let message = "data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n data:32\ndata:4\n";
    check(
        "format-field-parsing",
        &wpt_message(message, true),
        &[msg("\0\n 2\n1\n3\n\n4")],
    );
}

#[test]
fn format_field_retry() {
    // "02000" is 2000, not octal.
    check(
        "format-field-retry",
        &wpt_message("retry:02000\ndata:x", false),
        &[retry(2000), msg("x")],
    );
}

#[test]
fn format_field_retry_bogus() {
    check(
        "format-field-retry-bogus",
        &wpt_message("retry:2000\nretry:1000x\ndata:x", false),
        &[retry(2000), msg("x")],
    );
    check(
        "format-field-retry-bogus, more",
        b"retry: 1 \nretry:-1\nretry:+1\nretry:1.5\nretry:  1\nretry:\xEF\xBC\x91\nretry: 7\n",
        &[retry(7)],
    );
}

#[test]
fn format_field_retry_empty() {
    check(
        "format-field-retry-empty",
        &wpt_message("retry\ndata:test", false),
        &[msg("test")],
    );
    check("format-field-retry-empty, colon", b"retry:\nretry: \n", &[]);
}

#[test]
fn format_field_unknown() {
    check(
        "format-field-unknown",
        &wpt_message(
            "data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test",
            false,
        ),
        &[comment("thisisacommentyay"), msg("test\n\ntest")],
    );
}

#[test]
fn format_leading_space() {
    check(
        "format-leading-space",
        &wpt_message("data:\ttest\rdata: \ndata:test", false),
        &[msg("\ttest\n\ntest")],
    );
}

#[test]
fn format_newlines() {
    check(
        "format-newlines",
        &wpt_message("data:test\r\ndata\ndata:test\r\n\r", true),
        &[msg("test\n\ntest")],
    );
}

#[test]
fn format_null_character() {
    check(
        "format-null-character",
        &wpt_message("data:\0\n\n", false),
        &[msg("\0")],
    );
}

#[test]
fn format_utf_8() {
    check(
        "format-utf-8",
        &wpt_message("data:ok…", false),
        &[msg("ok…")],
    );
}

// ---------------------------------------------------------------------------------------------
// More edge cases.

#[test]
fn line_ends() {
    check(
        "lone CR",
        b"data:a\rdata:b\r\rdata:c\r\r",
        &[msg("a\nb"), msg("c")],
    );
    check(
        "CRLF",
        b"data:a\r\ndata:b\r\n\r\ndata:c\r\n\r\n",
        &[msg("a\nb"), msg("c")],
    );
    check(
        "LF CR is two line ends",
        b"data:a\n\rdata:b\n\r",
        &[msg("a"), msg("b")],
    );
    check("CR CR LF", b"data:a\r\r\ndata:b\n\n", &[msg("a"), msg("b")]);
    check("blank lines alone", b"\r\n\n\r\r\n\r", &[]);
}

#[test]
fn event_type_reset_without_data() {
    check(
        "event type reset",
        b"event: lost\n\ndata: x\n\nevent: a\nevent: b\ndata: y\n\n",
        &[msg("x"), ev("b", "y", "")],
    );
}

#[test]
fn id_without_data_takes_effect() {
    let input = b"id: 5\n\ndata: x\n\nid: 6\n";
    check("id without data", input, &[ev("message", "x", "5")]);
    let mut decoder = Decoder::new();
    decoder.feed(input);
    while decoder.decode().unwrap().is_some() {}
    assert_eq!(decoder.last_event_id(), "5");
    decoder.feed(b"\n");
    assert_eq!(decoder.decode().unwrap(), None);
    assert_eq!(decoder.last_event_id(), "6");
}

#[test]
fn invalid_utf8_is_replaced() {
    check(
        "invalid utf-8",
        b"event: \xFFe\ndata: \xC3(\xE2\x82\ndata: \xF0\x9F\x98\x80 \xED\xA0\x80\nid: \xC0\n\n",
        &[ev(
            "\u{FFFD}e",
            "\u{FFFD}(\u{FFFD}\n\u{1F600} \u{FFFD}\u{FFFD}\u{FFFD}",
            "\u{FFFD}",
        )],
    );
    // A character split across chunks is whole again.
    let input = "data: é€😀\n\n".as_bytes();
    check("split characters", input, &[msg("é€😀")]);
}

#[test]
fn colon_and_space_rules() {
    check(
        "colons",
        b"data::x\ndata: :y\ndata:  z\ndata\ndata \n\n",
        &[msg(":x\n:y\n z\n")],
    );
    check(
        "comments keep later spaces",
        b":  two\n: one\n:none\n::\n",
        &[
            comment(" two"),
            comment("one"),
            comment("none"),
            comment(":"),
        ],
    );
}

#[test]
fn bom_is_stripped_once_even_split() {
    let input = b"\xEF\xBB\xBFdata: a\n\n";
    check("bom", input, &[msg("a")]);
    check("no bom", b"\xEF\xBBdata: a\n\n", &[]);
    check("bom alone", b"\xEF\xBB\xBF", &[]);
}

// ---------------------------------------------------------------------------------------------
// Limits.

#[test]
fn max_line_length() {
    let mut decoder = Decoder::new().with_max_line_length(10);
    assert_eq!(decoder.max_line_length(), 10);
    // Exactly ten bytes is fine.
    decoder.feed(b"data: 1234\n\n");
    assert_eq!(decoder.decode().unwrap(), Some(msg("1234")));

    // Eleven is not; the error comes before the line ends, and the event is skipped.
    decoder.feed(b"id: 1\ndata: 12345");
    let err = decoder.decode().unwrap_err();
    assert!(err.is_line_too_long());
    assert!(!err.is_event_too_large());
    assert_eq!(err.limit(), 10);
    assert_eq!(err.to_string(), "line longer than 10 bytes");
    decoder.feed(b"6789\ndata: x\n\ndata: ok\n\n");
    assert_eq!(decoder.decode().unwrap(), Some(msg("ok")));
    assert_eq!(decoder.last_event_id(), "");
    assert_eq!(decoder.decode().unwrap(), None);

    // Same result whatever the chunking.
    let input = b"data: 1234\n\nid: 1\ndata: 12345\r\ndata: x\n\ndata: ok\n\n";
    let whole = decode_chunks(Decoder::new().with_max_line_length(10), [&input[..]]);
    assert_eq!(whole.len(), 3);
    for size in 1..input.len() {
        assert_eq!(
            decode_chunks(Decoder::new().with_max_line_length(10), input.chunks(size)),
            whole
        );
    }
}

#[test]
fn max_event_size() {
    let mut decoder = Decoder::new().with_max_event_size(5);
    assert_eq!(decoder.max_event_size(), 5);
    decoder.feed(b"data: abc\ndata: d\n\n");
    assert_eq!(decoder.decode().unwrap(), Some(msg("abc\nd")));

    decoder.feed(b"event: big\ndata: abc\ndata: de\ndata: more\n\ndata: ok\n\n");
    let err = decoder.decode().unwrap_err();
    assert!(err.is_event_too_large());
    assert_eq!(err.limit(), 5);
    assert_eq!(err.to_string(), "event data larger than 5 bytes");
    assert_eq!(decoder.decode().unwrap(), Some(msg("ok")));
    assert_eq!(decoder.decode().unwrap(), None);

    // Replacement characters count at their UTF-8 size (3 bytes each).
    let mut decoder = Decoder::new().with_max_event_size(5);
    decoder.feed(b"data: \xFF\xFF\n\n");
    assert!(decoder.decode().unwrap_err().is_event_too_large());
}

#[test]
fn errors_are_std_errors() {
    fn assert_error<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
    let mut decoder = Decoder::new().with_max_line_length(0);
    decoder.feed(b"x");
    let err = decoder.decode().unwrap_err();
    assert_error(&err);
    let boxed: tower_sse::BoxError = err.into();
    assert_eq!(boxed.to_string(), "line longer than 0 bytes");
}

/// An 8 MiB line in 1024 chunks. A decoder that re-scans its buffer for each chunk does about
/// 4 GiB of work here; ours scans each byte once. No timing assertion: a quadratic decoder
/// shows up as a test that takes minutes.
#[test]
fn huge_line_in_many_chunks() {
    const SIZE: usize = 8 * 1024 * 1024;
    let mut input = Vec::with_capacity(SIZE + 16);
    input.extend_from_slice(b"data: ");
    input.extend((0..SIZE).map(|i| b'a' + (i % 26) as u8));
    input.extend_from_slice(b"\r");
    input.extend_from_slice(b"\n\n");
    let chunk = input.len().div_ceil(1024);

    let decoder = Decoder::new()
        .with_max_line_length(SIZE + 6)
        .with_max_event_size(SIZE);
    let out = decode_chunks(decoder, input.chunks(chunk));
    assert_eq!(input.chunks(chunk).len(), 1024);
    assert_eq!(out.len(), 1);
    let data = out[0].as_ref().unwrap().as_event().unwrap().data();
    assert_eq!(data.len(), SIZE);
    assert_eq!(data.as_bytes(), &input[6..6 + SIZE]);

    // The default limits refuse it, once, without buffering it.
    let out = decode_chunks(Decoder::new(), input.chunks(chunk));
    assert_eq!(out.len(), 1);
    assert!(out[0].as_ref().unwrap_err().is_line_too_long());
}

/// Many short lines in small chunks, CRLF split at every possible place.
#[test]
fn many_events_in_small_chunks() {
    let mut input = Vec::new();
    for i in 0..20_000 {
        input.extend_from_slice(format!("id: {i}\r\ndata: {i}\r\n\r\n").as_bytes());
    }
    for size in [1, 2, 3, 7, 64, 4096] {
        let out = decode_chunks(Decoder::new(), input.chunks(size));
        assert_eq!(out.len(), 20_000);
        for (i, frame) in out.iter().enumerate() {
            let event = frame.as_ref().unwrap().as_event().unwrap();
            assert_eq!(event.data(), i.to_string());
            assert_eq!(event.id(), i.to_string());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Random input.

/// SplitMix64: small, deterministic, good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Splits `input` into random chunks, sometimes empty.
    fn chunks<'a>(&mut self, mut input: &'a [u8]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        while !input.is_empty() {
            let n = match self.below(4) {
                0 => 0,
                1 => 1,
                2 => self.below(4),
                _ => self.below(input.len() + 1),
            }
            .min(input.len());
            let (a, b) = input.split_at(n);
            chunks.push(a);
            input = b;
        }
        chunks
    }
}

/// A string made of characters that matter to the format.
fn random_text(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "a", "Z", "0", " ", "  ", ":", "\r", "\n", "\r\n", "\n\r", "\0", "\t", "é", "€", "😀",
        "\u{FEFF}", "\u{2028}", "\u{85}", "data", "id", "event", "retry", "data: x",
    ];
    let len = rng.below(8);
    (0..len).map(|_| *rng.pick(PIECES)).collect()
}

fn normalise_breaks(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Random events through `tower_sse::Event` and back: the same data (line breaks as LF), type,
/// id, retry and comments, in order, however the bytes are chunked.
#[test]
fn round_trip_through_event() {
    let mut rng = Rng(0x5EED);
    for case in 0..3_000 {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        let mut id_in_force = String::new();
        for _ in 0..1 + rng.below(4) {
            let mut event = Event::new();
            let mut data: Option<String> = None;
            let mut event_type = String::new();
            let mut id = None;
            let mut frames = Vec::new();
            for _ in 0..rng.below(6) {
                match rng.below(5) {
                    0 => {
                        let text = random_text(&mut rng);
                        event = event.data(&text);
                        let text = normalise_breaks(&text);
                        data = Some(match data {
                            Some(before) => format!("{before}\n{text}"),
                            None => text,
                        });
                    }
                    1 => {
                        let text = random_text(&mut rng);
                        if let Ok(e) = event.clone().try_event(&text) {
                            event = e;
                            event_type = text;
                        }
                    }
                    2 => {
                        let text = random_text(&mut rng);
                        if let Ok(e) = event.clone().try_id(&text) {
                            event = e;
                            id = Some(text);
                        }
                    }
                    3 => {
                        let ms = rng.next() >> rng.below(64);
                        event = event.retry(Duration::from_millis(ms));
                        frames.push(retry(ms));
                    }
                    _ => {
                        let text = random_text(&mut rng);
                        event = event.comment(&text);
                        for line in normalise_breaks(&text).split('\n') {
                            frames.push(comment(line));
                        }
                    }
                }
            }
            if let Some(id) = id {
                id_in_force = id;
            }
            if let Some(data) = data {
                let event_type = if event_type.is_empty() {
                    "message"
                } else {
                    &event_type
                };
                frames.push(ev(event_type, &data, &id_in_force));
            }
            wire.extend_from_slice(event.encode().as_bytes());
            expected.extend(frames.into_iter().map(Ok));
        }

        assert_eq!(decode(&wire), expected, "case {case}: {wire:?}");
        let chunks = rng.chunks(&wire);
        assert_eq!(
            decode_chunks(Decoder::new(), chunks),
            expected,
            "case {case}, chunked: {wire:?}"
        );
    }
}

/// A deliberately naive parser over the whole input, straight from the spec's wording.
fn reference(input: &[u8]) -> Vec<Frame> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\n' => {
                lines.push(&input[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&input[start..i]);
                if input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    // What is left after `start` is an unterminated line: discarded at the end of the stream.

    let (mut data, mut event_type, mut id_buffer) = (String::new(), String::new(), String::new());
    let mut out = Vec::new();
    for line in lines {
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            // (The last event ID string becomes `id_buffer` here.)
            if data.is_empty() {
                event_type.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            let ty = if event_type.is_empty() {
                "message".to_owned()
            } else {
                std::mem::take(&mut event_type)
            };
            out.push(ev(&ty, &std::mem::take(&mut data), &id_buffer));
        } else if let Some(text) = line.strip_prefix(':') {
            out.push(comment(text.strip_prefix(' ').unwrap_or(text)));
        } else {
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (&*line, ""),
            };
            match field {
                "event" => event_type = value.to_owned(),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "id" if !value.contains('\0') => id_buffer = value.to_owned(),
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    out.push(retry(value.parse().unwrap_or(u64::MAX)));
                }
                _ => {}
            }
        }
    }
    out
}

fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b"\r",
        b"\n",
        b"\r\n",
        b":",
        b" ",
        b"data",
        b"data:",
        b"data: ",
        b"event:",
        b"id:",
        b"id",
        b"retry:",
        b"retry: 1",
        b"12",
        b"x",
        b"\0",
        b"\xEF",
        b"\xBB",
        b"\xBF",
        b"\xEF\xBB\xBF",
        b"\xFF",
        b"\xC3",
        b"\xA9",
        b"\xE2\x82\xAC",
        b"\xF0\x9F\x98",
    ];
    let len = rng.below(60);
    let mut bytes = Vec::new();
    for _ in 0..len {
        if rng.chance(10) {
            bytes.push(rng.next() as u8);
        } else {
            bytes.extend_from_slice(rng.pick::<&[u8]>(PIECES));
        }
    }
    bytes
}

/// Random bytes, random chunks, no limits: the same frames as the naive reference parser.
#[test]
fn random_input_matches_reference() {
    let mut rng = Rng(42);
    for case in 0..5_000 {
        let input = random_bytes(&mut rng);
        let expected: Output = reference(&input).into_iter().map(Ok).collect();
        assert_eq!(decode(&input), expected, "case {case}: {input:?}");
        let chunks = rng.chunks(&input);
        assert_eq!(
            decode_chunks(Decoder::new(), chunks),
            expected,
            "case {case}, chunked: {input:?}"
        );
    }
}

/// Random bytes with tiny limits: no panic, and the same frames and errors however the input is
/// chunked.
#[test]
fn random_input_with_limits_is_chunking_independent() {
    let mut rng = Rng(7);
    for case in 0..5_000 {
        let mut input = random_bytes(&mut rng);
        if rng.chance(20) {
            input.extend((0..rng.below(300)).map(|_| rng.next() as u8));
        }
        let (line, event) = (rng.below(24), rng.below(40));
        let new = || {
            Decoder::new()
                .with_max_line_length(line)
                .with_max_event_size(event)
        };
        let whole = decode_chunks(new(), [&input[..]]);
        let chunks = rng.chunks(&input);
        assert_eq!(
            decode_chunks(new(), chunks),
            whole,
            "case {case} (line {line}, event {event}): {input:?}"
        );
        assert_eq!(
            decode_chunks(new(), input.chunks(1)),
            whole,
            "case {case} (line {line}, event {event}), bytewise: {input:?}"
        );
    }
}
