//! `LastEventId` from any header bytes or query: never panics, and what it accepts is exact
//! (the header's bytes) and valid (non-empty, at most 1 KiB, no NUL, CR or LF).
#![no_main]

use http::{HeaderValue, Request};
use libfuzzer_sys::fuzz_target;
use tower_sse::LastEventId;

fn valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= 1024 && !id.contains(['\0', '\r', '\n'])
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    assert_eq!(LastEventId::new(text.as_ref()).is_some(), valid(&text));
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let req = Request::get("/")
            .header("last-event-id", value)
            .body(())
            .unwrap();
        if let Some(id) = LastEventId::from_request(&req) {
            assert_eq!(id.as_str().as_bytes(), data);
            assert!(valid(id.as_str()));
        }
    }
    if let Ok(req) = Request::get(format!("/?{text}")).body(()) {
        if let Some(id) = LastEventId::from_request(&req) {
            assert!(valid(id.as_str()));
        }
    }
    let encoded = percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC);
    let req = Request::get(format!("/?lastEventId={encoded}"))
        .body(())
        .unwrap();
    assert_eq!(
        LastEventId::from_request(&req).map(LastEventId::into_string),
        valid(&text).then(|| text.into_owned())
    );
});
