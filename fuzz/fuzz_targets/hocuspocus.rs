//! Incoming frames of the Hocuspocus endpoint (`/hocuspocus`), decoded as
//! its session does and, when they carry a y-sync message, applied to a
//! seeded document as the actor does (`weft_core::fuzz::hocuspocus_frame`).
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use weft_core::fuzz::{frames, hocuspocus_frame, seeded_awareness, Outcome};
use weft_core::Clocks;

static QUIET: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // As in the frame target: caught panics are refusals, not crashes.
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let mut awareness = seeded_awareness();
    let mut clocks = Clocks::default();
    for frame in frames(data) {
        if hocuspocus_frame(&mut awareness, &mut clocks, frame) != Outcome::Handled {
            break;
        }
    }
});
