//! The randomized sweep: one seed picks a cluster size, a fault mix and a client load;
//! the run must keep every invariant, recover once faults stop, and leave a
//! linearizable history. The hostile sweep runs the same seeds with hand-made messages
//! thrown at the nodes ([`super::hostile`]).

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{FaultConfig, HostileConfig, HostileMode, NetworkConfig, Sim, SimConfig};
use crate::{kv::SessionLimits, raft::MAX_TERM};

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
    // Snapshots every few entries on three seeds of four, so compaction, InstallSnapshot
    // and crashes during both happen all the time.
    cfg.replica.snapshot_entries = [u64::MAX, 8, 25, 80][(seed / 2 % 4) as usize];
    // Client sessions expire after seconds of cluster time on three seeds of four (a
    // tick is 30 ms of it), so that clients idle between writes, or retrying through
    // an outage, find their session gone; and on some seeds a tiny session limit
    // pushes sessions out all the time.
    cfg.replica.sessions = SessionLimits {
        timeout_ms: [SessionLimits::DEFAULT_TIMEOUT_MS, 3000, 900, 300][(seed / 8 % 4) as usize],
        max_sessions: [SessionLimits::DEFAULT_MAX_SESSIONS, 3, 8][(seed / 3 % 3) as usize],
    };
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
    /// Cluster size.
    pub nodes: usize,
    /// Entries known committed.
    pub committed: u64,
    /// Client operations that completed.
    pub ops_ok: usize,
    /// Client writes given up on whose outcome is unknown.
    pub ops_unknown: usize,
    /// Client operations given up on that certainly changed nothing.
    pub ops_refused: usize,
    /// Client writes answered `session_expired`.
    pub sessions_expired: usize,
    /// Elections won.
    pub elections: u64,
    /// Messages sent.
    pub messages: u64,
    /// Hostile messages thrown at the nodes.
    pub hostile: u64,
    /// Messages refused as protocol violations.
    pub violations: u64,
    /// Election timeouts at which a node at the term limit did not campaign.
    pub campaigns_refused: u64,
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
    crate::check::check(sim.history())
        .map_err(|v| format!("seed {}: history is not linearizable: {v}", sim.seed()))?;
    Ok(summary(sim))
}

fn summary(sim: &Sim) -> RunSummary {
    let history = sim.history();
    let ops_ok = history.iter().filter(|op| op.complete.is_some()).count();
    let stats = sim.stats();
    RunSummary {
        nodes: sim.ids().len(),
        committed: sim.committed(),
        ops_ok,
        ops_unknown: history.len() - ops_ok,
        ops_refused: sim.clients.refused(),
        sessions_expired: sim.clients.expired(),
        elections: stats.elections_won,
        messages: stats.total_sent(),
        hostile: stats.hostile,
        violations: stats.violations.values().sum(),
        campaigns_refused: stats.campaigns_refused,
    }
}

/// Per tick, the chance that each live node is thrown a hostile message in the hostile
/// sweep: a few dozen per run, among thousands of honest messages.
pub const HOSTILE_RATE: f64 = 0.02;

/// The configuration of seed `seed` in the hostile sweep: the sweep's
/// ([`chaos_config`]) with hostile messages of `mode`. One forged seed in four starts
/// three terms below [`MAX_TERM`], where forged terms soon reach the limit and nobody
/// may campaign any more.
pub fn hostile_config(seed: u64, mode: HostileMode) -> SimConfig {
    let mut cfg = chaos_config(seed);
    cfg.hostile = Some(HostileConfig {
        mode,
        rate: HOSTILE_RATE,
    });
    if mode == HostileMode::Forged && seed % 4 == 3 {
        cfg.start_term = MAX_TERM - 3;
    }
    cfg
}

/// Runs one seed of the hostile sweep. Malformed messages must change nothing: the run
/// must pass everything an honest one does. With forged ones, only each node's own
/// guarantees are checked, during the faulty phase (the cluster may never recover: a
/// forger can commit entries that contradict the real leader's). A panic is a failure
/// like any other; the error names the seed, the command that replays it and the last
/// steps before it.
pub fn run_hostile_seed(seed: u64, mode: HostileMode) -> Result<RunSummary, String> {
    let run = |sim: &mut Sim| match mode {
        HostileMode::Malformed => run_sim(sim),
        HostileMode::Forged => match sim.run_ticks(CHAOS_TICKS) {
            true => Ok(summary(sim)),
            false => Err(sim.failure().expect("failed").to_string()),
        },
    };
    let mut sim = Sim::new(hostile_config(seed, mode));
    let error = match catch_unwind(AssertUnwindSafe(|| run(&mut sim))) {
        Ok(Ok(summary)) => return Ok(summary),
        Ok(Err(e)) => e,
        Err(panic) => format!("seed {seed} panicked: {}", panic_text(panic.as_ref())),
    };
    let mut traced = hostile_config(seed, mode);
    traced.trace = 80;
    let mut sim = Sim::new(traced);
    let _ = catch_unwind(AssertUnwindSafe(|| run(&mut sim)));
    Err(format!(
        "{error}\nreplay: RAFTKV_SEED={seed} RAFTKV_HOSTILE={} cargo test --release --test \
         sim_hostile replay -- --ignored --nocapture\nlast steps:\n{}",
        mode.as_str(),
        sim.trace().join("\n")
    ))
}

/// The text a panic was raised with.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not text)")
}
