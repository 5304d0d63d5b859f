//! Any bytes as an HL7 v2 message: parsing, re-encoding, the REF^I12 mapping, ACKs and MDM
//! reading must not panic, and what the encoder writes must parse again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signpost_adapter_hl7v2::message::Message;
use signpost_adapter_hl7v2::{ack, mdm, mllp, ref_i12};

fuzz_target!(|data: &[u8]| {
    let text = mllp::decode_text(data.to_vec());
    let at = time::OffsetDateTime::UNIX_EPOCH;
    match Message::parse(&text) {
        Ok(msg) => {
            let again = Message::parse(&msg.encode()).expect("what we encode parses");
            assert_eq!(again.segments().len(), msg.segments().len());
            let reply = match ref_i12::map(&msg, &ref_i12::MapOptions::default()) {
                Ok(_) => ack::build(&msg, ack::AckCode::Accept, &[], "A", at),
                Err(e) => ack::build(&msg, e.code().ack_code(), &[(&e).into()], "A", at),
            };
            ack::parse(&reply).expect("our own ACK reads back");
            let _ = ack::parse(&text);
            let _ = mdm::read_letter(&msg);
        }
        Err(e) => {
            let reply = ack::reject_unparsable(&text, &e, "A", at);
            ack::parse(&reply).expect("our own rejection reads back");
        }
    }
});
