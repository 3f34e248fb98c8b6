//! STAND-IN, replay-failures branch only: replay-range owns this file and the lead takes
//! theirs at merge. It holds just what `--failures` needs: the agreed [`ReplayContext`].

pub mod failures;
pub mod range;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, MappingConfig};
use crate::status::StatusBoard;
use crate::target::Function;

/// What every replay form needs (the agreed fields).
pub struct ReplayContext {
    pub config: Config,
    pub mapping: MappingConfig,
    /// The target: the mapping's function, or `--function`'s.
    pub function: Arc<Function>,
    pub dry_run: bool,
    /// Cancelled by SIGINT/SIGTERM.
    pub stop: CancellationToken,
    pub status: Arc<StatusBoard>,
}
