//! Any byte stream, cut into reads of sizes taken from the input itself: the MLLP decoder must
//! not panic, must keep making progress, and must never give a frame over its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signpost_adapter_hl7v2::mllp::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let max = 16 + usize::from(first) * 4;
    let chunk = 1 + usize::from(first % 32);
    let mut d = Decoder::new(max);
    for piece in stream.chunks(chunk) {
        d.push(piece);
        let mut calls = 0;
        loop {
            calls += 1;
            assert!(
                calls <= 2 * stream.len() + 8,
                "the decoder must make progress"
            );
            match d.next_frame() {
                Ok(Some(frame)) => assert!(frame.len() <= max),
                Ok(None) => break,
                Err(_) => {}
            }
        }
    }
    let _ = d.finish();
});
