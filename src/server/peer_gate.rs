//! Who holds a connection on the raft port, and for how long.
//!
//! Before this, a few hundred idle connections filled every peer slot, and then a real
//! member that reconnected was refused; every long partition leaked a slot too. Now
//! every inbound peer connection is in one of two places here:
//!
//! - *In the handshake*: at most [`MAX_HANDSHAKING`] at once, each for at most the
//!   handshake's deadline (`peer_auth::DEADLINE`). When all are taken, a new connection
//!   evicts the oldest (its socket is shut down) instead of being turned away. So a
//!   standing flood of idle connections cannot keep a member out: a member's handshake
//!   takes one round trip, and a flooder would have to open [`MAX_HANDSHAKING`]
//!   connections within that round trip to push it out.
//! - *Authenticated*: at most one per member id. A newer connection of the same member
//!   replaces the older one (shut down, logged): the member's replicator dials anew
//!   only when it has given up on its old connection, so what a long partition leaves
//!   behind is closed as soon as the member is back. An authenticated connection that
//!   stays silent longer than `peer_port::IDLE` is closed by its reader.
//!
//! The raft listener keeps an overall cap besides (`peer_port`), as a last line of
//! defence while evicted connections' threads wind down.
//!
//! Failures on the way in are logged with one rate-limited warning each kind, so a
//! flood costs a line a second, not a line per connection.

use std::{
    collections::{BTreeMap, VecDeque},
    net::{Shutdown, TcpStream},
    time::Duration,
};

use parking_lot::Mutex;

use super::logging::{info, warning, Throttle};
use crate::raft::NodeId;

/// Most connections in the handshake at once.
pub(crate) const MAX_HANDSHAKING: usize = 16;
/// At most one warning per this long for each kind of failure.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// The raft port's connections (see the module documentation).
pub(crate) struct Gate {
    state: Mutex<State>,
    /// Handshakes that failed.
    refusals: Mutex<Throttle>,
    /// Authenticated members that broke the protocol.
    violations: Mutex<Throttle>,
}

#[derive(Default)]
struct State {
    /// The ticket of the next connection.
    next: u64,
    /// Connections in the handshake, oldest first: (ticket, a handle to shut it down).
    handshaking: VecDeque<(u64, TcpStream)>,
    /// The authenticated connection of each member: (ticket, handle).
    members: BTreeMap<NodeId, (u64, TcpStream)>,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate {
            state: Mutex::default(),
            refusals: Mutex::new(Throttle::new(WARN_EVERY)),
            violations: Mutex::new(Throttle::new(WARN_EVERY)),
        }
    }
}

impl Gate {
    /// A new connection enters its handshake; if [`MAX_HANDSHAKING`] are in theirs
    /// already, the oldest of them is shut down. `stream` is a handle on the
    /// connection (a `try_clone`), for shutting it down later.
    pub(crate) fn enter(&self, stream: TcpStream) -> Handshaking<'_> {
        let mut state = self.state.lock();
        while state.handshaking.len() >= MAX_HANDSHAKING {
            if let Some((_, oldest)) = state.handshaking.pop_front() {
                let _ = oldest.shutdown(Shutdown::Both);
            }
        }
        let ticket = state.next;
        state.next += 1;
        state.handshaking.push_back((ticket, stream));
        Handshaking { gate: self, ticket }
    }

    /// Logs a failed handshake from `addr` (rate-limited).
    pub(crate) fn refused(&self, addr: &str, why: &str) {
        if let Some(more) = self.refusals.lock().allow() {
            warning!(
                "peer connection from {addr} refused: {why}; closing its connection{}",
                not_shown(more)
            );
        }
    }

    /// Logs that member `member`, connected from `addr`, broke the protocol
    /// (rate-limited).
    pub(crate) fn violation(&self, member: NodeId, addr: &str, what: &str) {
        if let Some(more) = self.violations.lock().allow() {
            warning!(
                "n{member} (from {addr}) {what}, a protocol violation; closing its connection{}",
                not_shown(more)
            );
        }
    }

    /// How many connections are in the handshake and how many are authenticated.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.handshaking.len(), state.members.len())
    }
}

fn not_shown(more: u64) -> String {
    if more == 0 {
        String::new()
    } else {
        format!(" ({more} more such lines not shown)")
    }
}

/// A connection in its handshake. Dropping it takes it out of the list.
pub(crate) struct Handshaking<'a> {
    gate: &'a Gate,
    ticket: u64,
}

impl<'a> Handshaking<'a> {
    /// Whether a newer connection pushed this one out of the handshake.
    pub(crate) fn evicted(&self) -> bool {
        let state = self.gate.state.lock();
        !state.handshaking.iter().any(|(t, _)| *t == self.ticket)
    }

