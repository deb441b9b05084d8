//! The threaded runtime of one node: sockets, channels, the clock and signals around
//! the pure [`Replica`](crate::replica::Replica).
//!
//! ```text
//!                  +--------------------------- one node ----------------------------+
//!  peers --TCP-->  | raft listener --> peer reader per connection --------+          |
//!                  |   (handshake first: peer_auth, peer_gate)           |          |
//!  clients -TCP->  | client listener --> client reader per connection ---+          |
//!  HTTP ----TCP->  | http listener ---> http reader per connection ------+          |
//!                  |                      |  one slot per request, in order|          |
//!                  |                      v                               |          |
//!  clients <-TCP-  |   client writer <-- ordered response queue           |          |
//!                  |                      ^ reply (one-shot, per request) |          |
//!                  | timer thread (Tick every tick_ms) -------------------+          |
//!                  | Ctrl-C / SIGTERM handler (Shutdown) -----------------+          |
//!                  |                                                      v          |
//!                  |                         crossbeam inbox --> STATE THREAD        |
//!                  |                                             Replica (Raft + KV) |
//!                  |                                             behind a Mutex,     |
//!                  |                                             Storage (WAL)       |
//!                  |  replicator per peer <-- bounded channel per peer --+           |
//!  peers <--TCP--  |  (owns the outgoing connection, reconnects, streams snapshots)  |
//!                  +-----------------------------------------------------------------+
//! ```
//!
//! **One writer.** Only the state thread changes the replica, and it alone touches
//! storage. Raft's rules are about the order in which state changes, becomes durable
//! and becomes visible; with one writer that order is simply program order, and there
//! are no lock-ordering puzzles. Other threads (`status`) lock the mutex only for a
//! read-only look, and the state thread holds it only while feeding inputs in and
//! taking outputs out, never across I/O or an fsync, so a look is never slow.
//!
//! **Group commit.** The state thread blocks for one input, then takes everything
//! already queued as one batch. All the entries and the hard state the batch produced
//! are written and fsynced once, and only then do the batch's messages and client
//! replies leave (the durability rule of docs/architecture.md: nothing that depends on state
//! leaves before that state is durable). Under load, batches grow by themselves, so
//! one fsync serves thousands of requests: throughput rises with concurrency instead
//! of being capped at one fsync per write. The one exception is allowed by Raft: a
//! leader's AppendEntries go out before its own fsync, so the followers' fsyncs
//! overlap the leader's; the leader counts itself toward commit only once durable.
//!
//! **Bounded channels, never blocking the state thread.** Each peer has a bounded
//! queue; the state thread `try_send`s and drops a message when the queue is full. A
//! slow, stopped or dead peer therefore costs the cluster nothing: Raft already
//! tolerates lost messages and retransmits (heartbeats, probes). The inbox is bounded
//! too, so a flood of client or peer input slows the readers (TCP backpressure)
//! instead of growing memory; the timer queues at most one tick. Each request has its
//! own one-shot reply channel, so delivering a reply never blocks either, and the
//! answer for a client that disconnected is simply discarded.
//!
//! **Bounded memory: every queue between threads is bounded in bytes as well as in
//! items.** A count alone bounds nothing when a value can be 1 MiB: 16 connections
//! pipelining 60 such puts used to put all 960 MiB into the inbox. Now:
//!
//! | what | bounded by | where |
//! |---|---|---|
//! | one connection: requests read and not answered, answers not written | 1,024 slots, 2 MiB (`PIPELINE_BYTES`) | `reply_queue` |
//! | all client connections together, the same bytes | 16 MiB, plus a 4 MiB lane only requests under 64 KiB may use | `client_port::CLIENT_BYTES`, `budget` |
//! | peer messages in the inbox | 16,384 inputs (`INBOX`), 32 MiB (`PEER_BYTES`) | `peer_port`, `state` |
//! | one batch (one write and one fsync) | 4,096 inputs, 4 MiB | `state::MAX_BATCH_BYTES` |
//! | committed entries applied in one turn | 4,096 entries, 4 MiB | `raft::Config::max_apply_*`, `replica::turn` |
//! | one peer's queue | 1,024 messages, 16 MiB of entries | `replicator::QUEUE_BYTES` |
//! | a line being read | `--max-line-bytes` (8 MiB) per client connection, 64 MiB per peer | `codec` |
//! | an HTTP request being read | a 16 KiB head and a body of `--max-line-bytes` per connection | `http::parse` |
//! | connections on the raft port | 16 in the handshake (2 s each, the oldest evicted), one per member, 256 in all | `peer_gate`, `peer_port` |
//! | events waiting for a watcher | 4,096 per SSE stream (32 streams at most), 65,536 for `--trace`; beyond, events are lost and counted | `events` |
//!
//! A reader that finds no room waits before it queues (its connection's bytes first,
//! then the node's), and its client is slowed by TCP; nothing is refused for being
//! large, only delayed. The client bytes are counted from the moment a request line
//! is read until its answer is written to the socket, so they cover the request in
//! the inbox, in a batch, in the log awaiting commit, and an unread answer (a large
//! get). The per-connection cap is the fairness rule: no connection holds more than
//! an eighth of the node's budget, and small requests have a lane of their own, so a
//! few clients flooding large values neither take the whole budget nor starve a
//! client writing small values (measured: 16 connections pipelining 60 puts of 1 MiB
//! each, without reading, while another client's small puts waited ~150 ms at the
//! median). The state thread never waits for a budget: it gives back a peer
//! message's bytes as it takes it, and charges a client's answer without waiting.
//!
//! What this does not bound, and why: the connections' read buffers (one line each,
//! so `--max-line-bytes` times the number of connections, up to 4,096), and the log
//! itself, whose committed tail the replica keeps for lagging followers until a
//! snapshot lets it go (by count of entries, see `replica`).
//!
//! **Heartbeats survive a slow disk.** A leader's state thread is blocked while it
//! writes and syncs a batch, and used to send nothing meanwhile: a 575 ms fsync of a
//! 64 MiB batch let the followers time out and elect another leader. Two things keep
//! heartbeats flowing now:
//!
//! 1. *Short syncs.* A batch stops growing at 4 MiB, so one write and sync covers at
//!    most that much (about 10 ms on an SSD; the flood above saw at most ~200 ms on
//!    this shared, busy machine, under the shortest election timeout of 300 ms).
//! 2. *Keepalives.* The state thread says when it starts writing and when the sync is
//!    done (`shared::StateWatch`), and whether it leads. While a leader's write and
//!    sync has lasted longer than a heartbeat interval, its replicators resend each
//!    follower the last AppendEntries without its entries every heartbeat interval:
//!    exactly the heartbeat the core would have sent then (same base, commit index and
//!    read round), which a follower takes as a duplicate that restarts its election
//!    timer. Raft's safety never depends on how many copies of a message arrive. This
//!    lasts for at most four of the longest election timeouts (2.4 s): a disk that
//!    does not finish a sync in that time is sick, and the followers had better elect
//!    a leader whose disk works. (Measured: a leader whose every sync takes 800 ms
//!    keeps its term; without keepalives no leader survives its first sync.)
//!
//! A busy disk on a *follower* only slows that follower's own clock: its state
//! thread counts at most one tick per turn, so it cannot time out during its own
//! sync; and the leader's check-quorum needs one answer per election timeout from a
//! majority, which 4 MiB batches leave time for.
//!
//! A large committed backlog (a restart, a follower catching up) is applied in
//! slices of at most 4,096 entries or 4 MiB, one per turn, and the state thread runs
//! the next turn at once, taking a pending tick and new input first: heartbeats,
//! elections and `status` flow between slices.
//!
//! **Snapshots travel beside the messages, never through the state thread.** When
//! the core sends a follower an InstallSnapshot, the state thread only queues that
//! small message. The peer's replicator streams the snapshot file on its existing
//! connection, in chunks, with a window of bytes sent but not yet durable on the
//! follower, starting where an earlier attempt left off (the follower keeps what it
//! stored), and puts `SnapshotSent` in the inbox when the transfer ends, whichever
//! way. Raft messages queued for the peer always go before the next chunk, and the
//! file is read by a helper thread, so heartbeats never wait behind a snapshot or a
//! disk. On the follower the peer reader hands chunks to a receiver thread of its
//! connection, which writes and fsyncs them, answers on the same connection, then
//! verifies and decodes the finished snapshot and only then puts `PeerSnapshot` in
//! the inbox: the core sees InstallSnapshot only once the data is complete and
//! durable, and the state thread never decodes or waits for snapshot bytes. Details
//! in `replicator`, `peer_port` and `snapshot_transfer` (the frames).
//!
//! **HTTP** (`http`) is one more front door with the same requests: an HTTP connection
//! has the same reader and writer threads, response queue, budgets and connection cap
//! as a client connection, and a follower's HTTP reader forwards what needs the leader
//! to the leader's client port.
//!
//! **Events** (`events`): every thread reports what it does (a request read, a batch
//! taken, a write, an fsync, a message sent or read, a commit, a reply written) on the
//! node's event bus, for `GET /v1/events` and `--trace`. Each watcher has a bounded
//! queue that events are only offered to (`try_send`): a slow one loses events and is
//! told how many, and no thread ever waits for it. With nobody watching an event costs
//! one relaxed atomic load.
//!
//! **Order per connection.** A client connection's reader appends one slot per request
//! to the connection's response queue in arrival order; the request's reply channel
//! fills exactly that slot, and the writer sends filled slots from the front only. So
//! pipelined responses come back in request order even though the state thread
//! answers (say) a stale read before an earlier write commits. (Writes from one
//! connection are also *applied* in the order sent: one reader, one FIFO inbox, one
//! state thread. A linearizable read pipelined behind a write may be served before
//! that write commits, which linearizability allows since the two overlap.)
//!
//! **No spinning.** Crossbeam's blocking receive spins and yields before it parks. That
//! is right for the state thread's inbox (one thread, usually busy) but wrong for
//! thousands of connection threads that each wait once per request: the writers park
//! on a condition variable of their response queue instead (see `reply_queue`).
//!
//! **Failure.** A storage error ends the process at once with a clear log line: after
//! a failed write or fsync nothing on disk can be trusted, and acknowledging anything
//! more could lose it. Bad input from peers or clients only ever closes that one
//! connection. Ctrl-C / SIGTERM queue `Shutdown`: the state thread refuses new
//! requests, fails pending ones, syncs, and [`run`] returns once the replies are out.

