//! Test kit for the whole loop, shared by the end-to-end tests (`tests/it`) and the demo
//! (`signpost-demo`).
//!
//! # Layout
//! - [`standin`]: the stand-in SP scheme and the stand-in GP system, small HTTP servers that
//!   behave like the real ones (BaRS `$process-message` with de-duplication; DocumentReference
//!   filing) and are named as stand-ins.
//! - [`client`]: a plain HTTP client for FHIR JSON.
//! - [`broker`]: a RabbitMQ vhost of one's own, made and removed with `rabbitmqctl`.
//! - [`env`]: where things are (workspace, fixtures, the `signpost` binary) and a temp dir.
//! - [`messages`]: the scheme's response messages and outcome letter.

pub mod broker;
pub mod client;
pub mod env;
pub mod messages;
pub mod standin;
