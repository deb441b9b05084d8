//! The cluster file (docs/protocol.md §2): which nodes exist and where they listen,
//! and the cluster's rules for client sessions.

use std::{collections::BTreeSet, path::Path};

use serde::{Deserialize, Serialize};

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
}

/// The whole cluster file. Unknown keys are ignored so later versions may add some.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
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
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example_and_ignores_extra_keys() {
        let c = ClusterConfig::parse(
            r#"{"nodes":[{"id":1,"raft":"127.0.0.1:7001","client":"127.0.0.1:8001","http":"x"},
                         {"id":2,"raft":"127.0.0.1:7002","client":"127.0.0.1:8002"}]}"#,
        )
        .unwrap();
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.node(2).unwrap().client, "127.0.0.1:8002");
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
