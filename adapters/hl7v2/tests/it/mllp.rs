use signpost_adapter_hl7v2::mllp::{self, Decoder, FrameError};

use crate::helpers::{data_path, fixture};

/// Feed `bytes` in chunks of the given sizes (cycling), collecting frames and errors.
fn decode(bytes: &[u8], chunks: &[usize], max: usize) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut d = Decoder::new(max);
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let n = chunks[i % chunks.len()].min(bytes.len() - at);
        d.push(&bytes[at..at + n]);
        at += n;
        i += 1;
        loop {
            match d.next_frame() {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => out.push(Err(e)),
            }
        }
    }
    if let Err(e) = d.finish() {
        out.push(Err(e));
    }
    out
}

#[test]
fn frames_split_across_reads_at_every_point_come_out_whole() {
    let a = fixture("ref-i12-emis.hl7");
    let b = fixture("ref-i12-systmone.hl7");
    let mut wire = mllp::frame(&a);
    wire.extend(mllp::frame(&b));
    for split in 1..wire.len() {
        let got = decode(&wire, &[split, wire.len()], 1 << 20);
        assert_eq!(
            got,
            vec![Ok(a.clone().into_bytes()), Ok(b.clone().into_bytes())],
            "split at {split}"
        );
    }
    for chunk in [1, 2, 3, 7, 64] {
        assert_eq!(decode(&wire, &[chunk], 1 << 20).len(), 2);
    }
}

#[test]
fn several_frames_in_one_read_come_out_in_order() {
    let mut wire = Vec::new();
    for i in 0..10 {
        wire.extend(mllp::frame(&format!("MSH|^~\\&|{i}")));
        if i % 3 == 0 {
            wire.extend_from_slice(b"\r\n");
        }
    }
    let got = decode(&wire, &[wire.len()], 1024);
    let want: Vec<_> = (0..10)
        .map(|i| Ok(format!("MSH|^~\\&|{i}").into_bytes()))
        .collect();
    assert_eq!(got, want, "line breaks between frames are tolerated");
}

#[test]
fn an_oversize_frame_is_refused_and_the_next_one_still_decodes() {
    let big = "X".repeat(5000);
    let mut wire = mllp::frame(&big);
    wire.extend(mllp::frame("MSH|small"));
    for chunk in [wire.len(), 100, 1] {
        let got = decode(&wire, &[chunk], 4096);
        assert_eq!(
            got,
            vec![
                Err(FrameError::TooLarge { limit: 4096 }),
                Ok(b"MSH|small".to_vec())
            ],
            "chunk {chunk}"
        );
    }
    // Exactly at the limit is fine.
    let got = decode(&mllp::frame(&"Y".repeat(4096)), &[999], 4096);
    assert!(matches!(got.as_slice(), [Ok(f)] if f.len() == 4096));
}

#[test]
fn a_stream_that_ends_mid_frame_is_truncated() {
    let bytes = std::fs::read(data_path("ref-i12-truncated.mllp")).unwrap();
    assert_eq!(
        decode(&bytes, &[64], 1 << 20),
        vec![Err(FrameError::Truncated { len: 200 })]
    );
    // An end block whose carriage return never came is cut off too.
    let mut wire = mllp::frame("MSH|x");
    wire.pop();
    assert_eq!(
        decode(&wire, &[3], 1024),
        vec![Err(FrameError::Truncated { len: 6 })]
    );
}

#[test]
fn garbage_before_a_start_block_is_reported_and_skipped() {
    let mut wire = b"GET / HTTP/1.1\r\n".to_vec();
    wire.extend(mllp::frame("MSH|after"));
    assert_eq!(
        decode(&wire, &[wire.len()], 1024),
        vec![
            Err(FrameError::Garbage { len: 16 }),
            Ok(b"MSH|after".to_vec())
        ]
    );
    // Unframed HL7, as a misconfigured sender would send it, is garbage too.
    let got = decode(fixture("ref-i12-emis.hl7").as_bytes(), &[4096], 1 << 20);
    assert!(
        matches!(got.as_slice(), [Err(FrameError::Garbage { .. })]),
        "{got:?}"
    );
}

#[test]
fn a_new_start_block_abandons_the_frame_before_it() {
    let mut wire = b"\x0bMSH|half".to_vec();
    wire.extend(mllp::frame("MSH|whole"));
    assert_eq!(
        decode(&wire, &[wire.len()], 1024),
        vec![
            Err(FrameError::Truncated { len: 8 }),
            Ok(b"MSH|whole".to_vec())
        ]
    );
}

#[test]
fn frames_that_are_not_utf8_are_read_as_latin_1() {
    assert_eq!(mllp::decode_text(b"caf\xe9 \xa3".to_vec()), "café £");
    assert_eq!(mllp::decode_text("café £".as_bytes().to_vec()), "café £");
}

#[test]
fn many_frames_in_one_large_read_decode_in_linear_time() {
    let one = mllp::frame("MSH|^~\\&|1");
    let wire: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 100_000)
        .collect();
    let started = std::time::Instant::now();
    let mut d = Decoder::new(1024);
    d.push(&wire);
    let mut n = 0;
    while let Some(f) = d.next_frame().unwrap() {
        assert_eq!(f, b"MSH|^~\\&|1");
        n += 1;
    }
    assert_eq!(n, 100_000);
    assert!(d.is_idle());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
