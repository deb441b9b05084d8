//! One replicator thread per peer: it owns the outgoing connection to that peer's raft
//! address and writes the messages the state thread queues for it, one JSON line each.
//!
//! It writes whatever is queued before flushing, so a burst becomes one syscall. It
//! reconnects with capped exponential backoff, and while the peer is unreachable it
//! discards queued messages: Raft retransmits (heartbeats, probes), and a channel that
//! stays full would only make the state thread drop newer messages instead of older.

use std::{
    io::{BufWriter, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::{
    logging::{debug, info},
    peer_port::resolve,
};
use crate::{
    codec::write_json_line,
    raft::{Message, NodeId},
};

/// Messages waiting for one peer; beyond this the state thread drops new ones.
pub(crate) const QUEUE: usize = 1024;
/// Stack size of a replicator thread.
pub(crate) const STACK: usize = 256 << 10;

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A peer that accepts bytes but never reads them (stopped, or a black hole) gets its
/// connection dropped after this long; the next message reconnects.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until the state thread drops the sending side of `queue`.
pub(crate) fn run(peer: NodeId, addr: String, queue: Receiver<Message>) {
    let mut backoff = BACKOFF_MIN;
    let mut reported_down = false;
    loop {
        match connect(&addr) {
            Ok(stream) => {
                info!("connected to n{peer} at {addr}");
                reported_down = false;
                backoff = BACKOFF_MIN;
                match pump(stream, &queue) {
                    Ok(()) => return, // the node is shutting down
                    Err(e) => info!("connection to n{peer} at {addr} lost: {e}"),
                }
            }
            Err(e) => {
                if !reported_down {
                    info!("cannot reach n{peer} at {addr}: {e} (retrying)");
                    reported_down = true;
                } else {
                    debug!("still cannot reach n{peer} at {addr}: {e}");
                }
            }
        }
        // Wait before the next attempt, discarding what is queued meanwhile.
        let until = Instant::now() + backoff;
        loop {
            match queue.recv_deadline(until) {
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&resolve(addr)?, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    Ok(stream)
}

/// Writes queued messages until the connection fails (`Err`) or the queue is closed
/// (`Ok`). Flushes only when nothing more is queued.
fn pump(stream: TcpStream, queue: &Receiver<Message>) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(256 << 10, stream);
    loop {
        let message = match queue.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty) => {
                out.flush()?;
                match queue.recv() {
                    Ok(m) => m,
                    Err(_) => return Ok(()),
                }
            }
            Err(TryRecvError::Disconnected) => {
                out.flush()?;
                return Ok(());
            }
        };
        write_json_line(&mut out, &message)?;
    }
}
