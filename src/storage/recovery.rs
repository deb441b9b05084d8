//! Choosing the snapshot recovery starts from, and checking that the log continues
//! it. Read-only: the repairs this decides on are applied by `Storage::open_with`.
//!
//! See the module documentation of `storage` for the rules and why they are safe.

use std::path::Path;

use super::{
    snapshot::{self, StoredSnapshot, SNAPSHOT_DIR},
    wal::{Fit, Scan},
};
use crate::{
    error::{Error, Result},
    raft::SnapshotMeta,
};

/// What recovery will start from.
#[derive(Debug)]
pub(crate) struct Choice {
    /// The newest intact snapshot the log continues; `None` if the log starts at 1.
    pub(crate) snapshot: Option<StoredSnapshot>,
    /// How the log continues it.
    pub(crate) fit: Fit,
    /// Damaged snapshots newer than the chosen one, newest first, with why: recovery
    /// sets them aside.
    pub(crate) damaged: Vec<(SnapshotMeta, String)>,
}

/// Picks the newest snapshot in `snap_dir` that verifies, and fits the log to it.
///
/// If newer ones are damaged, falling back is allowed only when it loses nothing: the
/// log must continue the fallback (start at or before its index + 1, without
/// conflict) and reach at least the damaged newest snapshot's index, so that every
/// entry the damaged snapshot held is still in the log. Otherwise the open is refused
/// with [`Error::Corrupt`] naming the newest damaged file.
pub(crate) fn choose(snap_dir: &Path, scan: &Scan) -> Result<Choice> {
    let (metas, malformed) = snapshot::list(snap_dir)?;
    if let Some(name) = malformed.first() {
        return Err(Error::Corrupt {
            file: snap_dir.join(name),
            offset: 0,
            reason: "snapshot names are <20 digits>-<20 digits>.snap; skipping this file \
                     could silently ignore the newest snapshot"
                .into(),
        });
    }
    let mut damaged: Vec<(SnapshotMeta, Error)> = Vec::new();
    let mut chosen = None;
    for &meta in metas.iter().rev() {
        match snapshot::read(snap_dir, meta) {
            Ok(snap) => {
                chosen = Some(snap);
                break;
            }
            Err(e @ Error::Corrupt { .. }) => damaged.push((meta, e)),
            Err(e) => return Err(e),
        }
    }
    let chosen_meta = chosen.as_ref().map(|s| s.meta);
    let chosen_file = chosen_meta.map_or(String::new(), |m| {
        format!("{SNAPSHOT_DIR}/{}", snapshot::file_name(m))
    });
    let fit = scan.fit(chosen_meta, &chosen_file);
    let Some((newest, _)) = damaged.first() else {
        return Ok(Choice {
            snapshot: chosen,
            fit: fit?,
            damaged: Vec::new(),
        });
    };
    let newest = *newest;
    let why_not = match &fit {
        Err(e) => Some(e.to_string()),
        Ok(fit) => match (&fit.reset, scan.last_index(fit)) {
            (Some(reset), _) => Some(format!("the log does not continue it ({reset})")),
            (None, last) if last < newest.index => Some(format!(
                "the log ends at {last}, before the damaged snapshot's index {}, so \
                 entries it held would be lost",
                newest.index
            )),
            (None, _) => None,
        },
    };
    if let Some(why_not) = why_not {
        let (file, offset, reason) = match damaged.swap_remove(0).1 {
            Error::Corrupt {
                file,
                offset,
                reason,
            } => (file, offset, reason),
            other => return Err(other),
        };
        let older = match chosen_meta {
            Some(_) => format!("the older snapshot {chosen_file}"),
            None => "the log alone (no older intact snapshot)".into(),
        };
        return Err(Error::Corrupt {
            file,
            offset,
            reason: format!("{reason}; cannot fall back to {older}: {why_not}"),
        });
    }
    Ok(Choice {
        snapshot: chosen,
        fit: fit?,
        damaged: damaged
            .into_iter()
            .map(|(meta, e)| (meta, e.to_string()))
            .collect(),
    })
}
