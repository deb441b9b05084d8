//! One replicator thread per peer: it owns the outgoing connection to that peer's raft
//! address, writes the messages the state thread queues for it, one JSON line each,
//! and streams snapshots to it when the core sends an InstallSnapshot.
//!
//! **Messages.** Each connection opens with the peer handshake (`peer_auth`), before
//! anything else is written; a peer that refuses it (another cluster, another secret)
//! counts as unreachable, with its reason logged at most every [`REFUSAL_LOG_EVERY`].
//! It writes whatever is queued before flushing, so a burst becomes one
//! syscall. It reconnects with capped exponential backoff, and while the peer is
//! unreachable it discards queued messages: Raft retransmits (heartbeats, probes), and
//! a channel that stays full would only make the state thread drop newer messages
//! instead of older. The one message that is not retransmitted by itself is
//! InstallSnapshot (the core waits in its `Snapshot` state until it hears
//! `SnapshotSent`), so a discarded one is reported as a transfer that ended.
//!
//! **Pings.** When it has written nothing for [`PING_EVERY`], it writes `{"ping":{}}`,
//! so the peer can tell a live connection that has nothing to say (this node is a
//! follower, whose replicators only answer a leader) from a dead one, which it closes
//! after `peer_port::IDLE`.
//!
//! **Bounded in bytes too.** A [`PeerQueue`] holds at most [`QUEUE`] messages and
//! [`QUEUE_BYTES`] (16 MiB) of log entries; past either the state thread drops the
//! message (heartbeats and other messages without entries are bounded by count
//! alone). The core keeps at most 8 AppendEntries of about 1 MiB in flight to a
//! follower, so only a stalled connection reaches it, where a probe of up to 1 MiB
//! every heartbeat would otherwise pile up for the whole write timeout.
//!
//! **Keepalives.** The core sends heartbeats only when the state thread turns, and it
//! does not turn while it writes and syncs a batch. So the replicator remembers the
//! last AppendEntries it wrote, and while this node leads in that term, its state
//! thread has been in one write and sync for at least a heartbeat interval (at most
//! [`Keepalive::at_most`]), and nothing went to the peer for a heartbeat interval, it
//! writes that AppendEntries again *without its entries*: the heartbeat the core would
//! have sent at that moment. The follower restarts its election timer and answers;
//! as a duplicate of what it already had, it changes nothing else (Raft is safe
//! whatever copies of a message arrive; a ReadIndex round it acknowledges again began
//! before the first copy left). A sync that outlasts `at_most` is a sick disk: then
//! the followers are let to time out and elect a leader that can write.
//!
//! **Snapshots.** An InstallSnapshot message names a snapshot the leader has on disk;
//! it is not written to the socket. Instead the replicator streams the snapshot file
//! over the same connection, in frames (`snapshot_transfer` describes them):
//!
//! ```text
//!  leader (this thread)                                   follower (peer_port)
//!  InstallSnapshot 42@3 from the queue
//!  snapshot reader thread: open + verify the file
//!  offer {42@3, term 5, size} ----------------------->  receive(): keeps a partial file
//!                            <-----------------------  stored 3 MiB      (resume point)
//!  chunk @3 MiB  -------------------------------------> write + fdatasync
//!  Append (heartbeat) --------------------------------> straight to the inbox
//!  chunk @3.5 MiB  -----------------------------------> write + fdatasync
//!                            <-----------------------  stored 3.5 MiB
//!  ...                                                   ...
//!                            <-----------------------  stored <size>, then, once
//!                                                        verified, decoded and handed
//!                            <-----------------------  to the core: done
//!  SnapshotSent(peer) -> the state thread's inbox
//! ```
//!
//! - *Resume.* The follower answers an offer with the number of bytes it already
//!   holds durably for that snapshot and leader term (its partial file survives
//!   dropped connections and restarts), and the replicator starts there. So a
//!   transfer that failed halfway costs only the other half when the core retries.
//! - *Flow control.* At most [`Tuning::window`] bytes are sent and not yet
//!   acknowledged as durable; the follower acknowledges every chunk after its
//!   fdatasync. The window keeps the socket buffers (and so the queue a heartbeat
//!   waits behind) short, and bounds what a slow follower has in memory.
//! - *Heartbeats are never blocked.* Raft messages always go first: before each
//!   chunk, everything queued for the peer is written. A chunk is at most
//!   [`Tuning::chunk`] bytes and the window bounds what sits in the socket ahead of a
//!   heartbeat. The replicator never touches the disk itself: a *snapshot reader*
//!   thread per transfer opens and verifies the file (a full read, seconds for a big
//!   snapshot) and reads chunks ahead into a channel of one, so a slow disk delays
//!   chunks, never messages. On the follower, chunks are written by a separate
//!   receiver thread, so the peer reader forwards heartbeats while a chunk is being
//!   fsynced or the finished snapshot decoded.
//! - *Acknowledgements* come back on the same TCP connection, the only bytes a
//!   follower ever writes on it. Each connection has a small *ack reader* thread
//!   that parses them into a channel; the replicator waits on its queue, that channel
//!   and the snapshot reader's channel at once (`select!`), so it neither blocks on a
//!   socket read nor polls. (Non-blocking reads on the same socket would tie the
//!   replicator to a readiness loop and partial-line buffering for no gain; a thread
//!   that sleeps in `read` costs a small stack.) The ack reader also notices at once
//!   when the peer closes the connection, where a write-only connection learned it
//!   only at its next write.
//! - *The end.* The transfer ends when the follower answers `done` or `failed`, when
//!   the connection fails, when the snapshot cannot be read (a newer snapshot
//!   replaced it: the core will name that one next time), when this node moves to a
//!   newer term, or when nothing progresses for [`Tuning::ack_timeout`] (longer while
//!   the follower checks and installs the complete file). The replicator then puts
//!   `SnapshotSent(peer)` in the state thread's inbox, once per transfer;
//!   the core probes the follower again, and if it still needs the snapshot, sends a
//!   new InstallSnapshot, which resumes. A timeout also drops the connection, so no
//!   late answer from the abandoned transfer can be mistaken for a new one's.
//! - An InstallSnapshot for the snapshot (and term) already being sent continues
//!   that transfer; one for another snapshot or term replaces it (the core then
//!   waits for the new one, so the old one is not reported).
//! - Every transfer logs a line when it starts (with the resume offset), when it ends
//!   (bytes, milliseconds, MB/s) and when it fails (why).