mod budget;
mod client_port;
mod events;
mod http;
pub(crate) mod logging;
mod peer_auth;
mod peer_gate;
mod peer_port;
mod replicator;
mod reply_queue;
mod secret;
mod shared;
mod snapshot_transfer;
mod snapshotter;
mod startup;
mod state;
mod timer;

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::bounded;
use parking_lot::Mutex;

pub use client_port::ClientTimeouts;

use crate::{
    error::{Error, Result},
    protocol::{Token, DEFAULT_MAX_CLIENT_LINE},
    replica::{Outcome, DEFAULT_TICK_MS},
    storage::StorageOptions,
};
use budget::Budget;
use events::{trace, EventBus};
use logging::{info, warning, Level};
use peer_auth::Auth;
use secret::Secret;
use shared::{Input, Shared};
use state::StateLoop;

/// Capacity of the state thread's inbox, in inputs. Beyond it, readers wait (TCP
/// backpressure). Its bytes are bounded by the budgets: [`client_port::CLIENT_BYTES`]
/// for client requests, [`PEER_BYTES`] for peer messages.
const INBOX: usize = 16 * 1024;
/// Bytes of peer messages the inbox may hold (`Shared::peer_budget`): four times
/// what a leader keeps in flight to one follower (8 AppendEntries of about 1 MiB).
const PEER_BYTES: usize = 32 << 20;
/// How long a shutting-down node waits for replies to reach their clients.
const DRAIN_REPLIES: Duration = Duration::from_secs(2);

