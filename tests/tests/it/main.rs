//! End-to-end tests of the whole loop against the real RabbitMQ (a vhost per test), a real
//! SQLite file, real HTTP, and the stand-in scheme and GP system. Set `TEST_LOG=1` to see the
//! gateway's logs.

mod helpers;

mod hl7v2;

mod amqps;
mod bad_input;
mod budget;
mod consume;
mod crash_recovery;
mod delivery;
mod duplicates;
mod limits;
mod loop_end_to_end;
mod mesh;
mod outbox;
mod peers;
mod privacy;
mod reads;
mod record_events;
mod reliability;
mod scale_out;
mod schemes;
mod security;
mod validation;