use std::{
    io::{self, BufReader, BufWriter, Write},
    net::{Shutdown, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::{
    bounded, never, select, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError,
};

use super::{
    events::{Beats, EventBus, Way},
    logging::{debug, info, warning, Throttle},
    peer_auth::{self, Auth, Failure, PeerStream},
    peer_port::resolve,
    shared::{entry_bytes, Input, StateWatch},
    snapshot_transfer::{
        parse_ack_line, write_frame, Ack, AckStatus, Chunk, Frame, Offer, MAX_ACK_LINE, MAX_CHUNK,
        MAX_SNAPSHOT, PING,
    },
};
use crate::{
    codec::{read_line, write_json_line, Line},
    error::Error,
    raft::{Body, Message, NodeId, Pos, SnapshotMeta, Term},
    storage::SnapshotStore,
};

/// Messages waiting for one peer; beyond this the state thread drops new ones.
pub(crate) const QUEUE: usize = 1024;
/// Bytes of log entries waiting for one peer ([`entry_bytes`]); beyond this the state
/// thread drops new messages with entries (messages without, such as heartbeats,
/// are bounded by [`QUEUE`] alone). Twice what the core keeps in flight to a
/// follower (8 AppendEntries of about 1 MiB), so it only bites when the connection
/// stalls: then a probe of up to 1 MiB every heartbeat would otherwise pile up.
pub(crate) const QUEUE_BYTES: usize = 16 << 20;
/// Stack size of a replicator thread.
pub(crate) const STACK: usize = 256 << 10;

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A peer that accepts bytes but never reads them (stopped, or a black hole) gets its
/// connection dropped after this long; the next message reconnects.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Acknowledgements parsed and not yet handled. A follower sends one per chunk, so a
/// window's worth is far below this; a peer that floods them is slowed by TCP.
const ACKS: usize = 64;
/// Stack size of the ack reader and snapshot reader threads.
const HELPER_STACK: usize = 128 << 10;
/// A connection that has carried nothing for this long gets a ping (well within the
/// peer's `peer_port::IDLE`).
pub(crate) const PING_EVERY: Duration = Duration::from_secs(1);
/// A peer that keeps refusing the handshake is logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How snapshots are streamed. [`Tuning::default`] on a node; tests use small numbers
/// to see many chunks and short deadlines.
#[derive(Clone, Debug)]
pub(crate) struct Tuning {
    /// Bytes per chunk (at most [`MAX_CHUNK`]). About 700 KB of JSON at the default,
    /// under the peer reader's 1 MiB line buffer; one fdatasync on the follower each.
    pub chunk: usize,
    /// Most bytes sent and not yet acknowledged as durable (at least one chunk).
    pub window: u64,
    /// A transfer that makes no progress (no answer, no chunk) for this long failed.
    pub ack_timeout: Duration,
    /// Once every byte is durable the follower verifies, decodes and hands over the
    /// snapshot before answering `done`: it gets `ack_timeout` plus one second per
    /// this many bytes.
    pub finish_bytes_per_sec: u64,
}

impl Default for Tuning {
    /// 512 KiB chunks, a 4 MiB window, 10 s without progress, 8 MiB/s to finish.
    fn default() -> Tuning {
        Tuning {
            chunk: 512 << 10,
            window: 4 << 20,
            ack_timeout: Duration::from_secs(10),
            finish_bytes_per_sec: 8 << 20,
        }
    }
}

/// The state thread's end of a peer's queue: bounded in messages ([`QUEUE`]) and in
/// bytes of entries ([`QUEUE_BYTES`]). Sending never blocks.
pub(crate) struct PeerQueue {
    tx: Sender<Message>,
    /// Bytes of entries queued and not yet taken by the replicator.
    bytes: Arc<AtomicUsize>,
}

impl PeerQueue {
    /// A queue, and the replicator's end of it (the receiver and the byte count to
    /// put in its [`Link`]).
    pub(crate) fn new() -> (PeerQueue, Receiver<Message>, Arc<AtomicUsize>) {
        let (tx, rx) = bounded(QUEUE);
        let bytes = Arc::new(AtomicUsize::new(0));
        let queue = PeerQueue {
            tx,
            bytes: Arc::clone(&bytes),
        };
        (queue, rx, bytes)
    }

    /// Queues `message` unless the queue is full, in messages or in bytes.
    pub(crate) fn try_send(&self, message: Message) -> Result<(), TrySendError<Message>> {
        let size = entry_bytes(&message);
        if size > 0 {
            // Only the state thread adds, so the look and the add cannot interleave
            // with another add; the replicator only subtracts meanwhile.
            let used = self.bytes.load(Ordering::Acquire);
            if used > 0 && used + size > QUEUE_BYTES {
                return Err(TrySendError::Full(message));
            }
            self.bytes.fetch_add(size, Ordering::AcqRel);
        }
        self.tx.try_send(message).inspect_err(|_| {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
        })
    }
}

/// When a replicator resends its peer the last heartbeat (see the module
/// documentation).
#[derive(Clone, Debug)]
pub(crate) struct Keepalive {
    /// The state thread's disk phase and leadership.
    pub watch: Arc<StateWatch>,
    /// Resend when nothing went to the peer for this long (the core's heartbeat
    /// interval) while the state thread writes and syncs.
    pub every: Duration,
    /// ... but not once one write and sync has lasted longer than this: a disk that
    /// slow is sick, not busy, and the followers had better elect a leader whose disk
    /// works.
    pub at_most: Duration,
}

impl Keepalive {
    /// For ticks of `tick_ms`: every heartbeat interval, for at most four of the
    /// longest election timeouts (2.4 s at the default 30 ms tick).
    pub(crate) fn for_tick(tick_ms: u64, watch: Arc<StateWatch>) -> Keepalive {
        let raft = crate::raft::Config::default();
        let tick = Duration::from_millis(tick_ms);
        Keepalive {
            watch,
            every: tick * raft.heartbeat_ticks,
            at_most: tick * raft.election_ticks * 8,
        }
    }
}

impl Default for Keepalive {
    fn default() -> Keepalive {
        Keepalive::for_tick(crate::replica::DEFAULT_TICK_MS, Arc::default())
    }
}

/// What a replicator needs besides its queue.
pub(crate) struct Link {
    /// The peer this replicator sends to.
    pub peer: NodeId,
    /// Who this node is to its peers, for the handshake.
    pub auth: Arc<Auth>,
    /// The peer's raft address.
    pub addr: String,
    /// The state thread's inbox, for `SnapshotSent`.
    pub inbox: Sender<Input>,
    /// This node's snapshots, to send from.
    pub store: SnapshotStore,
    /// How snapshots are streamed.
    pub tuning: Tuning,
    /// Bytes of entries in the queue (see [`PeerQueue`]); given back as messages are
    /// taken out.
    pub queued_bytes: Arc<AtomicUsize>,
    /// When to resend the last heartbeat while the state thread waits for its disk.
    pub keepalive: Keepalive,
    /// Where the messages written are reported (`send`, `heartbeats`).
    pub events: Arc<EventBus>,
}

/// Runs until the state thread drops the sending side of `queue`.
pub(crate) fn run(link: Link, queue: Receiver<Message>) {
    let peer = link.peer;
    let addr = link.addr.clone();
    let mut backoff = BACKOFF_MIN;
    let mut reported_down = false;
    let mut refusals = Throttle::new(REFUSAL_LOG_EVERY);
    loop {
        match open(&link) {
            Ok(stream) => {
                info!("connected to n{peer} at {addr}");
                reported_down = false;
                backoff = BACKOFF_MIN;
                let mut session = Session {
                    link: &link,
                    queue: &queue,
                    transfer: None,
                    last_heartbeat: None,
                    beats: Beats::default(),
                };
                let result = session.serve(stream);
                match result {
                    Ok(()) => return, // the node is shutting down
                    Err(e) => {
                        if let Some(t) = session.transfer.take() {
                            link.end(t, Err(format!("connection lost: {e}")));
                        }
                        info!("connection to n{peer} at {addr} lost: {e}");
                    }
                }
            }
            Err(Failure::Refused(why) | Failure::Garbage(why)) => {
                if let Some(more) = refusals.allow() {
                    let more = if more > 0 {
                        format!(" ({more} more refusals not shown)")
                    } else {
                        String::new()
                    };
                    warning!("handshake with n{peer} at {addr} failed: {why}; retrying{more}");
                }
            }
            Err(Failure::Broken(e)) => {
                if !reported_down {
                    info!("cannot reach n{peer} at {addr}: {e} (retrying)");
                    reported_down = true;
                } else {
                    debug!("still cannot reach n{peer} at {addr}: {e}");
                }
            }
        }
        // Wait before the next attempt, discarding what is queued meanwhile. A
        // discarded InstallSnapshot is a transfer that ended: say so once per wait,
        // so the core probes again (and does not spin while the peer is down).
        let until = Instant::now() + backoff;
        let mut discarded_snapshot = false;
        loop {
            match queue.recv_deadline(until) {
                Ok(m) => {
                    link.taken(&m);
                    discarded_snapshot |= matches!(m.body, Body::InstallSnapshot { .. });
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if discarded_snapshot {
            info!("cannot send a snapshot to n{peer}: it is unreachable");
            link.report_sent();
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The heartbeat an AppendEntries stands for: the same message without its entries.
/// (A leader's probe carries entries; its first one, the new term's no-op, is sent
/// just before the sync a keepalive bridges.)
fn as_heartbeat(m: &Message) -> Option<Message> {
    let Body::Append {
        prev_index,
        prev_term,
        commit,
        read_round,
        ..
    } = m.body
    else {
        return None;
    };
    Some(Message {
        body: Body::Append {
            prev_index,
            prev_term,
            entries: Vec::new(),
            commit,
            read_round,
        },
        ..*m
    })
}

/// Connects to the peer and runs the handshake; what the peer sends back (snapshot
/// acknowledgements) is read from the returned reader.
fn open(link: &Link) -> Result<BufReader<PeerStream>, Failure> {
    let stream = connect(&link.addr).map_err(|e| Failure::Broken(e.to_string()))?;
    let mut conn = BufReader::with_capacity(16 << 10, PeerStream::new(stream));
    peer_auth::dial(&link.auth, link.peer, &mut conn)?;
    Ok(conn)
}

fn connect(addr: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&resolve(addr)?, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    Ok(stream)
}

impl Link {
    /// `m` left the queue: its bytes no longer count there.
    fn taken(&self, m: &Message) {
        let size = entry_bytes(m);
        if size > 0 {
            // Saturating: a test may feed the queue without counting.
            let _ = self
                .queued_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                    Some(b.saturating_sub(size))
                });
        }
    }

    /// Tells the core that sending its snapshot to this peer ended.
    fn report_sent(&self) {
        // Blocking: a lost `SnapshotSent` would leave the core waiting forever. An
        // error means the state thread has stopped, and nobody waits any more.
        let _ = self.inbox.send(Input::SnapshotSent(self.peer));
    }

    /// Ends transfer `t`: logs how it went, and reports it.
    fn end(&self, t: Transfer, result: Result<(), String>) {
        let pos = Pos(t.meta.index, t.meta.term);
        let ms = t.started.elapsed().as_millis();
        match (result, t.phase) {
            (
                Ok(()),
                Phase::Streaming {
                    size, resumed_from, ..
                },
            ) => {
                let sent = size - resumed_from;
                let secs = t.started.elapsed().as_secs_f64().max(1e-6);
                info!(
                    "sent snapshot {pos} to n{}: {sent} bytes in {ms} ms ({:.1} MB/s){}",
                    self.peer,
                    sent as f64 / secs / 1e6,
                    if resumed_from > 0 {
                        format!(", resumed at byte {resumed_from} of {size}")
                    } else {
                        String::new()
                    }
                );
            }
            (Ok(()), _) => info!("sent snapshot {pos} to n{} in {ms} ms", self.peer),
            (Err(why), Phase::Streaming { size, acked, .. }) => info!(
                "sending snapshot {pos} to n{} failed after {ms} ms, with {acked} of {size} \
                 bytes stored there: {why}",
                self.peer
            ),
            (Err(why), _) => info!(
                "sending snapshot {pos} to n{} failed after {ms} ms: {why}",
                self.peer
            ),
        }
        self.report_sent();
    }
}

/// One connection's worth of work: its queue, and the transfer under way on it.
struct Session<'a> {
    link: &'a Link,
    queue: &'a Receiver<Message>,
    /// The snapshot being sent, if any; it never outlives the connection.
    transfer: Option<Transfer>,
    /// The last AppendEntries written on this connection, without its entries: what
    /// a keepalive resends.
    last_heartbeat: Option<Message>,
    /// Which of the messages written are plain heartbeats (events).
    beats: Beats,
}

/// What woke the replicator.
enum Wake {
    Message(Message),
    QueueClosed,
    Ack(Ack),
    AcksClosed,
    Disk(Disk),
    DiskClosed,
    /// The current transfer made no progress for too long.
    Timeout,
    /// Nothing happened in a while; look again.
    Idle,
}

impl Session<'_> {
    /// Sends messages and snapshots on `stream` until it fails (`Err`) or the queue
    /// is closed (`Ok`). A transfer still under way when this returns is the caller's
    /// to end.
    fn serve(&mut self, stream: BufReader<PeerStream>) -> io::Result<()> {
        let mut conn = Conn::open(stream, self.link.peer)?;
        loop {
            match self.next_wake(&mut conn)? {
                Wake::Message(m) => self.on_message(m, &mut conn)?,
                Wake::QueueClosed => return conn.out.flush(),
                Wake::Ack(ack) => self.on_ack(ack),
                Wake::AcksClosed => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the peer closed the connection",
                    ))
                }
                Wake::Disk(disk) => self.on_disk(disk, &mut conn)?,
                Wake::DiskClosed => {
                    if let Some(t) = self.transfer.take() {
                        self.link
                            .end(t, Err("the snapshot reader thread stopped".into()));
                    }
                }
                Wake::Timeout => {
                    if let Some(t) = self.transfer.take() {
                        let ms = t.last_progress.elapsed().as_millis();
                        let why = format!("no progress for {ms} ms; reconnecting");
                        self.link.end(t, Err(why));
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "a snapshot transfer stalled",
                    ));
                }
                Wake::Idle => {}
            }
            self.keep_alive(&mut conn)?;
            conn.ping_if_idle()?;
        }
    }

    /// Resends the last AppendEntries without its entries, if this node leads in its
    /// term, has sent the peer nothing for a heartbeat interval, and its state thread
    /// is in a write and sync that has lasted at least that long (and not too long).
    /// That is the heartbeat the core would have sent at that moment (same base,
    /// commit index and read round), and the follower takes it as the duplicate it
    /// is: it restarts its election timer and answers; nothing else changes.
    fn keep_alive(&mut self, conn: &mut Conn) -> io::Result<()> {
        let Some(heartbeat) = &self.last_heartbeat else {
            return Ok(());
        };
        let k = &self.link.keepalive;
        let Some(busy) = k.watch.disk_busy_for() else {
            return Ok(());
        };
        if busy < k.every
            || busy > k.at_most
            || conn.last_write.elapsed() < k.every
            || k.watch.leading() != Some(heartbeat.term)
        {
            return Ok(());
        }
        debug!(
            "keepalive to n{}: the state thread has waited {} ms for the disk",
            self.link.peer,
            busy.as_millis()
        );
        conn.last_write = Instant::now();
        write_json_line(&mut conn.out, heartbeat)?;
        let events = &self.link.events;
        if events.active() {
            events.heartbeat(self.link.peer, Way::Sent);
        }
        Ok(())
    }

    /// The next thing to do. Acknowledgements first (bookkeeping only, and they open
    /// the window), then the deadline, then queued messages, and only then the next
    /// chunk: a chunk never overtakes a queued message. Flushes before blocking.
    fn next_wake(&mut self, conn: &mut Conn) -> io::Result<Wake> {
        match conn.acks.try_recv() {
            Ok(ack) => return Ok(Wake::Ack(ack)),
            Err(TryRecvError::Disconnected) => return Ok(Wake::AcksClosed),
            Err(TryRecvError::Empty) => {}
        }
        let tuning = &self.link.tuning;
        let deadline = self.transfer.as_ref().and_then(|t| t.deadline(tuning));
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Wake::Timeout);
        }
        match self.queue.try_recv() {
            Ok(m) => return Ok(Wake::Message(m)),
            Err(TryRecvError::Disconnected) => return Ok(Wake::QueueClosed),
            Err(TryRecvError::Empty) => {}
        }
        let idle = never();
        let disk = match &self.transfer {
            Some(t) if t.wants_disk(tuning) => &t.disk,
            _ => &idle,
        };
        match disk.try_recv() {
            Ok(d) => return Ok(Wake::Disk(d)),
            Err(TryRecvError::Disconnected) => return Ok(Wake::DiskClosed),
            Err(TryRecvError::Empty) => {}
        }
        conn.out.flush()?;
        let mut wait = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        if self.last_heartbeat.is_some() {
            // A leader's replicator looks at least once per heartbeat interval
            // whether a keepalive is due.
            wait = wait.min(self.link.keepalive.every);
        }
        wait = wait.min(PING_EVERY.saturating_sub(conn.last_write.elapsed()));
        Ok(select! {
            recv(self.queue) -> m => m.map_or(Wake::QueueClosed, Wake::Message),
            recv(conn.acks) -> a => a.map_or(Wake::AcksClosed, Wake::Ack),
            recv(disk) -> d => d.map_or(Wake::DiskClosed, Wake::Disk),
            default(wait) => Wake::Idle,
        })
    }

    fn on_message(&mut self, m: Message, conn: &mut Conn) -> io::Result<()> {
        self.link.taken(&m);
        let events = &self.link.events;
        if let Body::InstallSnapshot { meta } = m.body {
            // Its data goes in frames of its own; the message stands for the transfer.
            if events.active() {
                events.message(Way::Sent, &m, &mut self.beats);
            }
            self.start_transfer(&m, meta);
            return Ok(());
        }
        // Every message but a pre-vote carries the sender's current term: one newer
        // than the transfer's means this node no longer leads the term it was for.
        let current = !matches!(m.body, Body::PreVote { .. } | Body::PreVoteResponse { .. });
        if let Some(t) = self.transfer.take_if(|t| current && m.term > t.term) {
            let why = format!("this node moved on to term {}", m.term);
            self.link.end(t, Err(why));
        }
        conn.last_write = Instant::now();
        write_json_line(&mut conn.out, &m)?;
        if events.active() {
            events.message(Way::Sent, &m, &mut self.beats);
        }
        if let Some(heartbeat) = as_heartbeat(&m) {
            self.last_heartbeat = Some(heartbeat);
        }
        Ok(())
    }

    fn start_transfer(&mut self, m: &Message, meta: SnapshotMeta) {
        let (peer, pos) = (self.link.peer, Pos(meta.index, meta.term));
        if let Some(t) = &self.transfer {
            if t.meta == meta && t.term == m.term {
                debug!("snapshot {pos} is already being sent to n{peer}; continuing");
                return;
            }
            info!(
                "sending snapshot {} (term {}) to n{peer} stopped: the core now sends {pos} (term {})",
                Pos(t.meta.index, t.meta.term),
                t.term,
                m.term
            );
        }
        self.transfer = None;
        match Transfer::begin(self.link, m, meta) {
            Ok(t) => self.transfer = Some(t),
            Err(e) => {
                warning!("cannot start a thread to read snapshot {pos} for n{peer}: {e}");
                self.link.report_sent();
            }
        }
    }

    fn on_disk(&mut self, disk: Disk, conn: &mut Conn) -> io::Result<()> {
        let Some(t) = self.transfer.as_mut() else {
            return Ok(());
        };
        match (disk, &mut t.phase) {
            (Disk::Opened(size), phase @ Phase::Opening) => {
                if size > MAX_SNAPSHOT {
                    let why = format!("the file is {size} bytes, more than a follower accepts");
                    let t = self.transfer.take().expect("matched above");
                    self.link.end(t, Err(why));
                    return Ok(());
                }
                *phase = Phase::Offered { size };
                t.last_progress = Instant::now();
                let offer = Offer {
                    from: t.from,
                    to: self.link.peer,
                    meta: t.meta,
                    term: t.term,
                    size,
                };
                conn.last_write = Instant::now();
                write_frame(&mut conn.out, &Frame::Offer(offer))
            }
            (Disk::Chunk { offset, data }, Phase::Streaming { next, .. }) if offset == *next => {
                *next += data.len() as u64;
                t.last_progress = Instant::now();
                let chunk = Chunk {
                    meta: t.meta,
                    term: t.term,
                    offset,
                    data,
                };
                conn.last_write = Instant::now();
                write_frame(&mut conn.out, &Frame::Chunk(chunk))
            }
            (Disk::Failed(e), _) => {
                let t = self.transfer.take().expect("matched above");
                let missing = matches!(&e, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound);
                if missing {
                    self.link
                        .end(t, Err(format!("it is gone (a newer one replaced it): {e}")));
                } else {
                    let pos = Pos(t.meta.index, t.meta.term);
                    warning!("cannot read snapshot {pos} to send it: {e}");
                    self.link.end(t, Err(format!("cannot read it: {e}")));
                }
                Ok(())
            }
            (disk, _) => {
                // The reader thread follows the protocol; this would be a bug here.
                let t = self.transfer.take().expect("matched above");
                self.link.end(
                    t,
                    Err(format!("unexpected {disk:?} from the snapshot reader")),
                );
                Ok(())
            }
        }
    }

    fn on_ack(&mut self, ack: Ack) {
        let peer = self.link.peer;
        let Some(t) = self
            .transfer
            .as_mut()
            .filter(|t| (t.meta, t.term) == (ack.meta, ack.term))
        else {
            debug!("ignoring a late answer from n{peer}: {ack:?}");
            return;
        };
        t.last_progress = Instant::now();
        let result = match (ack.status, &mut t.phase) {
            (AckStatus::Stored(stored), Phase::Offered { size }) => {
                let size = *size;
                if stored > size {
                    Err(format!(
                        "n{peer} claims {stored} bytes of a {size}-byte snapshot"
                    ))
                } else if t.start.send(stored).is_err() {
                    Err("the snapshot reader thread stopped".into())
                } else {
                    info!(
                        "sending snapshot {} to n{peer} (term {}): {size} bytes, {}",
                        Pos(t.meta.index, t.meta.term),
                        t.term,
                        if stored > 0 {
                            format!("resuming at byte {stored} (stored there already)")
                        } else {
                            "from the start".to_string()
                        }
                    );
                    t.phase = Phase::Streaming {
                        size,
                        resumed_from: stored,
                        next: stored,
                        acked: stored,
                    };
                    return;
                }
            }
            (AckStatus::Stored(stored), Phase::Streaming { next, acked, .. }) => {
                if stored > *next {
                    Err(format!(
                        "n{peer} claims {stored} bytes stored, but only {next} were sent"
                    ))
                } else {
                    *acked = (*acked).max(stored);
                    return;
                }
            }
            (AckStatus::Stored(_), Phase::Opening) => {
                debug!("ignoring a late answer from n{peer}: no offer is out yet");
                return;
            }
            (AckStatus::Done, _) => Ok(()),
            (AckStatus::Failed(why), _) => Err(format!("n{peer} gave up: {why}")),
        };
        let t = self.transfer.take().expect("matched above");
        self.link.end(t, result);
    }
}

