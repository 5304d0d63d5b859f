//! A deterministic, bounded fuzz test: the parser, the REF^I12 mapping, the ACK and MDM readers
//! and the MLLP decoder must never panic, whatever bytes arrive. A xorshift generator with a
//! fixed seed mutates the fixtures (bit flips, truncation, splicing, delimiter swaps, random
//! bytes, inserted escapes and MLLP control bytes), so a failure reproduces exactly.
//!
//! `HL7V2_FUZZ_ITERATIONS` sets the count (default 200 000); `HL7V2_FUZZ_SEED` the seed.
//! The open-ended, coverage-guided version is `fuzz/` (cargo fuzz).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use signpost_adapter_hl7v2::message::Message;
use signpost_adapter_hl7v2::mllp::{self, Decoder};
use signpost_adapter_hl7v2::{ack, mdm, ref_i12};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7" || e == "mllp"))
        .collect();
    files.sort();
    let mut corpus: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    corpus.push(
        b"MSH|^~\\&|X|Y|Z|W|1||MDM^T02|1|P|2.5\rTXA|1|CN|AP|||||||||D\rOBX|1|ED|X||^text^html^Base64^PGI+aGk8L2I+\r"
            .to_vec(),
    );
    corpus.push(
        b"MSH|^~\\&|GP|A|S|S|1||ACK^T02|9|P|2.3\rMSA|AE|1|x\rERR|PID^1^3^101&Missing&HL70357\r"
            .to_vec(),
    );
    corpus
}

const INTERESTING: &[&[u8]] = &[
    b"|",
    b"^",
    b"~",
    b"\\",
    b"&",
    b"\r",
    b"\n",
    b"\r\n",
    b"\x0b",
    b"\x1c",
    b"\x1c\r",
    b"\\X",
    b"\\XC2A3\\",
    b"\\.br\\",
    b"\\.sp 9999\\",
    b"\\E\\",
    b"\\F\\",
    b"MSH|^~\\&|",
    b"PID|",
    b"\"\"",
    b"\xff",
    b"\xc3",
    b"\xe2\x82\xac",
    b"99900000",
    b"^^^NHS^NH",
    b"+0000",
    b"-",
    b"PRD|RP|",
    b"RF1|",
    b"2026",
    b"\x00",
];

/// A corpus entry, or half the time its first segment (MSH) and a few of its others, so that
/// inputs stay short and the iterations many.
fn pick(rng: &mut XorShift, corpus: &[Vec<u8>]) -> Vec<u8> {
    let whole = &corpus[rng.below(corpus.len())];
    if rng.below(2) == 0 {
        return whole.clone();
    }
    let segments: Vec<&[u8]> = whole.split(|b| *b == b'\r' || *b == b'\n').collect();
    let mut data = segments[0].to_vec();
    for _ in 0..=rng.below(3) {
        data.push(if rng.below(2) == 0 { b'\r' } else { b'\n' });
        data.extend_from_slice(segments[rng.below(segments.len())]);
    }
    data
}

fn mutate(rng: &mut XorShift, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut data = pick(rng, corpus);
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.truncate(rng.below(len + 1)),
            2 => {
                let other = &corpus[rng.below(corpus.len())];
                let (a, b) = (rng.below(len + 1), rng.below(other.len() + 1));
                data.truncate(a);
                data.extend_from_slice(&other[b..]);
            }
            3 => {
                // Swap one delimiter for another everywhere.
                let delims = b"|^~\\&\r\n";
                let (from, to) = (
                    delims[rng.below(delims.len())],
                    delims[rng.below(delims.len())],
                );
                for b in data.iter_mut() {
                    if *b == from {
                        *b = to;
                    }
                }
            }
            4 => {
                let i = rng.below(len + 1);
                let n = rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(i..i, bytes);
            }
            5 => {
                let i = rng.below(len + 1);
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                data.splice(i..i, piece.iter().copied());
            }
            6 if len > 0 => {
                let i = rng.below(len);
                let j = (i + rng.below(64)).min(len);
                data.drain(i..j);
            }
            _ => {
                // Duplicate a slice (repeated segments and fields).
                let i = rng.below(len + 1);
                let j = (i + rng.below(128)).min(len);
                let copy = data[i..j].to_vec();
                data.splice(j..j, copy);
            }
        }
    }
    data
}

