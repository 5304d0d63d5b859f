//! The Signpost gateway.
//!
//! # Layout
//! - [`config`]: settings (TOML file, then `SIGNPOST_*` environment).
//! - [`app`]: start-up of the gateway and adapters; what `signpost run|gateway|adapter` do.
//! - [`server`] and [`api`]: the hyper server and the HTTP/FHIR API (routing, media types, BaRS
//!   headers, reads, health, metrics).
//! - [`message`]: parsing a `$process-message` body at the edge.
//! - [`pipeline`]: what each message does (new referral, cancellation, scheme response), written
//!   in one transaction before the answer.
//! - [`referral`]: the Task lifecycle and the resources and messages built for a referral.
//! - [`store`]: the ledger (sqlx; SQLite by default, PostgreSQL for several replicas).
//! - [`relay`]: the outbox relay (publisher confirms).
//! - [`events`]: delivery reports from adapters onto timelines.
//! - [`error`]: the one place errors become OperationOutcomes.
//! - [`tls`], [`auth`], [`audit`]: the mutual-TLS listener, who may do what, and the audit trail.
//! - [`telemetry`]: logs, and traces exported over OTLP.
//! - [`fhir`], [`capability`], [`metrics`]: helpers.
//!
//! The bus contract (envelope, topology, consuming) is the `signpost-bus` crate's; delivering to
//! schemes and GP systems is the adapters'.

pub mod admin;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod capability;
pub mod config;
pub mod error;
pub mod events;
pub mod fhir;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod pipeline;
pub mod record_event;
pub mod referral;
pub mod relay;
pub mod replies;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod validate;