/// The outgoing connection: a buffered writer, and the acknowledgements its reader
/// thread parses. Dropping it shuts the socket down, which ends that thread.
struct Conn {
    out: BufWriter<TcpStream>,
    acks: Receiver<Ack>,
    /// When a message or frame was last written (for keepalives).
    last_write: Instant,
}

impl Conn {
    /// Starts the ack reader on `reading`, the connection after its handshake.
    fn open(reading: BufReader<PeerStream>, peer: NodeId) -> io::Result<Conn> {
        let stream = reading.get_ref().socket().try_clone()?;
        let (tx, acks) = bounded(ACKS);
        thread::Builder::new()
            .name(format!("acks-n{peer}"))
            .stack_size(HELPER_STACK)
            .spawn(move || read_acks(reading, peer, &tx))?;
        Ok(Conn {
            out: BufWriter::with_capacity(256 << 10, stream),
            acks,
            last_write: Instant::now(),
        })
    }

    /// Writes a ping if nothing was written for [`PING_EVERY`].
    fn ping_if_idle(&mut self) -> io::Result<()> {
        if self.last_write.elapsed() < PING_EVERY {
            return Ok(());
        }
        self.last_write = Instant::now();
        self.out.write_all(PING)?;
        self.out.write_all(b"\n")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.out.get_ref().shutdown(Shutdown::Both);
    }
}

