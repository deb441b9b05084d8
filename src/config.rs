//! The cluster file (docs/protocol.md §2): which nodes exist and where they listen,
//! the cluster's name, and its rules for client sessions.
//!
//! **Identity.** A cluster is known by its *identity*: the file's `cluster` name when it
//! has one, otherwise a fingerprint of its members (`m-` and 16 hex digits of a SHA-256
//! over the sorted ids and client addresses). A data directory records the identity it
//! was created for, and every peer handshake names it, so a node never joins, nor
//! starts on the data of, another cluster by mistake. Raft addresses are left out of
//! the fingerprint on purpose: they say how one node reaches another, which may differ
//! from node to node (a proxy, NAT, a hostname only some nodes resolve), while every
//! node of a cluster must compute the same identity.

use std::{collections::BTreeSet, fmt::Write as _, path::Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    error::{Error, Result},
    kv::SessionLimits,
    raft::NodeId,
};

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: NodeId,
    /// Where the node listens for its peers.
    pub raft: String,
    /// Where the node listens for clients.
    pub client: String,
    /// Where the node serves the HTTP API (docs/protocol.md §5), if it does. Not written
    /// when absent, so a membership stored before this key existed compares the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

/// The whole cluster file. Unknown keys are ignored so later versions may add some.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// The cluster's name (optional): its identity, when given. Stored with the
    /// membership; absent, it is not written back either, so a membership stored
    /// before this key existed reads and compares the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub nodes: Vec<NodeSpec>,
    /// The optional session keys (stored with the membership, so a node keeps the
    /// rules it was created with).
    #[serde(flatten)]
    pub sessions: SessionSettings,
}

/// The cluster file's optional session keys (docs/protocol.md §2 and §3.6). Absent keys
/// take the defaults of [`SessionLimits`]; absent keys are not written back either, so
/// a stored membership from before these keys existed reads and compares the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSettings {
    /// A client session idle this long (in seconds of cluster time) expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_timeout_secs: Option<u64>,
    /// At most this many client sessions exist at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u64>,
}

/// The largest `session_timeout_secs` accepted: about 136 years.
const MAX_SESSION_TIMEOUT_SECS: u64 = u32::MAX as u64;
/// The longest cluster name accepted, in bytes.
pub const MAX_CLUSTER_NAME: usize = 64;

