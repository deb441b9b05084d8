//! Start-up: open the data directory, settle the membership, rebuild the replica.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{
    logging::{info, warning},
    reply_queue::ReplyTo,
    NodeOptions,
};
use crate::{
    config::{ClusterConfig, NodeSpec},
    error::{Error, Result},
    raft::Pos,
    replica::{Replica, ReplicaConfig, Snapshot},
    storage::{Storage, StorageOptions},
};

/// Everything recovered and decided before any thread starts.
pub(crate) struct Boot {
    pub storage: Storage,
    pub replica: Replica<ReplyTo>,
    pub membership: ClusterConfig,
    pub me: NodeSpec,
}

/// Opens storage (failing if another process holds it or committed data is damaged),
/// picks the membership and rebuilds the replica from the recovered log.
pub(crate) fn boot(options: &NodeOptions) -> Result<Boot> {
    // A brand-new node needs a valid cluster file: check it before creating anything,
    // so a typo does not leave an empty data directory behind.
    if !options.data_dir.exists() {
        check_member(&ClusterConfig::load(&options.cluster)?, options.id)?;
    }
    let storage_options = StorageOptions {
        segment_bytes: options.wal_segment_bytes,
    };
    let (mut storage, recovered) = Storage::open_with(&options.data_dir, storage_options)?;
    let membership = match recovered.membership {
        Some(stored) => {
            // A restarted node trusts its own data, not a file that may have changed.
            match ClusterConfig::load(&options.cluster) {
                Ok(file) if file != stored => warning!(
                    "cluster file {} differs from the membership stored in {}; using the stored one",
                    options.cluster.display(),
                    options.data_dir.display()
                ),
                Ok(_) => {}
                Err(e) => warning!("ignoring the cluster file ({e}); using the stored membership"),
            }
            stored
        }
        None => {
            let file = ClusterConfig::load(&options.cluster)?;
            check_member(&file, options.id)?;
            storage.save_membership(&file)?;
            info!(
                "new data directory {}: bootstrapped membership from {}",
                options.data_dir.display(),
                options.cluster.display()
            );
            file
        }
    };
    let me = check_member(&membership, options.id)?.clone();

    let hs = recovered.hard_state;
    let snapshot = match &recovered.snapshot {
        Some(stored) => Some(Snapshot::decode(&stored.body).map_err(|e| Error::Corrupt {
            file: storage.snapshot_store().dir().join(format!(
                "snapshot {}",
                Pos(stored.meta.index, stored.meta.term)
            )),
            offset: e.offset,
            reason: format!(
                "the snapshot's checksum is right but its contents are not: {}",
                e.reason
            ),
        })?),
        None => None,
    };
    let base = snapshot
        .as_ref()
        .map_or(Pos(0, 0), |s| Pos(s.meta.index, s.meta.term));
    let last = recovered
        .entries
        .last()
        .map_or(base, |e| Pos(e.index, e.term));
    info!(
        "recovered {}: term {}, vote {}, snapshot {base}, {} log entries after it, last {}, members {:?}{}",
        options.data_dir.display(),
        hs.term,
        hs.voted_for.map_or("none".to_string(), |v| format!("n{v}")),
        recovered.entries.len(),
        last,
        membership.nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
        if recovered.notes.is_empty() {
            String::new()
        } else {
            format!("; storage notes: {}", recovered.notes.join("; "))
        }
    );

    let mut config = ReplicaConfig::for_tick(options.tick_ms);
    if let Some(n) = options.snapshot_entries {
        config.snapshot_entries = n;
    }
    config.sessions = membership.session_limits();
    let members: Vec<u64> = membership.nodes.iter().map(|n| n.id).collect();
    let replica = Replica::new(
        options.id,
        &members,
        config,
        seed(),
        hs,
        snapshot,
        recovered.entries,
    );
    Ok(Boot {
        storage,
        replica,
        membership,
        me,
    })
}

fn check_member(config: &ClusterConfig, id: u64) -> Result<&NodeSpec> {
    config.node(id).ok_or_else(|| {
        Error::Config(format!(
            "node id {id} is not a member of the cluster (members: {:?})",
            config.nodes.iter().map(|n| n.id).collect::<Vec<_>>()
        ))
    })
}

/// Seeds the election-timeout RNG from the clock and the pid, so nodes started
/// together do not draw the same timeouts.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}