/// The ack reader thread: parses acknowledgement lines into `acks` until the
/// connection ends or the peer sends anything else (then it shuts the socket down, so
/// the replicator's writes fail too). Returning drops `acks`' sender, which tells the
/// replicator the connection is over.
fn read_acks(mut reader: BufReader<PeerStream>, peer: NodeId, acks: &Sender<Ack>) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        match read_line(&mut reader, &mut buf, MAX_ACK_LINE) {
            Ok(Line::Complete) => {}
            Ok(Line::TooLong) => {
                warning!(
                    "n{peer} sent a line over {MAX_ACK_LINE} bytes back; closing the connection"
                );
                break;
            }
            Ok(Line::Eof) | Ok(Line::Truncated) | Err(_) => break,
        }
        match parse_ack_line(&buf) {
            Ok(ack) => {
                if acks.send(ack).is_err() {
                    break; // the replicator moved on
                }
            }
            Err(e) => {
                warning!("n{peer} sent back something unexpected ({e}); closing the connection");
                break;
            }
        }
    }
    let _ = reader.get_ref().socket().shutdown(Shutdown::Both);
}

/// One snapshot being sent to the peer.
struct Transfer {
    meta: SnapshotMeta,
    /// The leader's term, from the InstallSnapshot message.
    term: Term,
    /// This node, the sender.
    from: NodeId,
    phase: Phase,
    /// What the snapshot reader thread produced.
    disk: Receiver<Disk>,
    /// Tells the snapshot reader where to start, once the follower said.
    start: Sender<u64>,
    started: Instant,
    /// The last answer from the follower, or the last chunk sent.
    last_progress: Instant,
}