/// How to run one node (`raftkv node ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOptions {
    /// This node's id; must be a member of the cluster.
    pub id: u64,
    /// The cluster file (docs/protocol.md §2); used only when the data directory is new.
    pub cluster: PathBuf,
    /// Where the log, term/vote and membership live; locked while the node runs.
    pub data_dir: PathBuf,
    /// `error`, `warn`, `info` or `debug` (debug traces every Raft message).
    pub log_level: String,
    /// Length of one Raft tick in milliseconds; the timing in ticks is
    /// [`ReplicaConfig::for_tick`](crate::replica::ReplicaConfig::for_tick).
    pub tick_ms: u64,
    /// Longest client request line accepted, in bytes; longer ones get `bad_request`
    /// and the connection is closed.
    pub max_line_bytes: usize,
    /// Take a snapshot after this many applied entries; `None`: the replica's
    /// defaults (entries or bytes, whichever comes first).
    pub snapshot_entries: Option<u64>,
    /// A new WAL segment starts at this size; compaction deletes whole segments.
    pub wal_segment_bytes: u64,
    /// The file holding the client token (`--client-token-file`): with one, every
    /// client connection must authenticate first (docs/protocol.md §3.11).
    pub client_token_file: Option<PathBuf>,
    /// How long the client port waits for idle, slow and unauthenticated clients.
    pub client_timeouts: ClientTimeouts,
    /// The cluster secret's file (`secret`); `None`: the raft port is open to anyone
    /// who names a member.
    pub secret_file: Option<PathBuf>,
    /// Print every event on stderr, one `TRACE` line each (`events::trace`).
    pub trace: bool,
}

