//! The cluster file (docs/protocol.md §2): which nodes exist and where they listen.

use std::{collections::BTreeSet, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
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
}

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
        Ok(())
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
