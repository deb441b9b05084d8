//! Start-up: open the data directory, settle the membership and check whose data it
//! is, rebuild the replica.

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
    storage::{Identity, Storage, StorageOptions},
};

/// Everything recovered and decided before any thread starts.
pub(crate) struct Boot {
    pub storage: Storage,
    pub replica: Replica<ReplyTo>,
    pub membership: ClusterConfig,
    pub me: NodeSpec,
    /// The cluster identity the data directory belongs to: what peer handshakes name.
    pub cluster: String,
}

/// Opens storage (failing if another process holds it or committed data is damaged),
/// picks the membership, checks that the directory belongs to this node of this
/// cluster, and rebuilds the replica from the recovered log.
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
    let (membership, identity) = settle(
        &mut storage,
        recovered.membership,
        recovered.identity,
        options,
    )?;
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
        "recovered {} (cluster {}): term {}, vote {}, snapshot {base}, {} log entries after it, last {}, members {:?}{}",
        options.data_dir.display(),
        identity.cluster,
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
        cluster: identity.cluster,
    })
}

/// Picks the membership (the stored one; the cluster file's for a new directory) and
/// the directory's identity (the recorded one; for a new directory, or one from
/// before identities were recorded, this node in the membership's cluster, which is
/// then recorded). Refuses a directory of another node, and a cluster file of another
/// cluster: starting on the wrong data would mix two nodes' or two clusters' logs.
fn settle(
    storage: &mut Storage,
    stored: Option<ClusterConfig>,
    recorded: Option<Identity>,
    options: &NodeOptions,
) -> Result<(ClusterConfig, Identity)> {
    let (membership, file, new) = match (stored, ClusterConfig::load(&options.cluster)) {
        (Some(stored), file) => (stored, file, false),
        (None, Ok(file)) => {
            check_member(&file, options.id)?;
            (file.clone(), Ok(file), true)
        }
        (None, Err(e)) => return Err(e),
    };
    let identity = recorded.clone().unwrap_or_else(|| Identity {
        cluster: membership.identity(),
        node: options.id,
    });
    let (dir, id) = (options.data_dir.display(), options.id);
    if identity.node != id {
        return Err(Error::Config(format!(
            "data directory {dir} belongs to node n{} of cluster {}, not to n{id}: start it \
             with --id {}, or give n{id} a fresh --data-dir",
            identity.node, identity.cluster, identity.node
        )));
    }
    if let Ok(file) = &file {
        if file.identity() != identity.cluster {
            return Err(Error::Config(format!(
                "data directory {dir} belongs to cluster {}, but the cluster file {} describes \
                 cluster {}: start n{id} with --cluster naming cluster {}'s file, or give it a \
                 fresh --data-dir",
                identity.cluster,
                options.cluster.display(),
                file.identity(),
                identity.cluster
            )));
        }
    }
    if new {
        storage.save_membership(&membership)?;
        info!(
            "new data directory {dir}: bootstrapped membership from {}",
            options.cluster.display()
        );
    } else {
        // A restarted node trusts its own data, not a file that may have changed.
        match &file {
            Ok(file) if *file != membership => warning!(
                "cluster file {} differs from the membership stored in {dir}; using the stored one",
                options.cluster.display()
            ),
            Ok(_) => {}
            Err(e) => warning!("ignoring the cluster file ({e}); using the stored membership"),
        }
    }
    if recorded.is_none() {
        storage.save_identity(&identity)?;
        info!(
            "data directory {dir} now records that it belongs to n{id} of cluster {}",
            identity.cluster
        );
    }
    Ok((membership, identity))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs, path::Path};

    fn write_file(path: &Path, name: Option<&str>, client_port: u16) {
        let name = name.map_or(String::new(), |n| format!(r#""cluster":"{n}","#));
        fs::write(
            path,
            format!(
                r#"{{{name}"nodes":[{{"id":1,"raft":"127.0.0.1:1","client":"127.0.0.1:{client_port}"}},
                               {{"id":2,"raft":"127.0.0.1:3","client":"127.0.0.1:4"}}]}}"#
            ),
        )
        .unwrap();
    }

    fn options(dir: &Path, id: u64) -> NodeOptions {
        NodeOptions {
            id,
            cluster: dir.join("cluster.json"),
            data_dir: dir.join("data"),
            ..NodeOptions::default()
        }
    }

    fn refusal(options: &NodeOptions) -> String {
        match boot(options) {
            Ok(_) => panic!("started on another's data"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_data_directory_is_refused_to_another_node_or_another_cluster() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("cluster.json");
        write_file(&file, Some("alpha"), 2);
        assert_eq!(boot(&options(tmp.path(), 1)).unwrap().cluster, "alpha");

        let e = refusal(&options(tmp.path(), 2));
        assert!(
            e.contains("belongs to node n1 of cluster alpha, not to n2")
                && e.contains("--id 1")
                && e.contains("fresh --data-dir"),
            "{e}"
        );
        write_file(&file, Some("beta"), 2);
        let e = refusal(&options(tmp.path(), 1));
        assert!(
            e.contains("belongs to cluster alpha")
                && e.contains("describes cluster beta")
                && e.contains("fresh --data-dir"),
            "{e}"
        );
        // Same name, another address: the stored membership, as before.
        write_file(&file, Some("alpha"), 9);
        let b = boot(&options(tmp.path(), 1)).unwrap();
        assert_eq!(b.me.client, "127.0.0.1:2");
        drop(b);
        // An unreadable cluster file: the stored membership and identity, as before.
        fs::write(&file, "no longer a cluster file").unwrap();
        assert_eq!(boot(&options(tmp.path(), 1)).unwrap().cluster, "alpha");
    }

    #[test]
    fn an_unnamed_cluster_is_known_by_its_fingerprint_and_old_directories_learn_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("cluster.json");
        write_file(&file, None, 2);
        let fingerprint = ClusterConfig::load(&file).unwrap().identity();
        assert_eq!(boot(&options(tmp.path(), 1)).unwrap().cluster, fingerprint);

        // A directory from before identities were recorded gets one on its next start.
        let recorded = tmp.path().join("data").join("identity");
        fs::remove_file(&recorded).unwrap();
        assert_eq!(boot(&options(tmp.path(), 1)).unwrap().cluster, fingerprint);
        assert!(recorded.exists());

        // Another member's client address makes another cluster.
        write_file(&file, None, 9);
        let e = refusal(&options(tmp.path(), 1));
        assert!(
            e.contains(&format!("belongs to cluster {fingerprint}")),
            "{e}"
        );
    }
}
