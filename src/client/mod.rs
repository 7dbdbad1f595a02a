//! Client side: an incremental SSE decoder.