    /// The handshake authenticated `member`: the connection is that member's now, and
    /// an older connection of the same member is shut down.
    pub(crate) fn admit(self, member: NodeId, addr: &str) -> Admitted<'a> {
        let gate = self.gate;
        let mut state = gate.state.lock();
        let at = state
            .handshaking
            .iter()
            .position(|(t, _)| *t == self.ticket);
        let Some((ticket, stream)) = at.and_then(|at| state.handshaking.remove(at)) else {
            // Evicted just as it finished: the socket is shut down already, and the
            // reader sees that at its first read. It holds no member's place.
            return Admitted {
                gate,
                member,
                ticket: None,
            };
        };
        if let Some((_, older)) = state.members.insert(member, (ticket, stream)) {
            info!("n{member} reconnected from {addr}; closing its previous connection");
            let _ = older.shutdown(Shutdown::Both);
        } else {
            info!("n{member} connected from {addr}");
        }
        Admitted {
            gate,
            member,
            ticket: Some(ticket),
        }
    }
}

impl Drop for Handshaking<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.state.lock();
        state.handshaking.retain(|(t, _)| *t != self.ticket);
    }
}

/// A member's authenticated connection. Dropping it gives up the member's place,
/// unless a newer connection of the same member took it already.
pub(crate) struct Admitted<'a> {
    gate: &'a Gate,
    member: NodeId,
    /// `None` if the connection was evicted before it could be admitted.
    ticket: Option<u64>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket else {
            return;
        };
        let mut state = self.gate.state.lock();
        if state
            .members
            .get(&self.member)
            .is_some_and(|(t, _)| *t == ticket)
        {
            state.members.remove(&self.member);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{io::Read, net::TcpListener};

    /// `n` loopback connections: (the server's ends, the client's ends).
    fn connections(n: usize) -> (Vec<TcpStream>, Vec<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        (0..n)
            .map(|_| {
                let client = TcpStream::connect(addr).unwrap();
                (listener.accept().unwrap().0, client)
            })
            .unzip()
    }

    /// Whether the server shut this connection down: the client reads the end.
    fn closed(client: &mut TcpStream) -> bool {
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        matches!(client.read(&mut [0; 1]), Ok(0))
    }

    #[test]
    fn a_full_handshake_list_evicts_its_oldest() {
        let gate = Gate::default();
        let (server, mut clients) = connections(MAX_HANDSHAKING + 2);
        let held: Vec<_> = server
            .iter()
            .map(|s| gate.enter(s.try_clone().unwrap()))
            .collect();
        assert_eq!(gate.counts(), (MAX_HANDSHAKING, 0));
        assert!(held[0].evicted() && held[1].evicted() && !held[2].evicted());
        assert!(closed(&mut clients[0]) && closed(&mut clients[1]));
        assert!(!closed(&mut clients[2]));
        // Finishing a handshake, either way, frees its place.
        let mut held = held.into_iter().skip(2);
        drop(held.next());
        let admitted = held.next().unwrap().admit(1, "test");
        assert_eq!(gate.counts(), (MAX_HANDSHAKING - 2, 1));
        drop(admitted);
        assert_eq!(gate.counts(), (MAX_HANDSHAKING - 2, 0));
    }

    #[test]
    fn a_member_holds_one_connection_the_newest() {
        let gate = Gate::default();
        let (server, mut clients) = connections(3);
        let enter = |i: usize| gate.enter(server[i].try_clone().unwrap());
        let first = enter(0).admit(2, "a");
        let second = enter(1).admit(2, "b");
        assert!(closed(&mut clients[0]), "the older one is shut down");
        assert!(!closed(&mut clients[1]));
        assert_eq!(gate.counts(), (0, 1));
        // The older connection's reader ending does not give up the newer one's place.
        drop(first);
        assert_eq!(gate.counts(), (0, 1));
        let other = enter(2).admit(3, "c");
        assert_eq!(gate.counts(), (0, 2));
        drop((second, other));
        assert_eq!(gate.counts(), (0, 0));
    }

    #[test]
    fn a_connection_evicted_as_it_finishes_takes_no_members_place() {
        let gate = Gate::default();
        let (server, _clients) = connections(MAX_HANDSHAKING + 1);
        let mut held: Vec<_> = server
            .iter()
            .map(|s| gate.enter(s.try_clone().unwrap()))
            .collect();
        let late = held.remove(0).admit(1, "late");
        assert_eq!(gate.counts(), (MAX_HANDSHAKING, 0));
        drop(late);
        assert_eq!(gate.counts(), (MAX_HANDSHAKING, 0));
    }
}
