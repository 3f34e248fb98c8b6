//! The embedded checkpoint store: one JSON file per stream mapping under `[state] dir`.
//!
//! Per shard it keeps the sequence number up to which everything is settled, the ranges
//! settled beyond it (lanes settle out of order), whether the shard was read to its end,
//! and where a shard without a checkpoint starts (a pinned LATEST). The stream's identity
//! (ARN plus creation time or stream label) detects a re-created stream.
//!
//! Writes never happen on the caller's task. A change to the state, or a settle that moved
//! a running shard's position, only marks the store dirty; one writer task per mapping
//! ([`CheckpointStore::write_behind`]) rewrites the file atomically on the blocking pool,
//! at most once per [`WRITE_INTERVAL`], with every change made meanwhile: write a
//! temporary file, fsync it, rename it over the old one, fsync the directory. A crash can
//! lose only the positions of that moment, which means records delivered again, never a
//! record skipped. The positions of
//! running shards are read from their ledgers ([`Progress`]) when the file is written.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::event::sequence::SequenceNumber;

/// The writer writes at most once per this time: a change is on disk this long after it
/// happened, plus the write itself; it is what a crash can lose.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(50);

/// The checkpoint file format this esmd writes. Version 2 added `settled_beyond`; files
/// without a version are version 1 and load as they are.
pub const FORMAT_VERSION: u32 = 2;

/// Everything stored for one mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MappingState {
    #[serde(default = "first_format")]
    pub version: u32,
    /// The stream this state belongs to, and its identity (creation time or label).
    pub stream_arn: String,
    pub stream_identity: String,
    pub shards: BTreeMap<String, ShardState>,
}

impl Default for MappingState {
    fn default() -> MappingState {
        MappingState {
            version: FORMAT_VERSION,
            stream_arn: String::new(),
            stream_identity: String::new(),
            shards: BTreeMap::new(),
        }
    }
}

fn first_format() -> u32 {
    1
}

/// One shard's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardState {
    /// Every record up to and including this sequence number is settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Records beyond the checkpoint that are settled too: every record of the shard whose
    /// sequence number lies in one of these ranges. A restart skips them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settled_beyond: Vec<SettledRange>,
    /// The shard was read to its end and everything in it settled.
    #[serde(default)]
    pub finished: bool,
    /// Where the shard starts while it has no checkpoint (epoch seconds): LATEST pinned
    /// to the moment the shard was first seen, or the AT_TIMESTAMP of the mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<f64>,
}

/// First and last sequence number of a run of settled records, inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettledRange(pub SequenceNumber, pub SequenceNumber);

impl SettledRange {
    pub fn contains(&self, sequence: &SequenceNumber) -> bool {
        self.0 <= *sequence && *sequence <= self.1
    }
}

/// A running shard's position, read when the store writes.
pub trait Progress: Send + Sync {
    /// The settled prefix's last record (`None`: nothing settled since the shard started)
    /// and the ranges settled beyond it.
    fn position(&self) -> (Option<SequenceNumber>, Vec<SettledRange>);
}

/// How the file is written; tests replace it to hold a write.
type WriteFile = dyn Fn(&Path, &[u8]) -> io::Result<()> + Send + Sync;

/// The store of one mapping.
pub struct CheckpointStore {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Told whenever the state or a running shard's position changed.
    changed: Notify,
    /// One write at a time, in generation order.
    file: tokio::sync::Mutex<()>,
    /// The last generation on disk.
    written: AtomicU64,
    write_file: Arc<WriteFile>,
}

struct Inner {
    state: MappingState,
    running: BTreeMap<String, Arc<dyn Progress>>,
    /// Counts changes; a write takes the generation it saw.
    generation: u64,
}