/// Where a transfer stands.
#[derive(Debug)]
enum Phase {
    /// The snapshot reader is opening and checking the file.
    Opening,
    /// The offer is out; the follower's first answer says where to start.
    Offered { size: u64 },
    /// Chunks are flowing.
    Streaming {
        size: u64,
        /// Where this transfer started: what the follower held already.
        resumed_from: u64,
        /// Offset of the next chunk to send.
        next: u64,
        /// Bytes the follower holds durably.
        acked: u64,
    },
}

/// What the snapshot reader thread sends the replicator.
#[derive(Debug)]
enum Disk {
    /// The file is open and verified; its size.
    Opened(u64),
    /// The next chunk.
    Chunk { offset: u64, data: Vec<u8> },
    /// Opening or reading failed.
    Failed(Error),
}

impl Transfer {
    /// Starts the snapshot reader thread for `meta`.
    fn begin(link: &Link, m: &Message, meta: SnapshotMeta) -> io::Result<Transfer> {
        let (disk_tx, disk) = bounded(1);
        let (start, start_rx) = bounded(1);
        let store = link.store.clone();
        let chunk = link.tuning.chunk.clamp(1, MAX_CHUNK);
        thread::Builder::new()
            .name(format!("snapshot-reader-n{}", link.peer))
            .stack_size(HELPER_STACK)
            .spawn(move || read_snapshot(&store, meta, chunk, &disk_tx, &start_rx))?;
        let now = Instant::now();
        Ok(Transfer {
            meta,
            term: m.term,
            from: m.from,
            phase: Phase::Opening,
            disk,
            start,
            started: now,
            last_progress: now,
        })
    }

