//! Integration tests of the HL7 v2 adapter: parsing, mapping, ACKs, MDM, MLLP framing and real
//! sockets on 127.0.0.1. Fixtures are in `tests/data` (see its README). Set `TEST_LOG=1` to see
//! the adapter's logs.

mod helpers;

mod ack;
mod mapping;
mod mdm;
mod mllp;
mod parse;
mod peer;
mod socket;
mod tls;
