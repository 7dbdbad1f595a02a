//! The broker entry codec (what Redis and NATS hand back, which anyone with access to the
//! broker may have written) on any bytes: refused or read, never a panic; a read entry encodes
//! back to exactly its bytes; its event, stamped with a position, decodes to at most one event
//! whose id is that position. Also the position and direct-message parsers on the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tower_sse::hub::__fuzz_broker_entry(data);
});
