//! The embedded checkpoint store: one JSON file per stream mapping under `[state] dir`.
//!
//! Per shard it keeps the sequence number up to which everything is settled, whether the
//! shard was read to its end, and where a shard without a checkpoint starts (a pinned
//! LATEST). The stream's identity (ARN plus creation time or stream label) detects a
//! re-created stream. Every change rewrites the file atomically: write a temporary file,
//! fsync it, rename it over the old one, fsync the directory.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Everything stored for one mapping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MappingState {
    /// The stream this state belongs to, and its identity (creation time or label).
    pub stream_arn: String,
    pub stream_identity: String,
    pub shards: BTreeMap<String, ShardState>,
}

/// One shard's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardState {
    /// Every record up to and including this sequence number is settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// The shard was read to its end and everything in it settled.
    #[serde(default)]
    pub finished: bool,
    /// Where the shard starts while it has no checkpoint (epoch seconds): LATEST pinned
    /// to the moment the shard was first seen, or the AT_TIMESTAMP of the mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<f64>,
}

/// The store of one mapping.
pub struct CheckpointStore {
    path: PathBuf,
    state: Mutex<MappingState>,
}

impl CheckpointStore {
    /// Opens (or starts) the state of `mapping_id` under `dir`.
    pub fn open(dir: &Path, mapping_id: &str) -> io::Result<CheckpointStore> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{mapping_id}.json"));
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("checkpoint file {} is corrupt: {err}", path.display()),
                )
            })?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => MappingState::default(),
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!("cannot read checkpoint file {}: {err}", path.display()),
                ));
            }
        };
        Ok(CheckpointStore {
            path,
            state: Mutex::new(state),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the current state.
    pub fn state(&self) -> MappingState {
        self.lock().clone()
    }

    /// Changes the state with `change` and persists it before returning.
    pub fn update(&self, change: impl FnOnce(&mut MappingState)) -> io::Result<()> {
        let mut state = self.lock();
        let mut next = state.clone();
        change(&mut next);
        if next == *state {
            return Ok(());
        }
        write_atomically(&self.path, &serde_json::to_vec_pretty(&next)?)?;
        *state = next;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MappingState> {
        self.state
            .lock()
            .expect("the checkpoint state is never poisoned")
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), "m1").unwrap();
        assert_eq!(store.state(), MappingState::default());
        store
            .update(|s| {
                s.stream_arn = "arn:aws:kinesis:us-east-1:1:stream/s".into();
                s.stream_identity = "1700000000".into();
                s.shards.entry("shardId-0".into()).or_default().checkpoint = Some("42".into());
                s.shards.entry("shardId-1".into()).or_default().finished = true;
            })
            .unwrap();
        let again = CheckpointStore::open(dir.path(), "m1").unwrap();
        assert_eq!(again.state(), store.state());
        assert_eq!(
            again.state().shards["shardId-0"].checkpoint.as_deref(),
            Some("42")
        );
        assert!(!dir.path().join("m1.json.tmp").exists());
        // another mapping keeps its own file
        let other = CheckpointStore::open(dir.path(), "m2").unwrap();
        assert!(other.state().shards.is_empty());
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_silent_restart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.json"), b"{not json").unwrap();
        let err = CheckpointStore::open(dir.path(), "m").err().unwrap();
        assert!(err.to_string().contains("is corrupt"));
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // a directory where the file should be: unreadable as a file, even for root
        std::fs::create_dir(dir.path().join("m.json")).unwrap();
        let err = CheckpointStore::open(dir.path(), "m").err().unwrap();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "cannot read checkpoint file {}: ",
                dir.path().join("m.json").display()
            )),
            "{message}"
        );
    }
}
