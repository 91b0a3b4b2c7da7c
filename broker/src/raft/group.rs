//! Opening a partition's Raft group: the log, the log store, the state machine and the
//! network, with the settings every group runs with.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::{BasicNode, Raft};

use super::log_store::{EntryReader, LocalAcks, RaftLogStore};
use super::network::{GroupNetwork, PeerChannels};
use super::state_machine::{Applier, PartitionStateMachine, SmStorage};
use super::types::TypeConfig;
use super::votes::VoteJournal;
use super::METADATA_GROUP;
use crate::log::{LogConfig, PartitionLog};
use crate::tasks::Tasks;

/// Why a group could not be opened (its log, its Raft state or openraft itself).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct GroupError(pub String);

/// The Raft settings of every group.
pub fn raft_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "rafka".into(),
        // Heartbeats every 150 ms (also openraft's AppendEntries timeout) and elections
        // after 1-2 s of silence: a two-core machine running three brokers with a
        // hundred-odd groups each delays heartbeats by hundreds of milliseconds under
        // full load, and tighter settings (100 ms / 0.5-1 s) set off election storms
        // there. A leader's death still moves its partitions within about 2-3 s.
        heartbeat_interval: 150,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        // An AppendEntries must arrive within one heartbeat interval (openraft's RPC
        // timeout): cap its entries (batches of up to a few hundred KiB) so that a
        // follower far behind catches up in many small rounds instead of timing out on
        // one huge request again and again.
        max_payload_entries: 32,
        // Snapshots hold offsets, not data, and are cheap: take one every 10,000 entries
        // so a restart replays little. Entries are purged only when retention deletes
        // their data (see `ReplicatedPartition::apply_retention`), so a lagging replica
        // catches up from the log whenever the leader still has it.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: u64::MAX,
        ..Default::default()
    };
    Arc::new(config.validate().expect("static Raft config is valid"))
}

/// The Raft settings of a partition group. Its timers are steered by the broker
/// (`cluster::quiesce`): openraft never starts an election by itself (a follower of an
/// idle group hears nothing from its leader, by design), and heartbeats and ticks run
/// only while the leader has something to send.
///
/// Heartbeats every 400 ms while awake (openraft ticks at 1.5 times that); that is also
/// the AppendEntries timeout. A vote request may take 700 ms (election_timeout_min), and
/// the leader lease a voter grants (election_timeout_max) is 900 ms: a campaign after the
/// leader's broker died is refused for at most that long after the leader was last
/// heard.
pub fn partition_raft_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        heartbeat_interval: 400,
        election_timeout_min: 700,
        election_timeout_max: 900,
        enable_elect: false,
        ..(*raft_config()).clone()
    };
    Arc::new(config.validate().expect("static Raft config is valid"))
}

/// A partition log with its Raft group running over it.
pub struct OpenedGroup<A: Applier> {
    /// The group.
    pub raft: Raft<TypeConfig>,
    /// The partition log (the group's Raft log).
    pub log: Arc<Mutex<PartitionLog>>,
    /// The state machine: offsets, membership, the applier's state.
    pub sm: PartitionStateMachine<A>,
    /// Waiters for local appends (`acks=leader`).
    pub local_acks: LocalAcks,
    /// Reads the group's entries (retention finds purge points with it).
    pub entries: EntryReader,
}

/// Opens (recovering) the partition log in `dir` and starts Raft group `group` of
/// broker `node` over it; its votes go to `votes` when given (else to its `raft.json`).
pub async fn open_group<A: Applier>(
    node: u64,
    group: u64,
    dir: &Path,
    config: LogConfig,
    channels: &PeerChannels,
    tasks: &Tasks,
    votes: Option<&VoteJournal>,
) -> Result<OpenedGroup<A>, GroupError> {
    let open_dir = dir.to_path_buf();
    let log = tokio::task::spawn_blocking(move || PartitionLog::open(open_dir, config))
        .await
        .map_err(|e| GroupError(format!("opening {}: {e}", dir.display())))?
        .map_err(|e| GroupError(e.to_string()))?;
    let log = Arc::new(Mutex::new(log));
    let mut store = RaftLogStore::open(dir, log.clone(), tasks)
        .map_err(|e| GroupError(e.to_string()))?
        .persist_committed(group == METADATA_GROUP);
    if let Some(journal) = votes {
        store = store.with_vote_journal(journal.clone(), group);
    }
    let local_acks = store.local_acks();
    let entries = store.entry_reader();
    let sm = PartitionStateMachine::<A>::open(SmStorage {
        dir: dir.to_path_buf(),
        log: log.clone(),
        reset_pending: store.reset_flag(),
        entries: entries.clone(),
        raft_state: store.state_handle(),
        snapshot_at: Arc::new(std::sync::atomic::AtomicU64::new(
            crate::raft::state_machine::NO_TARGET,
        )),
    })
    .map_err(|e| GroupError(e.to_string()))?;
    let network = GroupNetwork::new(group, channels.clone());
    let config = if group == METADATA_GROUP {
        raft_config()
    } else {
        partition_raft_config()
    };
    let raft = Raft::new(node, config, network, store, sm.clone())
        .await
        .map_err(|e| GroupError(e.to_string()))?;
    Ok(OpenedGroup {
        raft,
        log,
        sm,
        local_acks,
        entries,
    })
}

/// Initializes a group with `members` unless it already is. A group whose only member is
/// this node, already initialized (a restart), elects itself at once instead of waiting
/// out an election timeout.
pub async fn initialize(raft: &Raft<TypeConfig>, members: BTreeMap<u64, BasicNode>) {
    if raft.is_initialized().await.unwrap_or(true) {
        let me = raft.metrics().borrow().id;
        if members.len() == 1 && members.contains_key(&me) {
            if let Err(e) = raft.trigger().elect().await {
                tracing::debug!("electing a group of one: {e}");
            }
        }
        return;
    }
    if let Err(e) = raft.initialize(members).await {
        tracing::debug!("group already initialized: {e}");
    }
}
