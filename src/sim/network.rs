//! The simulated network: per-message delay, loss, duplication and reordering drawn
//! from the seed, and links that can be cut in either direction.

use std::collections::BTreeSet;

use rand::{rngs::StdRng, Rng};

use crate::raft::NodeId;

/// How unreliable the network is. Delays are in simulator steps (a tick is
/// [`super::STEPS_PER_TICK`] steps).
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    pub min_delay: u64,
    pub max_delay: u64,
    /// Probability that a message is lost.
    pub drop_rate: f64,
    /// Probability that a message is delivered twice.
    pub duplicate_rate: f64,
    /// Probability that a message takes a long detour (up to `long_delay` steps), which
    /// reorders it behind many later ones.
    pub long_delay_rate: f64,
    pub long_delay: u64,
}

impl NetworkConfig {
    /// A perfect network with small, varying delays.
    pub fn reliable() -> NetworkConfig {
        NetworkConfig {
            min_delay: 1,
            max_delay: 5,
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            long_delay_rate: 0.0,
            long_delay: 0,
        }
    }

    /// Loss, duplication and long delays (reordering).
    pub fn unreliable() -> NetworkConfig {
        NetworkConfig {
            min_delay: 1,
            max_delay: 15,
            drop_rate: 0.1,
            duplicate_rate: 0.05,
            long_delay_rate: 0.05,
            long_delay: 200,
        }
    }
}

/// Which links are cut. Links are directed: cutting `a → b` still lets `b → a` through.
#[derive(Clone, Debug, Default)]
pub struct Links {
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Links {
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cuts every link between different groups; links inside a group are healed.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.cut.clear();
        for (i, g) in groups.iter().enumerate() {
            for h in &groups[i + 1..] {
                for &a in g {
                    for &b in h {
                        self.cut(a, b);
                    }
                }
            }
        }
    }

    /// Cuts `node` off from everyone in `all`.
    pub fn isolate(&mut self, node: NodeId, all: &[NodeId]) {
        for &other in all {
            if other != node {
                self.cut(node, other);
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn is_healed(&self) -> bool {
        self.cut.is_empty()
    }

    pub fn describe(&self) -> String {
        let v: Vec<String> = self.cut.iter().map(|(a, b)| format!("n{a}↛n{b}")).collect();
        v.join(" ")
    }
}

impl NetworkConfig {
    /// The delivery delays for one message: empty if lost, two if duplicated.
    pub fn delays(&self, rng: &mut StdRng) -> Vec<u64> {
        if self.drop_rate > 0.0 && rng.gen_bool(self.drop_rate) {
            return Vec::new();
        }
        let copies = if self.duplicate_rate > 0.0 && rng.gen_bool(self.duplicate_rate) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                if self.long_delay_rate > 0.0 && rng.gen_bool(self.long_delay_rate) {
                    rng.gen_range(self.max_delay..=self.long_delay.max(self.max_delay))
                } else {
                    rng.gen_range(self.min_delay..=self.max_delay)
                }
            })
            .collect()
    }
}
