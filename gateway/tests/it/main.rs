//! Gateway integration tests that need real infrastructure but not the whole loop.

mod ledger;
