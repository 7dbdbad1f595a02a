//! Presence messages (what the broker's live channel hands a process, which anyone with access
//! to the broker may have written) on any bytes: refused or read, never a panic; a read message
//! encodes back to exactly its bytes; a registry that applies it, and then expires, never
//! panics, and its replies read back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tower_sse::hub::__fuzz_presence_message(data);
});