impl Default for NodeOptions {
    /// Node 1, `cluster.json`, `data/`, `info`, the default tick and line limit.
    fn default() -> NodeOptions {
        NodeOptions {
            id: 1,
            cluster: PathBuf::from("cluster.json"),
            data_dir: PathBuf::from("data"),
            log_level: "info".into(),
            tick_ms: DEFAULT_TICK_MS,
            max_line_bytes: DEFAULT_MAX_CLIENT_LINE,
            snapshot_entries: None,
            wal_segment_bytes: StorageOptions::default().segment_bytes,
            client_token_file: None,
            client_timeouts: ClientTimeouts::default(),
            secret_file: None,
            trace: false,
        }
    }
}

/// Runs one node until Ctrl-C or SIGTERM, then shuts down cleanly and returns `Ok`.
///
/// Errors come from start-up only: a bad option or cluster file, a data directory in
/// use by another process or holding damaged data, an address that cannot be bound.
/// A storage failure while running ends the process with a non-zero status instead
/// (see the module documentation).
pub fn run(options: NodeOptions) -> Result<()> {
    logging::init(options.id, Level::parse(&options.log_level)?);
    if options.tick_ms == 0 {
        return Err(Error::Config("--tick-ms must be at least 1".into()));
    }
    if options.max_line_bytes == 0 {
        return Err(Error::Config(
            "the maximum line length must be positive".into(),
        ));
    }
    let client_token = options
        .client_token_file
        .as_deref()
        .map(Token::read_file)
        .transpose()?;
    // Read before the data directory is touched: a typo in the path should not leave
    // a new, empty data directory behind.
    let secret = match &options.secret_file {
        Some(path) => Some(Secret::load(path)?),
        None => None,
    };
    let boot = startup::boot(&options)?;
    if secret.is_none() {
        warning!(
            "no --secret-file: the raft port on {} accepts anyone who names a member of the \
             cluster; give every node the same secret file to admit only members",
            boot.me.raft
        );
    }
    let auth = Arc::new(Auth {
        cluster: boot.cluster.clone(),
        me: options.id,
        members: boot.membership.nodes.iter().map(|n| n.id).collect(),
        secret,
    });
    let raft_listener = bind(&boot.me.raft, "peers")?;
    let client_listener = bind(&boot.me.client, "clients")?;
    let http_listener = boot
        .me
        .http
        .as_deref()
        .map(|a| bind(a, "HTTP"))
        .transpose()?;

    let events = Arc::new(EventBus::new(options.id, boot.membership.nodes.clone()));
    let tracer = options.trace.then(|| trace::start(&events)).transpose()?;
    let (inbox_tx, inbox_rx) = bounded(INBOX);
    let shared = Arc::new(Shared {
        id: options.id,
        replica: Mutex::new(boot.replica),
        client_addrs: boot
            .membership
            .nodes
            .iter()
            .map(|n| (n.id, n.client.clone()))
            .collect(),
        inbox: inbox_tx,
        client_budget: Arc::new(
            Budget::new(client_port::CLIENT_BYTES)
                .with_small_lane(client_port::SMALL_REQUEST, client_port::CLIENT_RESERVE),
        ),
        peer_budget: Arc::new(Budget::new(PEER_BYTES)),
        shutting_down: AtomicBool::new(false),
        tick_pending: AtomicBool::new(false),
        unwritten: Arc::new(AtomicUsize::new(0)),
        client_conns: AtomicUsize::new(0),
        watch: Arc::default(),
        wal_bytes: AtomicU64::new(boot.storage.wal_bytes()),
        max_line_bytes: options.max_line_bytes,
        events: Arc::clone(&events),
    });

    let snapshots = boot.storage.snapshot_store();
    let mut peers = BTreeMap::new();
    for node in boot.membership.nodes.iter().filter(|n| n.id != options.id) {
        let (tx, rx, queued_bytes) = replicator::PeerQueue::new();
        let link = replicator::Link {
            peer: node.id,
            auth: Arc::clone(&auth),
            addr: node.raft.clone(),
            inbox: shared.inbox.clone(),
            store: snapshots.clone(),
            tuning: replicator::Tuning::default(),
            queued_bytes,
            keepalive: replicator::Keepalive::for_tick(options.tick_ms, Arc::clone(&shared.watch)),
            events: Arc::clone(&events),
        };
        spawn(
            &format!("replicator-n{}", node.id),
            replicator::STACK,
            move || replicator::run(link, rx),
        )?;
        peers.insert(node.id, tx);
    }
    let s = Arc::clone(&shared);
    spawn("raft-listener", 256 << 10, move || {
        peer_port::listen(raft_listener, s, auth, snapshots)
    })?;
    if let Some(listener) = http_listener {
        let port = http::HttpPort::new(
            client_token.clone(),
            options.client_timeouts,
            options.tick_ms,
        );
        let s = Arc::clone(&shared);
        spawn("http-listener", 256 << 10, move || {
            http::listen(listener, s, Arc::new(port))
        })?;
    }
    let s = Arc::clone(&shared);
    let port = Arc::new(client_port::ClientPort::new(
        client_token,
        options.client_timeouts,
    ));
    spawn("client-listener", 256 << 10, move || {
        client_port::listen(client_listener, s, port)
    })?;
    let s = Arc::clone(&shared);
    let tick = Duration::from_millis(options.tick_ms);
    spawn("timer", 256 << 10, move || timer::run(s, tick))?;
    install_signal_handler(&shared)?;

    info!(
        "ready: raft on {}, clients on {}, tick {} ms",
        boot.me.raft, boot.me.client, options.tick_ms
    );
    let (snapshot_tx, snapshot_rx) = bounded(1);
    let (garbage_tx, garbage_rx) = bounded(4);
    let (store, inbox) = (boot.storage.snapshot_store(), shared.inbox.clone());
    let snapshot_events = Arc::clone(&events);
    spawn("snapshotter", 1 << 20, move || {
        snapshotter::run(store, snapshot_rx, garbage_rx, inbox, snapshot_events)
    })?;
    let state = StateLoop::new(
        Arc::clone(&shared),
        boot.storage,
        inbox_rx,
        peers,
        snapshot_tx,
        garbage_tx,
    );
    let inbox = thread::Builder::new()
        .name("state".into())
        .spawn(move || state.run())
        .map_err(|e| Error::io("cannot start the state thread", e))?
        .join()
        .map_err(|_| Error::Config("the state thread panicked".into()))?;

    // Refuse whatever reached the inbox after the shutdown, then stop taking input.
    while let Ok(input) = inbox.try_recv() {
        match input {
            Input::Request(_, reply) => reply.send(Outcome::shutting_down()),
            Input::Peer(m) => shared.peer_budget.release(shared::message_bytes(&m)),
            _ => {}
        }
    }
    drop(inbox);
    let deadline = Instant::now() + DRAIN_REPLIES;
    while shared.unwritten.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    // The trace's last lines are printed before the process goes.
    events.end_all();
    if let Some(tracer) = tracer {
        let _ = tracer.join();
    }
    info!("stopped");
    Ok(())
}

