//! Any bytes as a bus message body: `Envelope::from_bytes` must not panic, and an envelope it
//! accepts must survive what the bus does with it (the relay, a retry, parking and replay all
//! write it out with `to_bytes` and read it again): the same envelope back, and the same bytes
//! when written again. A delivery report's payload gets the same treatment, as the gateway's
//! recorder reads it, and so does the envelope inside a parked copy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signpost_bus::envelope::{
    DeliveryReport, Envelope, EnvelopeError, Kind, ParkedCopy, SCHEMA_VERSION,
};

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = Envelope::from_bytes(data) else {
        return;
    };
    round_trip(&envelope);
    let _ = envelope.properties();
    if envelope.kind == Kind::DeliveryReport {
        // As `ReportRecorder`: the payload read as a DeliveryReport.
        if let Ok(report) = envelope.payload_as::<DeliveryReport>() {
            let text = serde_json::to_string(&report).expect("a report serialises");
            let again: DeliveryReport =
                serde_json::from_str(&text).expect("a written report reads back");
            assert!(again == report, "a delivery report survives the round trip");
            // The parked copy is read without the version check, so any version can be here;
            // one this build does not know must be refused, not misread, when it is replayed.
            if let Some(ParkedCopy { envelope, .. }) = &report.parked {
                if envelope.schema_version == SCHEMA_VERSION {
                    round_trip(envelope);
                } else {
                    let refused = Envelope::from_bytes(&envelope.to_bytes());
                    assert!(
                        matches!(refused, Err(EnvelopeError::Version(v)) if v == envelope.schema_version),
                        "a parked envelope of another version is refused on replay"
                    );
                }
            }
        }
    }
});

fn round_trip(envelope: &Envelope) {
    let bytes = envelope.to_bytes();
    assert!(!bytes.is_empty(), "an envelope serialises");
    let again = Envelope::from_bytes(&bytes).expect("what to_bytes writes, from_bytes reads");
    assert!(again == *envelope, "the same envelope comes back");
    assert!(again.to_bytes() == bytes, "and is written the same way");
}