    /// Whether the replicator should take what the snapshot reader has: the open
    /// file's size, or a chunk that fits in the window.
    fn wants_disk(&self, tuning: &Tuning) -> bool {
        match self.phase {
            Phase::Opening => true,
            Phase::Offered { .. } => false,
            Phase::Streaming {
                size, next, acked, ..
            } => {
                let window = tuning.window.max(tuning.chunk as u64);
                next < size && next.saturating_sub(acked) + tuning.chunk as u64 <= window
            }
        }
    }

    /// How long the transfer may go without progress; unbounded while the file is
    /// being opened (a local disk read, not the follower's doing), longer once every
    /// byte is durable there (the follower then checks, decodes and installs it).
    fn patience(&self, tuning: &Tuning) -> Option<Duration> {
        match self.phase {
            Phase::Opening => None,
            Phase::Streaming { size, acked, .. } if acked >= size => {
                let rate = tuning.finish_bytes_per_sec.max(1);
                Some(tuning.ack_timeout + Duration::from_secs(size / rate))
            }
            _ => Some(tuning.ack_timeout),
        }
    }

    /// When the transfer counts as stalled.
    fn deadline(&self, tuning: &Tuning) -> Option<Instant> {
        self.patience(tuning).map(|p| self.last_progress + p)
    }
}

