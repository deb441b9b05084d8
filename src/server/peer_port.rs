//! The raft listener, one reader thread per accepted peer connection, and the
//! receiving side of snapshot transfers.
//!
//! **Who may speak.** A connection starts with the peer handshake (`peer_auth`): the
//! dialer proves it is member `A` of this cluster (with a cluster secret, by proving
//! the secret), and from then on every message's and snapshot offer's `from` must be
//! `A` and `to` this node; anything else is a protocol violation that closes the
//! connection. How many connections may wait in the handshake, and that a member holds
//! only its newest connection, is `peer_gate`'s business. An authenticated connection
//! that stays silent for [`IDLE`] is closed: the dialer pings every second it has
//! nothing else to send, so only a dead connection (or peer) is that quiet.
//!
//! **Raft messages.** A node reads messages here and answers on its own outgoing
//! connection (see `replicator`). After the handshake each line is one
//! `raft::Message` in JSON, a snapshot frame (`snapshot_transfer`) or a ping. Anything
//! else (bad JSON, a line over [`MAX_PEER_LINE`]) is logged once and the connection
//! closed; the node itself never stops for bad input. Before a message goes to the
//! inbox the reader takes its bytes from the peer budget (`Shared::peer_budget`,
//! 32 MiB), waiting while it is spent; the state thread gives them back as it takes
//! the message into a batch.
//!
//! **Snapshots.** The leader's replicator streams a snapshot file on the same
//! connection: an offer, then chunks. The reader does not touch the disk; it hands
//! the frames to a *snapshot receiver* thread, started for the connection at its
//! first frame, and goes back to forwarding messages. So a heartbeat that arrives
//! while a chunk is being fsynced, or while a finished snapshot is checked and
//! decoded (seconds, for a big one), still reaches the state thread at once. The
//! frames wait in a small bounded channel: the leader's flow-control window keeps far
//! fewer in flight, and a leader that ignores it is slowed by TCP instead of growing
//! memory.
//!
//! The receiver writes the only bytes a follower ever sends on this connection:
//! acknowledgements, one line each.
//!
//! - On an offer it opens the partial file with `SnapshotStore::receive`, which keeps
//!   what an earlier attempt of the same transfer (same snapshot, same leader term)
//!   stored durably, and answers with that offset: the leader resumes there.
//! - On a chunk it writes and fdatasyncs the bytes (`IncomingSnapshot::write_chunk`),
//!   then answers with the new durable offset. Only durable bytes are ever
//!   acknowledged, so what the leader skips on a resume is really on disk.
//! - On the last byte it first acknowledges it (the leader then waits longer, since
//!   what follows takes time), then `finish`es the file (checksum, fsync, rename),
//!   decodes the snapshot on this thread (never on the state thread) and puts
//!   `Input::PeerSnapshot` in the inbox, carrying the InstallSnapshot message the core
//!   sees only now that the data is complete and durable. Then it answers `done`.
//!   The leader reports the transfer ended only after that answer, so its next probe
//!   reaches this node's inbox after the snapshot.
//! - Any failure (I/O, a bad checksum, a snapshot that does not decode, a chunk that
//!   does not fit the offer) is logged as a warning and answered `failed`; the leader
//!   tells its core, which retries with a new offer. Every number from the wire is
//!   bounded before use (`snapshot_transfer` checks sizes and offsets, the receiver
//!   checks chunks against the offer), so nothing a peer sends can reach a panic.