impl CheckpointStore {
    /// Opens (or starts) the state of `mapping_id` under `dir`.
    pub fn open(dir: &Path, mapping_id: &str) -> io::Result<CheckpointStore> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{mapping_id}.json"));
        let state = match fs::read(&path) {
            Ok(bytes) => {
                let mut state: MappingState = serde_json::from_slice(&bytes).map_err(|err| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("checkpoint file {} is corrupt: {err}", path.display()),
                    )
                })?;
                if state.version > FORMAT_VERSION {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "checkpoint file {} has format version {}, written by a newer esmd; this one reads up to version {FORMAT_VERSION}",
                            path.display(),
                            state.version
                        ),
                    ));
                }
                state.version = FORMAT_VERSION;
                state
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => MappingState::default(),
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!("cannot read checkpoint file {}: {err}", path.display()),
                ));
            }
        };
        Ok(CheckpointStore::with_state(
            path,
            state,
            Arc::new(write_atomically),
        ))
    }

    /// A store that starts empty and never writes a file: `esmd replay` runs the stream
    /// engine on it, so it keeps no checkpoints and leaves the mapping's file alone.
    pub fn in_memory(mapping_id: &str) -> CheckpointStore {
        CheckpointStore::with_state(
            PathBuf::from(format!("(memory: {mapping_id})")),
            MappingState::default(),
            Arc::new(|_, _| Ok(())),
        )
    }

    fn with_state(
        path: PathBuf,
        state: MappingState,
        write_file: Arc<WriteFile>,
    ) -> CheckpointStore {
        CheckpointStore {
            path,
            inner: Mutex::new(Inner {
                state,
                running: BTreeMap::new(),
                generation: 0,
            }),
            changed: Notify::new(),
            file: tokio::sync::Mutex::new(()),
            written: AtomicU64::new(0),
            write_file,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the current state, running shards' positions included.
    pub fn state(&self) -> MappingState {
        self.lock().snapshot()
    }

    /// Changes the state with `change`; the writer stores it shortly.
    pub fn update(&self, change: impl FnOnce(&mut MappingState)) {
        let mut inner = self.lock();
        let mut next = inner.state.clone();
        change(&mut next);
        if next != inner.state {
            inner.state = next;
            inner.generation += 1;
            drop(inner);
            self.changed.notify_one();
        }
    }

    /// Changes the state with `change` and returns once it is on disk.
    pub async fn update_now(&self, change: impl FnOnce(&mut MappingState)) -> io::Result<()> {
        self.update(change);
        self.flush().await
    }

    /// Reads `shard`'s position from `progress` from now on, until [`Self::detach`].
    pub fn attach(&self, shard: &str, progress: Arc<dyn Progress>) {
        let mut inner = self.lock();
        inner.fold_running(shard);
        inner.running.insert(shard.to_string(), progress);
    }

    /// Takes `shard`'s last position from its progress and stops reading it.
    pub fn detach(&self, shard: &str) {
        let mut inner = self.lock();
        if !inner.running.contains_key(shard) {
            return;
        }
        inner.fold_running(shard);
        inner.running.remove(shard);
        inner.generation += 1;
        drop(inner);
        self.changed.notify_one();
    }

    /// A running shard's position moved.
    pub fn touch(&self) {
        self.lock().generation += 1;
        self.changed.notify_one();
    }

    /// Writes what changed so far, unless a write already stored it.
    pub async fn flush(&self) -> io::Result<()> {
        let _one_writer = self.file.lock().await;
        let (generation, bytes) = {
            let inner = self.lock();
            if inner.generation <= self.written.load(Ordering::SeqCst) {
                return Ok(());
            }
            (
                inner.generation,
                serde_json::to_vec_pretty(&inner.snapshot())?,
            )
        };
        let path = self.path.clone();
        let write_file = self.write_file.clone();
        tokio::task::spawn_blocking(move || write_file(&path, &bytes))
            .await
            .map_err(io::Error::other)??;
        self.written.fetch_max(generation, Ordering::SeqCst);
        Ok(())
    }

    /// The mapping's writer: stores each change as it comes, the changes made while it
    /// writes or waits together, at most once per [`WRITE_INTERVAL`], until `stop`; then
    /// writes the last of them.
    pub async fn write_behind(self: Arc<Self>, stop: CancellationToken) {
        let mut next_write = tokio::time::Instant::now();
        loop {
            if stop
                .run_until_cancelled(self.changed.notified())
                .await
                .is_none()
            {
                break;
            }
            let paced = tokio::time::sleep_until(next_write);
            if stop.run_until_cancelled(paced).await.is_none() {
                break;
            }
            next_write = tokio::time::Instant::now() + WRITE_INTERVAL;
            // each attempt writes the state as it is then, later changes included
            let written = crate::backoff::retry(
                crate::backoff::outage(),
                &stop,
                || self.flush(),
                |_| true,
                |err, delay| {
                    warn!(file = %self.path.display(), error = %err, retry_in_ms = delay.as_millis() as u64, "cannot write the checkpoint file: retrying (settled records are delivered again if esmd stops now)");
                },
            )
            .await;
            if written.is_err() {
                break;
            }
        }
        if let Err(err) = self.flush().await {
            warn!(file = %self.path.display(), error = %err, "cannot write the last checkpoints: settled records are delivered again after a restart");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("the checkpoint state is never poisoned")
    }

    #[cfg(test)]
    fn with_write_file(mut self, write_file: Arc<WriteFile>) -> CheckpointStore {
        self.write_file = write_file;
        self
    }
}

impl Inner {
    fn snapshot(&self) -> MappingState {
        let mut state = self.state.clone();
        for (shard, progress) in &self.running {
            apply(&mut state, shard, progress.as_ref());
        }
        state
    }

    fn fold_running(&mut self, shard: &str) {
        if let Some(progress) = self.running.get(shard).cloned() {
            apply(&mut self.state, shard, progress.as_ref());
        }
    }
}

fn apply(state: &mut MappingState, shard: &str, progress: &dyn Progress) {
    let (checkpoint, settled_beyond) = progress.position();
    let entry = state.shards.entry(shard.to_string()).or_default();
    if let Some(checkpoint) = checkpoint {
        entry.checkpoint = Some(checkpoint.to_string());
    }
    entry.settled_beyond = settled_beyond;
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

    fn seq(n: u32) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    struct Fixed(Option<SequenceNumber>, Vec<SettledRange>);

    impl Progress for Fixed {
        fn position(&self) -> (Option<SequenceNumber>, Vec<SettledRange>) {
            (self.0.clone(), self.1.clone())
        }
    }

    #[tokio::test]
    async fn state_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), "m1").unwrap();
        assert_eq!(store.state(), MappingState::default());
        store
            .update_now(|s| {
                s.stream_arn = "arn:aws:kinesis:us-east-1:1:stream/s".into();
                s.stream_identity = "1700000000".into();
                s.shards.entry("shardId-0".into()).or_default().checkpoint = Some("42".into());
                s.shards.entry("shardId-1".into()).or_default().finished = true;
            })
            .await
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
    fn a_file_from_a_newer_esmd_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("m.json"),
            br#"{"version":99,"stream_arn":"a","stream_identity":"1","shards":{}}"#,
        )
        .unwrap();
        let message = CheckpointStore::open(dir.path(), "m")
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains("m.json has format version 99"),
            "{message}"
        );
    }

    #[test]
    fn a_file_without_settled_ranges_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("m.json"),
            br#"{"stream_arn":"a","stream_identity":"1","shards":{"s":{"checkpoint":"7","finished":false}}}"#,
        )
        .unwrap();
        let store = CheckpointStore::open(dir.path(), "m").unwrap();
        let shard = &store.state().shards["s"];
        assert_eq!(shard.checkpoint.as_deref(), Some("7"));
        assert!(shard.settled_beyond.is_empty());
    }

    #[tokio::test]
    async fn running_shards_are_read_when_written_and_kept_when_detached() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), "m").unwrap();
        let ranges = vec![SettledRange(seq(5), seq(6)), SettledRange(seq(9), seq(9))];
        store.attach("s", Arc::new(Fixed(Some(seq(3)), ranges.clone())));
        store.touch();
        store.flush().await.unwrap();
        let on_disk = CheckpointStore::open(dir.path(), "m").unwrap().state();
        assert_eq!(on_disk.shards["s"].checkpoint.as_deref(), Some("3"));
        assert_eq!(on_disk.shards["s"].settled_beyond, ranges);
        store.detach("s");
        store.attach("s", Arc::new(Fixed(None, Vec::new())));
        let state = store.state();
        assert_eq!(
            state.shards["s"].checkpoint.as_deref(),
            Some("3"),
            "a shard that settled nothing yet keeps its checkpoint"
        );
        assert!(state.shards["s"].settled_beyond.is_empty());
    }

    /// A settle must never wait for the disk: while a write hangs, changes go on and
    /// the runtime's other tasks keep running; the writer stores the latest state after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_never_wait_for_a_slow_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new((entered_tx, release_rx));
        let store = CheckpointStore::open(dir.path(), "m")
            .unwrap()
            .with_write_file(Arc::new(move |path, bytes| {
                let gate = gate.lock().unwrap();
                gate.0.send(()).ok();
                gate.1.recv().ok();
                write_atomically(path, bytes)
            }));
        let store = Arc::new(store);
        let stop = CancellationToken::new();
        let writer = tokio::spawn(store.clone().write_behind(stop.clone()));
        store.update(|s| s.stream_arn = "first".into());
        tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
            .await
            .unwrap();
        // the write hangs; changes and other tasks go on
        let changing = store.clone();
        let changes = tokio::task::spawn_blocking(move || {
            for n in 0..1000 {
                changing.update(|s| s.stream_identity = n.to_string());
            }
        });
        tokio::time::timeout(Duration::from_secs(30), changes)
            .await
            .expect("changes do not wait for the hung write")
            .unwrap();
        let ticks = tokio::spawn(async {
            let mut interval = tokio::time::interval(Duration::from_millis(1));
            for _ in 0..20 {
                interval.tick().await;
            }
        });
        ticks.await.unwrap();
        assert_eq!(store.state().stream_identity, "999");
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        stop.cancel();
        release_tx.send(()).ok();
        writer.await.unwrap();
        let on_disk = CheckpointStore::open(dir.path(), "m").unwrap().state();
        assert_eq!(on_disk.stream_identity, "999", "the last change is stored");
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
