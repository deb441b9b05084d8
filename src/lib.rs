//! raftkv: a Raft-replicated key-value store on std threads and crossbeam channels.

pub mod check;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod error;
pub mod hex;
pub mod kv;
pub mod protocol;
pub mod raft;
pub mod replica;
pub mod server;
pub mod sim;
pub mod storage;
