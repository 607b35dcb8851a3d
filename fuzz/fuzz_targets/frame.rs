//! Incoming WebSocket frames, decoded and applied to a document that already
//! holds some text, a map and an XML fragment, as weft's connection task and
//! document actor do (`weft_core::fuzz::incoming_frame`).
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use weft_core::fuzz::{frames, incoming_frame, seeded_awareness, Outcome};
use weft_core::Clocks;

static QUIET: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys installs a panic hook that aborts on any panic, before
    // unwinding, but weft catches the panics yrs raises on hostile input
    // and turns them into refusals: those are handled, not crashes. With a
    // silent hook, a caught panic stays caught, and one that escapes weft's
    // guards still reaches libfuzzer-sys's own catch_unwind, which aborts
    // and records the input.
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let mut awareness = seeded_awareness();
    let mut clocks = Clocks::default();
    // Several frames in a row from one connection (an update that depends
    // on an earlier one), as long as each is handled.
    for frame in frames(data) {
        if incoming_frame(&mut awareness, &mut clocks, frame) != Outcome::Handled {
            break;
        }
    }
});
