//! GP adapter `mesh`: outcome letters filed in the patient's notes by GP Connect Send Document,
//! an ITK3 message (FHIR STU3) carried by MESH and acknowledged twice (standards.md §2, §8.4).
//!
//! # Layout
//! - [`client`]: the MESH API (authorisation, chunked send, inbox, download, acknowledge).
//! - [`itk3`]: the Send Document message built from the gateway's letter, MESH routing
//!   metadata, and reading ITK3 Responses.
//! - [`adapter`]: the queue handler that sends letters, and the inbox poller that turns
//!   acknowledgements and MESH error reports into timeline reports.
//!
//! The letter's content and rendering are the gateway's; queues and retries are the bus crate's.

pub mod adapter;
pub mod client;
pub mod itk3;

/// The adapter's name in `signpost adapter NAME` and in settings.
pub const NAME: &str = "mesh";