fn bind(addr: &str, whom: &str) -> Result<TcpListener> {
    let resolved = peer_port::resolve(addr)
        .map_err(|e| Error::io(format!("cannot resolve address {addr} for {whom}"), e))?;
    TcpListener::bind(resolved)
        .map_err(|e| Error::io(format!("cannot listen for {whom} on {addr}"), e))
}

fn spawn(name: &str, stack: usize, f: impl FnOnce() + Send + 'static) -> Result<()> {
    thread::Builder::new()
        .name(name.into())
        .stack_size(stack)
        .spawn(f)
        .map(drop)
        .map_err(|e| Error::io(format!("cannot start thread {name}"), e))
}

/// SIGINT / SIGTERM / SIGHUP queue one `Shutdown`; a second signal while shutting
/// down ends the process at once (everything acknowledged is durable anyway).
fn install_signal_handler(shared: &Arc<Shared>) -> Result<()> {
    let shared = Arc::clone(shared);
    let requested = AtomicBool::new(false);
    ctrlc::set_handler(move || {
        if requested.swap(true, Ordering::AcqRel) {
            warning!("second signal during shutdown: exiting now");
            std::process::exit(130);
        }
        info!("signal received: shutting down");
        let _ = shared.inbox.send(Input::Shutdown);
    })
    .map_err(|e| Error::Config(format!("cannot install the Ctrl-C/SIGTERM handler: {e}")))
}