use std::{
    io::{self, BufReader, BufWriter, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::{
    budget::Budget,
    events::{Beats, EventBus, Way},
    logging::{debug, info, warning, Throttle},
    peer_auth::{self, Auth, PeerStream},
    peer_gate::{Admitted, Gate, MAX_HANDSHAKING},
    shared::{message_bytes, Input, Shared},
    snapshot_transfer::{
        parse_peer_line, write_ack, Ack, AckStatus, Chunk, Frame, Offer, PeerLine,
    },
};
use crate::{
    codec::{read_line, Line},
    raft::{Body, Message, NodeId, Pos},
    replica::Snapshot,
    storage::{IncomingSnapshot, SnapshotStore},
};

/// Longest line accepted from a peer: far above any AppendEntries the core builds
/// (about 1 MiB of entries, up to 6x for JSON escaping), yet bounded.
pub(crate) const MAX_PEER_LINE: usize = 64 << 20;

/// Most inbound peer connections at once: a last line of defence. `peer_gate` keeps
/// at most 16 in the handshake and one per member; this covers the threads of evicted
/// and replaced connections while they wind down.
const MAX_PEER_CONNECTIONS: usize = 256;
/// An authenticated connection silent this long is closed (the dialer pings every
/// second it has nothing else to send).
pub(crate) const IDLE: Duration = Duration::from_secs(10);

/// Stack size of a peer reader thread: it only parses JSON.
const STACK: usize = 256 << 10;
/// Stack size of a snapshot receiver thread: it also decodes snapshots.
const RECEIVER_STACK: usize = 1 << 20;
/// Snapshot frames waiting for the receiver thread of one connection.
const FRAMES: usize = 16;
/// A leader that does not read its acknowledgements for this long loses the
/// connection.
const ACK_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the peer readers of a node share.
pub(crate) struct Inbound {
    /// Who this node is and who may dial it (`auth.me` is this node's id).
    pub auth: Arc<Auth>,
    /// The state thread's inbox.
    pub inbox: Sender<Input>,
    /// Bytes of peer messages in the inbox (`Shared::peer_budget`).
    pub budget: Arc<Budget>,
    /// Where incoming snapshots are stored.
    pub store: SnapshotStore,
    /// The connections in the handshake and the members' (see `peer_gate`).
    pub gate: Gate,
    /// Where the messages read are reported (`recv`, `heartbeats`).
    pub events: Arc<EventBus>,
}

/// Accepts peer connections forever; incoming snapshots go to `store`.
pub(crate) fn listen(
    listener: TcpListener,
    shared: Arc<Shared>,
    auth: Arc<Auth>,
    store: SnapshotStore,
) {
    let inbound = Arc::new(Inbound {
        auth,
        inbox: shared.inbox.clone(),
        budget: Arc::clone(&shared.peer_budget),
        store,
        gate: Gate::default(),
        events: Arc::clone(&shared.events),
    });
    drop(shared);
    let mut throttle = Throttle::new(Duration::from_secs(1));
    let open = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                if let Some(more) = throttle.allow() {
                    warning!("accepting a peer connection failed: {e} ({more} more such failures not shown)");
                }
                thread::sleep(Duration::from_millis(20)); // e.g. out of descriptors
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let slot = PeerSlot::take(&open);
        if open.load(Ordering::Acquire) > MAX_PEER_CONNECTIONS {
            if let Some(more) = throttle.allow() {
                warning!("refusing a peer connection from {peer}: {MAX_PEER_CONNECTIONS} are open already ({more} more not shown)");
            }
            continue; // `slot` and `stream` drop
        }
        let inbound = Arc::clone(&inbound);
        let spawned = thread::Builder::new()
            .name("peer-reader".into())
            .stack_size(STACK)
            .spawn(move || {
                let _slot = slot;
                read_peer(stream, &peer, &inbound)
            });
        if let Err(e) = spawned {
            warning!("cannot start a thread for a peer connection: {e}");
        }
    }
}

/// Counts one open peer connection while it lives.
struct PeerSlot(Arc<AtomicUsize>);

impl PeerSlot {
    fn take(open: &Arc<AtomicUsize>) -> PeerSlot {
        open.fetch_add(1, Ordering::AcqRel);
        PeerSlot(Arc::clone(open))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs the handshake on one connection, then forwards every message on it to the
/// inbox, and every snapshot frame to the connection's receiver thread, until it
/// ends, misbehaves or is replaced. Then shuts the socket down, which also stops the
/// receiver's acknowledgements.
pub(super) fn read_peer(stream: TcpStream, addr: &str, inbound: &Arc<Inbound>) {
    let _ = stream.set_nodelay(true);
    debug!("peer connection from {addr}");
    let Some((mut reader, from, _admitted)) = authenticate(stream, addr, inbound) else {
        return;
    };
    let me = inbound.auth.me;
    let mut buf = Vec::with_capacity(4096);
    // The receiver thread's queue, once a snapshot frame came.
    let mut frames: Option<Sender<Frame>> = None;
    let mut beats = Beats::default();
    loop {
        if buf.capacity() > 1 << 20 {
            buf = Vec::with_capacity(4096); // do not keep a huge buffer per connection
        }
        match read_line(&mut reader, &mut buf, MAX_PEER_LINE) {
            Ok(Line::Complete) => {}
            Ok(Line::Eof) | Ok(Line::Truncated) => break,
            Ok(Line::TooLong) => {
                let what = format!("sent a line over {MAX_PEER_LINE} bytes");
                inbound.gate.violation(from, addr, &what);
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                info!(
                    "n{from} (from {addr}) sent nothing for {} s; closing its connection",
                    IDLE.as_secs()
                );
                break;
            }
            Err(e) => {
                debug!("n{from}'s connection from {addr} failed: {e}");
                break;
            }
        }
        let frame = match parse_peer_line(&buf) {
            Ok(PeerLine::Ping) => continue,
            Ok(PeerLine::Raft(message)) => {
                if (message.from, message.to) != (from, me) {
                    let what = format!("sent a message from n{} to n{}", message.from, message.to);
                    inbound.gate.violation(from, addr, &what);
                    break;
                }
                if inbound.events.active() {
                    inbound.events.message(Way::Received, &message, &mut beats);
                }
                // Waits while the inbox holds too many bytes of peer messages: the
                // sender's replicator is then slowed by TCP. The state thread gives
                // the bytes back as it takes the message.
                inbound.budget.acquire(message_bytes(&message));
                if inbound.inbox.send(Input::Peer(message)).is_err() {
                    break; // the state thread has stopped
                }
                continue;
            }
            Ok(PeerLine::Snapshot(frame)) => frame,
            Err(e) => {
                inbound
                    .gate
                    .violation(from, addr, &format!("sent something unexpected ({e})"));
                break;
            }
        };
        if let Frame::Offer(offer) = &frame {
            if (offer.from, offer.to) != (from, me) {
                let what = format!("offered a snapshot from n{} to n{}", offer.from, offer.to);
                inbound.gate.violation(from, addr, &what);
                break;
            }
        }
        if frames.is_none() {
            match spawn_receiver(reader.get_ref().socket(), addr, inbound) {
                Ok(tx) => frames = Some(tx),
                Err(e) => {
                    warning!(
                        "cannot start a snapshot receiver for {addr}: {e}; closing its connection"
                    );
                    break;
                }
            }
        }
        if frames.as_ref().is_some_and(|tx| tx.send(frame).is_err()) {
            debug!("the snapshot receiver for {addr} stopped; closing its connection");
            break;
        }
    }
    let _ = reader.get_ref().socket().shutdown(Shutdown::Both);
    info!("n{from} (from {addr}) disconnected");
}

/// Runs the handshake under the gate's rules. Returns the connection, the member it
/// authenticated and that member's place at the gate; or `None` once the failure is
/// logged and the connection closed.
fn authenticate<'a>(
    stream: TcpStream,
    addr: &str,
    inbound: &'a Inbound,
) -> Option<(BufReader<PeerStream>, NodeId, Admitted<'a>)> {
    let handle = match stream.try_clone() {
        Ok(handle) => handle,
        Err(e) => {
            warning!("cannot take a peer connection from {addr}: {e}");
            return None;
        }
    };
    let handshaking = inbound.gate.enter(handle);
    let mut reader = BufReader::with_capacity(256 << 10, PeerStream::new(stream));
    let from = match peer_auth::accept(&inbound.auth, &mut reader) {
        Ok(from) => from,
        Err(failure) => {
            let why = if handshaking.evicted() {
                format!("pushed out of the handshake by {MAX_HANDSHAKING} newer connections")
            } else {
                failure.to_string()
            };
            inbound.gate.refused(addr, &why);
            let _ = reader.get_ref().socket().shutdown(Shutdown::Both);
            return None;
        }
    };
    let admitted = handshaking.admit(from, addr);
    if let Err(e) = reader.get_ref().socket().set_read_timeout(Some(IDLE)) {
        warning!("cannot set a read timeout on n{from}'s connection from {addr}: {e}");
        let _ = reader.get_ref().socket().shutdown(Shutdown::Both);
        return None;
    }
    Some((reader, from, admitted))
}

/// Starts the snapshot receiver thread of a connection; returns its queue.
fn spawn_receiver(
    stream: &TcpStream,
    addr: &str,
    inbound: &Arc<Inbound>,
) -> io::Result<Sender<Frame>> {
    let writer = stream.try_clone()?;
    writer.set_write_timeout(Some(ACK_WRITE_TIMEOUT))?;
    let (tx, rx) = bounded(FRAMES);
    let mut receiver = SnapshotReceiver {
        inbound: Arc::clone(inbound),
        addr: addr.to_string(),
        acks: BufWriter::with_capacity(4096, writer),
        current: None,
    };
    thread::Builder::new()
        .name("snapshot-receiver".into())
        .stack_size(RECEIVER_STACK)
        .spawn(move || receiver.run(&rx))?;
    Ok(tx)
}

/// The receiving side of the snapshot transfers on one connection.
struct SnapshotReceiver {
    inbound: Arc<Inbound>,
    /// The leader's address, for log lines.
    addr: String,
    /// The connection's write half: acknowledgements only.
    acks: BufWriter<TcpStream>,
    /// The transfer under way, if any.
    current: Option<Receiving>,
}

/// One snapshot being received.
struct Receiving {
    offer: Offer,
    incoming: IncomingSnapshot,
    /// Bytes held already when the offer came.
    resumed_from: u64,
    started: Instant,
}

impl SnapshotReceiver {
    /// Handles frames until the reader stops (its sender drops) or an acknowledgement
    /// cannot be written (the connection is gone). A transfer cut short keeps its
    /// durable bytes in the partial file, for the next offer to resume from.
    fn run(&mut self, frames: &Receiver<Frame>) {
        for frame in frames {
            let result = match frame {
                Frame::Offer(offer) => self.on_offer(offer),
                Frame::Chunk(chunk) => self.on_chunk(chunk),
            };
            if let Err(e) = result {
                debug!("cannot answer {} about its snapshot: {e}", self.addr);
                let _ = self.acks.get_ref().shutdown(Shutdown::Both);
                return;
            }
        }
    }

    fn on_offer(&mut self, offer: Offer) -> io::Result<()> {
        self.current = None; // an offer replaces whatever this connection was sending
        let pos = Pos(offer.meta.index, offer.meta.term);
        match self.inbound.store.receive(offer.meta, offer.term) {
            Ok(incoming) => {
                let stored = incoming.offset();
                info!(
                    "receiving snapshot {pos} from n{} (term {}): {} bytes, {}",
                    offer.from,
                    offer.term,
                    offer.size,
                    if stored > 0 {
                        format!("resuming at byte {stored} (stored already)")
                    } else {
                        "from the start".to_string()
                    }
                );
                self.current = Some(Receiving {
                    offer,
                    incoming,
                    resumed_from: stored,
                    started: Instant::now(),
                });
                self.progress()
            }
            Err(e) => {
                warning!("cannot receive snapshot {pos} from n{}: {e}", offer.from);
                self.ack(&Ack::failed(offer.meta, offer.term, &e.to_string()))
            }
        }
    }

    fn on_chunk(&mut self, chunk: Chunk) -> io::Result<()> {
        let pos = Pos(chunk.meta.index, chunk.meta.term);
        let Some(r) = self
            .current
            .as_mut()
            .filter(|r| (r.offer.meta, r.offer.term) == (chunk.meta, chunk.term))
        else {
            // The rest of a transfer this node gave up on, or of an older offer.
            debug!(
                "ignoring a chunk of snapshot {pos} (term {}) from {}: no such transfer is open",
                chunk.term, self.addr
            );
            return Ok(());
        };
        // `parse_peer_line` bounded offset + length, so this cannot overflow.
        let end = chunk.offset + chunk.data.len() as u64;
        let result = if end > r.offer.size {
            Err(format!(
                "a chunk ends at byte {end}, past the {} bytes offered",
                r.offer.size
            ))
        } else {
            r.incoming
                .write_chunk(chunk.offset, &chunk.data)
                .map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => self.progress(),
            Err(why) => self.fail(&why),
        }
    }

    /// Answers with the durable offset, and finishes the transfer once every byte is
    /// there.
    fn progress(&mut self) -> io::Result<()> {
        let Some(r) = &self.current else {
            return Ok(());
        };
        let (stored, size) = (r.incoming.offset(), r.offer.size);
        let (meta, term) = (r.offer.meta, r.offer.term);
        if stored <= size {
            self.ack(&Ack {
                meta,
                term,
                status: AckStatus::Stored(stored),
            })?;
        }
        if stored < size {
            return Ok(());
        }
        // Every byte is durable (or a damaged partial file holds more than the
        // offer: the checksum in `finish` refuses it).
        self.finish()
    }

    /// Checks, installs and decodes the complete snapshot, hands it to the core, and
    /// answers `done` (or `failed`).
    fn finish(&mut self) -> io::Result<()> {
        let Some(r) = self.current.take() else {
            return Ok(());
        };
        let Offer {
            from,
            to,
            meta,
            term,
            size,
        } = r.offer;
        let pos = Pos(meta.index, meta.term);
        let snapshot = r
            .incoming
            .finish()
            .map_err(|e| e.to_string())
            .and_then(|stored| {
                Snapshot::decode(&stored.body)
                    .map_err(|e| format!("it is stored but does not decode: {e}"))
            })
            .and_then(|snapshot| {
                if snapshot.meta == meta {
                    Ok(snapshot)
                } else {
                    Err(format!(
                        "it decodes to the snapshot {}",
                        Pos(snapshot.meta.index, snapshot.meta.term)
                    ))
                }
            });
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(why) => {
                warning!("snapshot {pos} from n{from} (term {term}) is refused: {why}");
                return self.ack(&Ack::failed(meta, term, &why));
            }
        };
        let message = Message {
            from,
            to,
            term,
            body: Body::InstallSnapshot { meta },
        };
        if self
            .inbound
            .inbox
            .send(Input::PeerSnapshot { message, snapshot })
            .is_err()
        {
            return Err(io::Error::other("the state thread has stopped"));
        }
        let received = size - r.resumed_from;
        let secs = r.started.elapsed().as_secs_f64().max(1e-6);
        info!(
            "received snapshot {pos} from n{from}: {received} bytes in {} ms ({:.1} MB/s){}; handed to the core",
            r.started.elapsed().as_millis(),
            received as f64 / secs / 1e6,
            if r.resumed_from > 0 {
                format!(", resumed at byte {} of {size}", r.resumed_from)
            } else {
                String::new()
            }
        );
        self.ack(&Ack {
            meta,
            term,
            status: AckStatus::Done,
        })
    }

    /// Gives up on the current transfer (its partial file stays for a resume unless
    /// the checksum condemned it) and tells the leader why.
    fn fail(&mut self, why: &str) -> io::Result<()> {
        let Some(r) = self.current.take() else {
            return Ok(());
        };
        let pos = Pos(r.offer.meta.index, r.offer.meta.term);
        warning!(
            "receiving snapshot {pos} from n{} failed at byte {}: {why}",
            r.offer.from,
            r.incoming.offset()
        );
        self.ack(&Ack::failed(r.offer.meta, r.offer.term, why))
    }

    fn ack(&mut self, ack: &Ack) -> io::Result<()> {
        write_ack(&mut self.acks, ack)?;
        self.acks.flush()
    }
}

/// Resolves a configured address (`host:port`) to a socket address.
pub(crate) fn resolve(addr: &str) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{addr} resolves to nothing"),
        )
    })
}