/// Everything the adapter does with untrusted bytes: always the parser and the decoder, and
/// when `deep`, what is done with a parsed message too (mapping, ACKs, MDM reading, encoding).
fn exercise(data: &[u8], rng: &mut XorShift, deep: bool) {
    let text = mllp::decode_text(data.to_vec());
    let parsed = Message::parse(&text);
    match parsed {
        _ if !deep => {}
        Ok(msg) => {
            let again = Message::parse(&msg.encode()).expect("what we encode parses");
            assert_eq!(again.segments().len(), msg.segments().len());
            let reply = match ref_i12::map(&msg, &ref_i12::MapOptions::default()) {
                Ok(m) => {
                    assert!(!m.bundle_id.is_empty());
                    ack::build(
                        &msg,
                        ack::AckCode::Accept,
                        &[],
                        "A",
                        time::OffsetDateTime::UNIX_EPOCH,
                    )
                }
                Err(e) => ack::build(
                    &msg,
                    e.code().ack_code(),
                    &[(&e).into()],
                    "A",
                    time::OffsetDateTime::UNIX_EPOCH,
                ),
            };
            ack::parse(&reply).expect("our own ACK reads back");
            let _ = ack::parse(&text);
            let _ = mdm::read_letter(&msg);
        }
        Err(e) => {
            let reply = ack::reject_unparsable(&text, &e, "A", time::OffsetDateTime::UNIX_EPOCH);
            ack::parse(&reply).expect("our own rejection reads back");
        }
    }

    // The decoder, fed in random chunks, with a small limit now and then.
    let max = if rng.below(4) == 0 { 64 } else { 1 << 16 };
    let mut d = Decoder::new(max);
    let mut at = 0;
    while at < data.len() {
        let n = 1 + rng.below(data.len() - at);
        d.push(&data[at..at + n]);
        at += n;
        let mut guard = 0;
        loop {
            guard += 1;
            assert!(guard < 10_000, "the decoder must make progress");
            match d.next_frame() {
                Ok(Some(frame)) => assert!(frame.len() <= max),
                Ok(None) => break,
                Err(_) => {}
            }
        }
    }
    let _ = d.finish();
}

/// Mapping and ACK building cost ten times what parsing does in a debug build: they run on
/// every eighth input, so the test stays within a few seconds.
const DEEP_EVERY: u64 = 8;

/// The iterations are shared between this many threads, each with its own seed derived from
/// the main one: fixed, so that a run is the same on any machine.
const SHARDS: u64 = 2;

#[test]
fn no_input_makes_the_parser_or_the_decoder_panic() {
    let iterations: u64 = std::env::var("HL7V2_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let seed: u64 = std::env::var("HL7V2_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_b0a7_1e57_c0de);
    let corpus = corpus();
    std::thread::scope(|scope| {
        for shard in 0..SHARDS {
            let corpus = &corpus;
            scope.spawn(move || {
                let shard_seed = seed ^ shard.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut rng = XorShift(shard_seed);
                for i in (shard..iterations).step_by(SHARDS as usize) {
                    let data = mutate(&mut rng, corpus);
                    let mut inner = XorShift(rng.next() | 1);
                    let deep = i % DEEP_EVERY == 0;
                    let result =
                        catch_unwind(AssertUnwindSafe(|| exercise(&data, &mut inner, deep)));
                    if result.is_err() {
                        panic!(
                            "iteration {i} (shard {shard}, seed {seed:#x}) panicked on {} bytes: {:?}",
                            data.len(),
                            String::from_utf8_lossy(&data)
                        );
                    }
                }
            });
        }
    });
}
