//! `esmd replay`: re-drives records into a mapping's function and exits.
//!
//! - [`capture`]: the events a mapping's `capture` file recorded, with no AWS endpoint.
//! - [`progress`]: how far a replay is, on stderr.

pub mod capture;
pub mod progress;
