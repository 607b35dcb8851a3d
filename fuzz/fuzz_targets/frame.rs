//! Incoming WebSocket frames, decoded and applied to a document that already
//! holds some text, a map and an XML fragment, as weft's connection task and
//! document actor do (`weft_core::fuzz::incoming_frame`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_core::fuzz::{frames, incoming_frame, seeded_awareness, Outcome};

fuzz_target!(|data: &[u8]| {
    let mut awareness = seeded_awareness();
    // Several frames in a row from one connection (an update that depends
    // on an earlier one), as long as each is handled.
    for frame in frames(data) {
        if incoming_frame(&mut awareness, frame) != Outcome::Handled {
            break;
        }
    }
});
