//! Feeds arbitrary bytes to the frame decoder as every envelope type. Run with
//! `cargo +nightly fuzz run decode_frame` from this directory. The same property runs for a bounded
//! time in `cargo test -p proto` (proptest), so a regression fails the normal test suite too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::{ClientFrame, ServerFrame, MAX_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let _ = proto::decode::<ClientFrame>(data, MAX_FRAME_LEN);
    let _ = proto::decode::<ServerFrame>(data, MAX_FRAME_LEN);
    let _ = proto::codec::decode_body::<ClientFrame>(data);
});