impl ClusterConfig {
    pub fn load(path: &Path) -> Result<ClusterConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read cluster file {}", path.display()), e))?;
        Self::parse(&text)
            .map_err(|e| Error::Config(format!("cluster file {}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<ClusterConfig> {
        let config: ClusterConfig =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("invalid JSON: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules of docs/protocol.md §2: at least one node, ids positive and unique,
    /// addresses present.
    pub fn validate(&self) -> Result<()> {
        if self.nodes.is_empty() {
            return Err(Error::Config("\"nodes\" is empty".into()));
        }
        let mut ids = BTreeSet::new();
        for n in &self.nodes {
            if n.id == 0 {
                return Err(Error::Config("node ids must be positive integers".into()));
            }
            if !ids.insert(n.id) {
                return Err(Error::Config(format!("node id {} appears twice", n.id)));
            }
            if n.raft.trim().is_empty() || n.client.trim().is_empty() {
                return Err(Error::Config(format!(
                    "node {} needs \"raft\" and \"client\"",
                    n.id
                )));
            }
            if n.http.as_ref().is_some_and(|a| a.trim().is_empty()) {
                return Err(Error::Config(format!(
                    "node {}: \"http\", when present, must be an address",
                    n.id
                )));
            }
        }
        if let Some(secs) = self.sessions.session_timeout_secs {
            if !(1..=MAX_SESSION_TIMEOUT_SECS).contains(&secs) {
                return Err(Error::Config(format!(
                    "\"session_timeout_secs\" must be from 1 to {MAX_SESSION_TIMEOUT_SECS}"
                )));
            }
        }
        if self.sessions.max_sessions == Some(0) {
            return Err(Error::Config("\"max_sessions\" must be at least 1".into()));
        }
        if let Some(name) = &self.cluster {
            check_name(name)?;
        }
        Ok(())
    }

    /// The cluster's identity: its name, or else the fingerprint of its members (see
    /// the module documentation).
    pub fn identity(&self) -> String {
        match &self.cluster {
            Some(name) => name.clone(),
            None => self.fingerprint(),
        }
    }

    /// `m-` and the first 16 hex digits of the SHA-256 of one line `<id> <client>\n`
    /// per node, in id order: the same for every file listing the same members.
    fn fingerprint(&self) -> String {
        let mut nodes: Vec<_> = self.nodes.iter().map(|n| (n.id, &n.client)).collect();
        nodes.sort();
        let mut text = String::new();
        for (id, client) in nodes {
            let _ = writeln!(text, "{id} {client}");
        }
        let digest = Sha256::digest(text.as_bytes());
        format!("m-{}", crate::hex::encode(&digest[..8]))
    }

    /// The session rules the file sets (defaults for absent keys).
    pub fn session_limits(&self) -> SessionLimits {
        let defaults = SessionLimits::default();
        SessionLimits {
            timeout_ms: self
                .sessions
                .session_timeout_secs
                .map_or(defaults.timeout_ms, |s| s * 1000),
            max_sessions: self.sessions.max_sessions.unwrap_or(defaults.max_sessions),
        }
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The client addresses of all nodes, in file order.
    pub fn client_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client.clone()).collect()
    }
}

/// A cluster name is 1 to [`MAX_CLUSTER_NAME`] letters, digits, `-`, `_`, `.` or `:`:
/// it goes into log lines, the peer handshake's lines and its proofs, where a space or
/// a newline would be ambiguous.
fn check_name(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
    if name.is_empty() || name.len() > MAX_CLUSTER_NAME || !name.chars().all(allowed) {
        return Err(Error::Config(format!(
            "\"cluster\" must be 1 to {MAX_CLUSTER_NAME} letters, digits, '-', '_', '.' or ':'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example_and_ignores_extra_keys() {
        let c = ClusterConfig::parse(
            r#"{"nodes":[{"id":1,"raft":"127.0.0.1:7001","client":"127.0.0.1:8001","zone":"x"},
                         {"id":2,"raft":"127.0.0.1:7002","client":"127.0.0.1:8002"}]}"#,
        )
        .unwrap();
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.node(2).unwrap().client, "127.0.0.1:8002");
    }

    #[test]
    fn the_http_address_is_optional_and_not_written_when_absent() {
        let plain = r#"{"nodes":[{"id":1,"raft":"a:1","client":"a:2"}]}"#;
        let c = ClusterConfig::parse(plain).unwrap();
        assert_eq!(c.nodes[0].http, None);
        assert_eq!(serde_json::to_string(&c).unwrap(), plain);
        let with = r#"{"nodes":[{"id":1,"raft":"a:1","client":"a:2","http":"a:3"}]}"#;
        let c = ClusterConfig::parse(with).unwrap();
        assert_eq!(c.nodes[0].http.as_deref(), Some("a:3"));
        assert_eq!(serde_json::to_string(&c).unwrap(), with);
        let blank = r#"{"nodes":[{"id":1,"raft":"a:1","client":"a:2","http":" "}]}"#;
        assert!(ClusterConfig::parse(blank).is_err());
    }

    #[test]
    fn session_keys_are_optional_and_checked() {
        let plain = r#"{"nodes":[{"id":1,"raft":"a:1","client":"a:2"}]}"#;
        let c = ClusterConfig::parse(plain).unwrap();
        assert_eq!(c.session_limits(), SessionLimits::default());
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            plain,
            "stored as before"
        );
        let c = ClusterConfig::parse(
            r#"{"nodes":[{"id":1,"raft":"a:1","client":"a:2"}],
                "session_timeout_secs":90,"max_sessions":500}"#,
        )
        .unwrap();
        assert_eq!(
            c.session_limits(),
            SessionLimits {
                timeout_ms: 90_000,
                max_sessions: 500
            }
        );
        let back: ClusterConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        for bad in [
            r#""session_timeout_secs":0"#,
            r#""session_timeout_secs":-1"#,
            r#""session_timeout_secs":"1h""#,
            r#""session_timeout_secs":1e20"#,
            r#""max_sessions":0"#,
        ] {
            let text = format!(r#"{{"nodes":[{{"id":1,"raft":"a:1","client":"a:2"}}],{bad}}}"#);
            assert!(ClusterConfig::parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_identity_is_the_name_or_a_fingerprint_of_ids_and_client_addresses() {
        let two = r#"{"nodes":[{"id":1,"raft":"a:1","client":"a:2"},{"id":2,"raft":"b:1","client":"b:2"}]}"#;
        let c = ClusterConfig::parse(two).unwrap();
        let fingerprint = c.identity();
        assert!(
            fingerprint.starts_with("m-") && fingerprint.len() == 18,
            "{fingerprint}"
        );
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            two,
            "a file without a name is stored as before"
        );
        // The same members in another order, seen through other raft addresses (a
        // proxy), with other session rules: the same cluster.
        let same = ClusterConfig::parse(
            r#"{"nodes":[{"id":2,"raft":"p:9","client":"b:2"},{"id":1,"raft":"a:1","client":"a:2"}],
                "max_sessions":5}"#,
        )
        .unwrap();
        assert_eq!(same.identity(), fingerprint);
        // Another member, or another client address: another cluster.
        for other in [
            r#"{"nodes":[{"id":1,"raft":"a:1","client":"a:2"},{"id":3,"raft":"b:1","client":"b:2"}]}"#,
            r#"{"nodes":[{"id":1,"raft":"a:1","client":"a:2"},{"id":2,"raft":"b:1","client":"b:3"}]}"#,
        ] {
            assert_ne!(ClusterConfig::parse(other).unwrap().identity(), fingerprint);
        }
        let named = ClusterConfig::parse(
            r#"{"cluster":"raftkv-01ab","nodes":[{"id":1,"raft":"a:1","client":"a:2"}]}"#,
        )
        .unwrap();
        assert_eq!(named.identity(), "raftkv-01ab");
        let back: ClusterConfig =
            serde_json::from_str(&serde_json::to_string(&named).unwrap()).unwrap();
        assert_eq!(back, named);
        for bad in [
            "\"\"",
            "\"a b\"",
            "\"a\\nb\"",
            "\"é\"",
            "7",
            &format!("\"{}\"", "x".repeat(65)),
        ] {
            let text =
                format!(r#"{{"cluster":{bad},"nodes":[{{"id":1,"raft":"a:1","client":"a:2"}}]}}"#);
            assert!(ClusterConfig::parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_files() {
        for bad in [
            r#"{"nodes":[]}"#,
            r#"{"nodes":[{"id":0,"raft":"a:1","client":"a:2"}]}"#,
            r#"{"nodes":[{"id":1,"raft":"a:1","client":"a:2"},{"id":1,"raft":"a:3","client":"a:4"}]}"#,
            r#"{"nodes":[{"id":-1,"raft":"a:1","client":"a:2"}]}"#,
            r#"not json"#,
        ] {
            assert!(ClusterConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
