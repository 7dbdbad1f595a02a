//! In-process pub/sub hub.
