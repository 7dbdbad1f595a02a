//! Request heads as `tower_sse::serve` reads them (any bytes a client sends): routed to the
//! lean HTTP/1.1 path or to hyper, never a panic; a lean head is a prefix of the bytes that
//! reads the same alone and carries no body, upgrade or `Expect`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tower_sse::__fuzz_serve_head(data);
});
