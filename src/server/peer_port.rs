//! The raft listener and one reader thread per accepted peer connection.
//!
//! Peer connections are one-way: a node reads messages here and answers on its own
//! outgoing connection (see `replicator`). Each line is one `raft::Message` in JSON.
//! Anything else (bad JSON, a line over [`MAX_PEER_LINE`]) is logged once and the
//! connection closed; the node itself never stops for bad input.

use std::{
    io::BufReader,
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use super::{
    logging::{debug, info, warning, Throttle},
    shared::{Input, Shared},
};
use crate::{
    codec::{read_line, Line},
    raft::Message,
};

/// Longest line accepted from a peer: far above any AppendEntries the core builds
/// (about 1 MiB of entries, up to 6x for JSON escaping), yet bounded.
pub(crate) const MAX_PEER_LINE: usize = 64 << 20;

/// Most inbound peer connections at once (a cluster needs one per peer; the rest is
/// protection against a connection flood on the raft port).
const MAX_PEER_CONNECTIONS: usize = 256;

/// Stack size of a peer reader thread: it only parses JSON.
const STACK: usize = 256 << 10;

/// Accepts peer connections forever.
pub(crate) fn listen(listener: TcpListener, shared: Arc<Shared>) {
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
        let shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("peer-reader".into())
            .stack_size(STACK)
            .spawn(move || {
                let _slot = slot;
                read_peer(stream, &peer, &shared)
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

/// Forwards every message on one connection to the inbox until it ends or misbehaves.
fn read_peer(stream: TcpStream, addr: &str, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    debug!("peer connection from {addr}");
    let mut reader = BufReader::with_capacity(256 << 10, stream);
    let mut buf = Vec::with_capacity(4096);
    let mut from = None;
    loop {
        match read_line(&mut reader, &mut buf, MAX_PEER_LINE) {
            Ok(Line::Complete) => {}
            Ok(Line::Eof) | Ok(Line::Truncated) => break,
            Ok(Line::TooLong) => {
                warning!(
                    "peer {addr} sent a line over {MAX_PEER_LINE} bytes; closing its connection"
                );
                return;
            }
            Err(e) => {
                debug!("peer connection from {addr} failed: {e}");
                break;
            }
        }
        let message: Message = match serde_json::from_slice(&buf) {
            Ok(m) => m,
            Err(e) => {
                warning!("peer {addr} sent something that is not a Raft message ({e}); closing its connection");
                return;
            }
        };
        if message.to != shared.id {
            debug!("dropped a message for another node: {message}");
            continue;
        }
        if from != Some(message.from) {
            if from.is_none() {
                info!("n{} connected from {addr}", message.from);
            }
            from = Some(message.from);
        }
        if shared.inbox.send(Input::Peer(message)).is_err() {
            return; // the state thread has stopped
        }
        if buf.capacity() > 1 << 20 {
            buf = Vec::with_capacity(4096); // do not keep a huge buffer per connection
        }
    }
    match from {
        Some(id) => info!("n{id} (from {addr}) disconnected"),
        None => debug!("peer connection from {addr} closed"),
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
