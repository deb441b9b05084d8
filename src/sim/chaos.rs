//! The randomized sweep: one seed picks a cluster size, a fault mix and a client load;
//! the run must keep every invariant, recover once faults stop, and leave a
//! linearizable history.

use super::{FaultConfig, HistoryStatus, NetworkConfig, OpKind, Sim, SimConfig};

/// Ticks of faults and client load before the cluster is left to settle.
pub const CHAOS_TICKS: u64 = 1500;
/// Ticks the cluster gets to recover after faults stop.
pub const SETTLE_TICKS: u64 = 4000;

/// The configuration seed `seed` runs with. Sizes cycle through 1, 3, 5 and 7 nodes;
/// every other seed uses the unreliable network.
pub fn chaos_config(seed: u64) -> SimConfig {
    let nodes = [3, 5, 3, 1, 7, 3, 5][(seed % 7) as usize];
    let mut cfg = SimConfig::new(seed, nodes);
    cfg.clients = 5;
    cfg.keys = 3;
    cfg.client_rate = 0.2;
    if seed.is_multiple_of(2) {
        cfg.network = NetworkConfig::unreliable();
    }
    cfg.faults = FaultConfig {
        crash: 0.01,
        restart: 0.04,
        partition: 0.01,
        heal: 0.02,
        crash_mid_turn: 0.002,
    };
    cfg
}

/// What one seed did, for the soak summary.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub nodes: usize,
    pub committed: u64,
    pub ops_ok: usize,
    pub ops_unknown: usize,
    pub ops_refused: usize,
    pub elections: u64,
    pub messages: u64,
}

/// Runs one seed of the sweep. On failure, the error names the seed, gives the command
/// that replays it and the trace of the last steps (from a second, traced run, which
/// is identical because runs are deterministic).
pub fn run_seed(seed: u64) -> Result<RunSummary, String> {
    run_config(chaos_config(seed)).map_err(|e| {
        let mut traced = chaos_config(seed);
        traced.trace = 80;
        let mut sim = Sim::new(traced);
        let _ = run_sim(&mut sim);
        format!(
            "{e}\nreplay: RAFTKV_SEED={seed} cargo test --release --test sim_sweep replay -- \
             --ignored --nocapture\nlast steps:\n{}",
            sim.trace().join("\n")
        )
    })
}

fn run_config(cfg: SimConfig) -> Result<RunSummary, String> {
    let mut sim = Sim::new(cfg);
    run_sim(&mut sim)
}

fn run_sim(sim: &mut Sim) -> Result<RunSummary, String> {
    let ok = sim.run_ticks(CHAOS_TICKS);
    if !ok {
        return Err(sim.failure().expect("failed").to_string());
    }
    sim.settle(SETTLE_TICKS)?;
    crate::check::check(&sim.checker_history())
        .map_err(|v| format!("seed {}: history is not linearizable: {v}", sim.seed()))?;
    let count = |s: HistoryStatus| sim.history().iter().filter(|h| h.status == s).count();
    Ok(RunSummary {
        nodes: sim.ids().len(),
        committed: sim.committed(),
        ops_ok: count(HistoryStatus::Ok),
        ops_unknown: count(HistoryStatus::Unknown),
        ops_refused: count(HistoryStatus::Refused),
        elections: sim.stats().elections_won,
        messages: sim.stats().total_sent(),
    })
}

impl Sim {
    /// The client history in the checker's terms: refused operations are left out
    /// (they did not happen), unknown writes may or may not have happened.
    pub fn checker_history(&self) -> Vec<crate::check::Operation> {
        use crate::check::{KvOp, Operation};
        self.history()
            .iter()
            .filter(|h| matches!(h.status, HistoryStatus::Ok | HistoryStatus::Unknown))
            .map(|h| Operation {
                client: h.client as u64,
                key: h.key.clone(),
                op: match &h.kind {
                    OpKind::Get => KvOp::Get,
                    OpKind::Put(v) => KvOp::Put(v.clone()),
                    OpKind::Append(v) => KvOp::Append(v.clone()),
                    OpKind::Delete => KvOp::Delete,
                },
                invoke: h.invoke,
                complete: h.complete,
                read: h.read.clone(),
            })
            .collect()
    }
}
