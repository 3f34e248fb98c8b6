//! Shard lineage: which shards are new to a mapping, where each starts, and which may
//! start now. A child starts only once every parent (one after a split, two after a
//! merge) is finished, or no longer listed (trimmed by retention).

use std::collections::HashSet;

use super::api::{ShardInfo, StartAt};
use crate::checkpoint::MappingState;
use crate::config::StartingPosition;
use crate::event::sequence::SequenceNumber;

/// Records the shards of `listing` that `state` has not seen. The shards of the first
/// listing start at the mapping's starting position (LATEST pinned to `now`: a closed
/// shard has nothing after LATEST and counts as finished); shards that appear later are
/// children of shards being read and start at their first record.
pub fn register(
    state: &mut MappingState,
    listing: &[ShardInfo],
    position: &StartingPosition,
    now: f64,
) {
    let first = state.shards.is_empty();
    for shard in listing {
        if state.shards.contains_key(&shard.id) {
            continue;
        }
        let entry = state.shards.entry(shard.id.clone()).or_default();
        if !first {
            continue;
        }
        match position {
            StartingPosition::TrimHorizon => {}
            StartingPosition::Latest if shard.closed() => entry.finished = true,
            StartingPosition::Latest => entry.start_at = Some(now),
            StartingPosition::AtTimestamp(seconds) => entry.start_at = Some(*seconds as f64),
        }
    }
}

/// The shards that may start now, with where each starts.
pub fn startable(
    state: &MappingState,
    listing: &[ShardInfo],
    running: &HashSet<String>,
) -> Vec<(String, StartAt)> {
    let listed: HashSet<&str> = listing.iter().map(|s| s.id.as_str()).collect();
    let finished = |id: &str| state.shards.get(id).is_some_and(|s| s.finished);
    listing
        .iter()
        .filter(|shard| !running.contains(&shard.id) && !finished(&shard.id))
        .filter(|shard| {
            shard
                .parents
                .iter()
                .all(|parent| finished(parent) || !listed.contains(parent.as_str()))
        })
        .map(|shard| {
            let stored = state.shards.get(&shard.id);
            let checkpoint = stored
                .and_then(|s| s.checkpoint.as_deref())
                .and_then(SequenceNumber::parse);
            let start = match (checkpoint, stored.and_then(|s| s.start_at)) {
                (Some(sequence), _) => StartAt::AfterSequence(sequence),
                (None, Some(seconds)) => StartAt::AtTimestamp(seconds),
                (None, None) => StartAt::TrimHorizon,
            };
            (shard.id.clone(), start)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str], closed: bool) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            ending: closed.then(|| SequenceNumber::parse("9").unwrap()),
        }
    }

    fn ids(found: &[(String, StartAt)]) -> Vec<&str> {
        found.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn children_wait_for_every_parent() {
        // 0 split into 1 and 2; 1 and 2 merged into 3
        let listing = vec![
            shard("0", &[], true),
            shard("1", &["0"], true),
            shard("2", &["0"], true),
            shard("3", &["1", "2"], false),
        ];
        let mut state = MappingState::default();
        register(&mut state, &listing, &StartingPosition::TrimHorizon, 0.0);
        let none = HashSet::new();
        assert_eq!(ids(&startable(&state, &listing, &none)), vec!["0"]);
        state.shards.get_mut("0").unwrap().finished = true;
        assert_eq!(ids(&startable(&state, &listing, &none)), vec!["1", "2"]);
        state.shards.get_mut("1").unwrap().finished = true;
        assert_eq!(ids(&startable(&state, &listing, &none)), vec!["2"]);
        state.shards.get_mut("2").unwrap().finished = true;
        assert_eq!(ids(&startable(&state, &listing, &none)), vec!["3"]);
        let running = HashSet::from(["3".to_string()]);
        assert!(startable(&state, &listing, &running).is_empty());
    }

    #[test]
    fn a_trimmed_parent_does_not_block_its_child() {
        let listing = vec![shard("5", &["4"], false)];
        let mut state = MappingState::default();
        register(&mut state, &listing, &StartingPosition::TrimHorizon, 0.0);
        assert_eq!(
            startable(&state, &listing, &HashSet::new()),
            vec![("5".to_string(), StartAt::TrimHorizon)]
        );
    }

    #[test]
    fn latest_is_pinned_on_first_sight_and_children_start_at_their_start() {
        let mut state = MappingState::default();
        let first = vec![shard("0", &[], true), shard("1", &["0"], false)];
        register(&mut state, &first, &StartingPosition::Latest, 1700.5);
        assert!(
            state.shards["0"].finished,
            "nothing after LATEST in a closed shard"
        );
        assert_eq!(state.shards["1"].start_at, Some(1700.5));
        assert_eq!(
            startable(&state, &first, &HashSet::new()),
            vec![("1".to_string(), StartAt::AtTimestamp(1700.5))]
        );
        // a later split: the children start at their first record
        let later = vec![
            shard("1", &["0"], true),
            shard("2", &["1"], false),
            shard("3", &["1"], false),
        ];
        register(&mut state, &later, &StartingPosition::Latest, 1800.0);
        assert_eq!(state.shards["2"].start_at, None);
        state.shards.get_mut("1").unwrap().finished = true;
        assert_eq!(
            startable(&state, &later, &HashSet::new()),
            vec![
                ("2".to_string(), StartAt::TrimHorizon),
                ("3".to_string(), StartAt::TrimHorizon)
            ]
        );
    }

    #[test]
    fn a_checkpoint_wins_over_the_start_position() {
        let listing = vec![shard("0", &[], false)];
        let mut state = MappingState::default();
        register(
            &mut state,
            &listing,
            &StartingPosition::AtTimestamp(100),
            0.0,
        );
        state.shards.get_mut("0").unwrap().checkpoint = Some("42".into());
        assert_eq!(
            startable(&state, &listing, &HashSet::new()),
            vec![(
                "0".to_string(),
                StartAt::AfterSequence(SequenceNumber::parse("42").unwrap())
            )]
        );
    }
}
