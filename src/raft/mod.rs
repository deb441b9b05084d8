mod log;
mod node;
mod progress;
mod types;

pub use log::Log;
pub use node::{Config, NotLeader, RaftNode, ReadId, Ready, Role};
pub use types::*;

#[cfg(test)]
mod tests;