/// The snapshot reader thread: opens and verifies snapshot `meta`, reports its size,
/// waits to learn where to start, then reads it chunk by chunk into `out` (one ahead
/// of the replicator). It ends at the end of the file, on an error (reported), or
/// when the replicator drops the transfer.
fn read_snapshot(
    store: &SnapshotStore,
    meta: SnapshotMeta,
    chunk: usize,
    out: &Sender<Disk>,
    start: &Receiver<u64>,
) {
    let mut source = match store.open_source(meta) {
        Ok(source) => source,
        Err(e) => {
            let _ = out.send(Disk::Failed(e));
            return;
        }
    };
    let size = source.size();
    if out.send(Disk::Opened(size)).is_err() {
        return;
    }
    let Ok(mut offset) = start.recv() else {
        return;
    };
    while offset < size {
        match source.read_chunk(offset, chunk) {
            Ok(data) => {
                let n = data.len() as u64;
                if n == 0 || out.send(Disk::Chunk { offset, data }).is_err() {
                    return;
                }
                offset += n;
            }
            Err(e) => {
                let _ = out.send(Disk::Failed(e));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kv::{Command, WriteOp},
        raft::{Entry, Payload},
        storage::Storage,
    };
    use std::{
        io::{BufRead, BufReader},
        net::TcpListener,
        sync::Mutex,
    };

    fn append(term: Term, commit: u64, entries: Vec<Entry>) -> Message {
        Message {
            from: 1,
            to: 2,
            term,
            body: Body::Append {
                prev_index: 5,
                prev_term: 1,
                entries,
                commit,
                read_round: 7,
            },
        }
    }

    fn entry(index: u64, value_bytes: usize) -> Entry {
        Entry {
            index,
            term: 1,
            payload: Payload::Command(Command::write(
                "k",
                WriteOp::Put {
                    value: "v".repeat(value_bytes),
                },
                None,
            )),
        }
    }

    /// A replicator for peer 2 whose peer is a listener that records every line it
    /// receives, with when.
    struct Harness {
        queue: PeerQueue,
        watch: Arc<StateWatch>,
        lines: Arc<Mutex<Vec<(Instant, String)>>>,
        _dir: tempfile::TempDir,
    }

    fn harness(every: Duration, at_most: Duration) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::open(dir.path()).unwrap().0.snapshot_store();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (queue, rx, queued_bytes) = PeerQueue::new();
        let watch = Arc::new(StateWatch::default());
        let (inbox, _reports) = bounded(16);
        let link = Link {
            peer: 2,
            auth: Arc::new(Auth::test(1)),
            addr: listener.local_addr().unwrap().to_string(),
            inbox,
            store,
            tuning: Tuning::default(),
            queued_bytes,
            keepalive: Keepalive {
                watch: Arc::clone(&watch),
                every,
                at_most,
            },
            events: Arc::new(EventBus::new(1, Vec::new())),
        };
        thread::spawn(move || run(link, rx));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&lines);
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut conn = BufReader::new(PeerStream::new(stream));
            assert_eq!(peer_auth::accept(&Auth::test(2), &mut conn), Ok(1));
            for line in conn.lines() {
                let Ok(line) = line else { return };
                if line.as_bytes() != PING {
                    recorded.lock().unwrap().push((Instant::now(), line));
                }
            }
        });
        Harness {
            queue,
            watch,
            lines,
            _dir: dir,
        }
    }

    impl Harness {
        fn count(&self) -> usize {
            self.lines.lock().unwrap().len()
        }

        fn wait_for(&self, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.count() < n {
                assert!(
                    Instant::now() < deadline,
                    "only {} lines arrived",
                    self.count()
                );
                thread::sleep(Duration::from_millis(5));
            }
        }
    }

    #[test]
    fn a_leader_waiting_for_its_disk_resends_its_last_heartbeat_for_a_while() {
        let (every, at_most) = (Duration::from_millis(20), Duration::from_millis(300));
        let h = harness(every, at_most);
        h.watch.set_leading(Some(3));
        h.queue.try_send(append(3, 4, vec![entry(6, 100)])).unwrap();
        h.wait_for(1);
        let heartbeat = serde_json::to_string(&append(3, 4, Vec::new())).unwrap();

        // The state thread is not writing: nothing more is sent.
        thread::sleep(Duration::from_millis(120));
        assert_eq!(h.count(), 1, "no keepalive while the disk is idle");

        // It writes and syncs: the same heartbeat goes again every interval, and no
        // longer once the sync has taken longer than `at_most`.
        let busy = Instant::now();
        h.watch.disk_busy();
        thread::sleep(at_most + Duration::from_millis(300));
        let lines = h.lines.lock().unwrap().clone();
        assert!(
            lines.len() >= 5,
            "keepalives while syncing: {}",
            lines.len()
        );
        assert!(
            lines[1..].iter().all(|(_, l)| *l == heartbeat),
            "only the append's heartbeat: {}",
            lines[1].1
        );
        assert!(busy.elapsed() > at_most);
        thread::sleep(Duration::from_millis(300));
        assert_eq!(
            h.count(),
            lines.len(),
            "keepalives stopped once the sync took too long"
        );

        // A new write that ends soon: they stop when it ends.
        h.watch.disk_done();
        h.watch.disk_busy();
        h.wait_for(lines.len() + 1);
        h.watch.disk_done();
        thread::sleep(Duration::from_millis(150));
        let after = h.count();
        thread::sleep(Duration::from_millis(150));
        assert_eq!(h.count(), after, "no keepalive once the sync is done");

        // A node that no longer leads in that term resends nothing.
        h.watch.set_leading(Some(4));
        h.watch.disk_busy();
        thread::sleep(Duration::from_millis(120));
        h.watch.set_leading(None);
        thread::sleep(Duration::from_millis(120));
        assert_eq!(
            h.count(),
            after,
            "no keepalive for another term's heartbeat"
        );
    }

    #[test]
    fn a_queue_drops_messages_with_entries_past_its_byte_bound_but_not_heartbeats() {
        let (queue, rx, queued_bytes) = PeerQueue::new();
        let big = |i| append(3, 0, vec![entry(i, 3 << 20)]);
        let mut sent = 0;
        while queue.try_send(big(sent + 1)).is_ok() {
            sent += 1;
        }
        assert!(
            (4..=6).contains(&sent),
            "about {QUEUE_BYTES} bytes of 3 MiB entries: {sent}"
        );
        assert!(queued_bytes.load(Ordering::Relaxed) <= QUEUE_BYTES);
        queue
            .try_send(append(3, 0, Vec::new()))
            .expect("a heartbeat is bounded by count only");
        // The replicator gives the bytes back as it takes messages out.
        let link_bytes = Link {
            peer: 2,
            auth: Arc::new(Auth::test(1)),
            addr: String::new(),
            inbox: bounded(1).0,
            store: {
                let dir = tempfile::tempdir().unwrap();
                Storage::open(dir.path()).unwrap().0.snapshot_store()
            },
            tuning: Tuning::default(),
            queued_bytes: Arc::clone(&queued_bytes),
            keepalive: Keepalive::default(),
            events: Arc::new(EventBus::new(1, Vec::new())),
        };
        for m in rx.try_iter() {
            link_bytes.taken(&m);
        }
        assert_eq!(queued_bytes.load(Ordering::Relaxed), 0);
        assert!(queue.try_send(big(99)).is_ok(), "room again");
    }
}
