//! The event sources: adapters that receive records and settle them; between the two,
//! every batch goes through the [`pipeline`](crate::pipeline).

#[cfg(test)]
mod bench;
pub mod sqs;
pub mod stream;

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::AwsSettings;
use crate::pipeline::capture::CaptureFile;
use crate::status::StatusReporter;
use crate::target::Function;

/// What a source needs to run one mapping, besides the mapping itself.
#[derive(Clone)]
pub struct Launch {
    pub function: Arc<Function>,
    pub aws: AwsSettings,
    /// Where stream checkpoints live.
    pub state_dir: PathBuf,
    pub status: StatusReporter,
    /// Cancelled at shutdown.
    pub stop: CancellationToken,
    /// The mapping's `capture` file, shared with every mapping that names it.
    pub capture: Option<Arc<CaptureFile>>,
}
