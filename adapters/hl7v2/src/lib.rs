//! HL7 v2 over MLLP for GP systems that do not speak FHIR: REF^I12 referrals in, answered with
//! an ACK; outcome letters out as MDM^T02, whose ACK is read back.
//!
//! This crate is the protocol and the socket plumbing. It does not post referrals to the
//! gateway, consume the bus or keep any state: whoever wires it in gives [`mllp::serve`] a
//! [`mllp::Handler`] that parses, maps, posts the Bundle and answers with an ACK, and files
//! letters with [`mdm::build`] and [`mllp::send`].
//!
//! # Layout
//! - [`message`]: ER7 text to a typed, owned [`message::Message`] and back (delimiters from
//!   MSH, escapes, repetitions, 1-based accessors), with typed parse errors and their location.
//! - [`mllp`]: framing, a streaming decoder, [`mllp::serve`] and [`mllp::send`] on tokio, and
//!   their TLS forms ([`mllp::serve_tls`], [`mllp::send_tls`]; rustls with aws-lc-rs).
//! - [`ref_i12`]: REF^I12 to the canonical FHIR referral message
//!   (`fixtures/gp-system/referral-new.json`'s shape), with [`ref_i12::NhsNumber`] and HL7
//!   error codes and locations for what is wrong.
//! - [`ack`]: building ACKs (AA/AE/AR with ERR) and reading them.
//! - [`mdm`]: the outcome letter (a DocumentReference) as MDM^T02, and back.
//!
//! Fixtures (`tests/data`, with the script that writes them), the deterministic fuzz test
//! (`tests/fuzz.rs`) and the cargo-fuzz targets (`fuzz/`) sit beside the sources.
//!
//! # Wiring, in short
//! ```no_run
//! use std::sync::Arc;
//! use signpost_adapter_hl7v2::{ack, message::Message, mllp, ref_i12};
//!
//! # async fn run(listener: tokio::net::TcpListener) {
//! let handler = |text: String, _peer: std::net::SocketAddr| async move {
//!     let now = time::OffsetDateTime::now_utc();
//!     let ack_id = uuid::Uuid::new_v4().simple().to_string();
//!     let msg = match Message::parse(&text) {
//!         Ok(m) => m,
//!         Err(e) => return ack::reject_unparsable(&text, &e, &ack_id, now),
//!     };
//!     match ref_i12::map(&msg, &ref_i12::MapOptions::default()) {
//!         // Post mapped.bundle to $process-message here; AA once it is durable (200, or 409
//!         // duplicate), AR with 207 when the gateway could not take it now.
//!         Ok(_mapped) => ack::build(&msg, ack::AckCode::Accept, &[], &ack_id, now),
//!         Err(e) => ack::build(&msg, e.code().ack_code(), &[(&e).into()], &ack_id, now),
//!     }
//! };
//! mllp::serve(listener, Arc::new(handler), mllp::ServeOptions::default(), std::future::pending()).await;
//! # }
//! ```

pub mod ack;
pub mod adapter;
mod datetime;
pub mod mdm;
pub mod message;
pub mod mllp;
pub mod ref_i12;
