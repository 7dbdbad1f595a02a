//! The `Decoder` on any bytes: never panics, keeps at most one partial line buffered, never
//! gives an event over its limit, and gives the same frames and errors whether the input comes
//! in one piece, split at any point, or byte by byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_sse::client::{DecodeError, Decoder, Frame};

fn buffered(decoder: &Decoder) -> usize {
    let debug = format!("{decoder:?}");
    let rest = &debug[debug.find("buffered: ").unwrap() + 10..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap()]
        .parse()
        .unwrap()
}

fn decode_all(mut decoder: Decoder, chunks: &[&[u8]]) -> Vec<Result<Frame, DecodeError>> {
    let (max_line, max_event) = (decoder.max_line_length(), decoder.max_event_size());
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
        assert!(buffered(&decoder) <= max_line.max(3));
    }
    loop {
        match decoder.decode_eof() {
            Ok(Some(frame)) => out.push(Ok(frame)),
            Ok(None) => break,
            Err(err) => out.push(Err(err)),
        }
    }
    for frame in &out {
        if let Ok(Frame::Event(event)) = frame {
            assert!(event.data().len() <= max_event);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&limits, input)) = data.split_first() else {
        return;
    };
    // The first byte picks the limits: small ones reach the error paths.
    let decoder = || match limits % 4 {
        0 => Decoder::new(),
        n => Decoder::new()
            .with_max_line_length(usize::from(limits >> 2) * usize::from(n))
            .with_max_event_size(usize::from(limits >> 1) * usize::from(n)),
    };
    let whole = decode_all(decoder(), &[input]);
    for at in 0..=input.len().min(512) {
        let (a, b) = input.split_at(at);
        assert_eq!(decode_all(decoder(), &[a, b]), whole, "split at {at}");
    }
    let bytes: Vec<&[u8]> = input.iter().map(std::slice::from_ref).collect();
    assert_eq!(decode_all(decoder(), &bytes), whole, "byte by byte");
});
