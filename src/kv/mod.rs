//! The replicated state machine: a string → string map plus the session table that
//! makes writes exactly-once, and the cluster clock that lets sessions expire.
//!
//! [`Store::apply`] is deterministic: the same commands in the same order give the same
//! map, session table, clock and results on every node. Nothing in here reads a clock,
//! a configuration file or a random number; everything it depends on arrives in the
//! commands.
//!
//! # Sessions (thesis §6.3)
//!
//! A session remembers, for one client, the newest `seq` applied and a fingerprint of
//! that write, so a retried write (same session, same seq) gets the first attempt's
//! answer instead of running twice, and a different write reusing that seq is refused.
//! Sessions come in two forms ([`SessionId`]):
//!
//! - **Registered**: the client asks for one with a `register` command, whose result is
//!   the session's number (1, 2, 3, … in log order: the state machine counts
//!   registrations, so the number is the same on every replica and never reused). A
//!   write naming a number the table does not hold is refused as
//!   [`WriteResult::SessionExpired`] (or [`WriteResult::UnknownSession`] for a number
//!   not handed out yet): the cluster created every registered session, so a missing
//!   one can only have expired, and a retry after expiry is never applied a second
//!   time. This is the form to use.
//! - **Named**: the client picks a `client` name and the table takes an unknown name
//!   for a new client (the protocol's older form, kept working). When a named session
//!   expires it leaves a *tombstone* (its last `seq`) for one more timeout: a write of
//!   that name with a `seq` at or below it is refused as `SessionExpired`, a higher one
//!   starts the session again. Once the tombstone is gone too, the name is new again,
//!   and a retry that late would be applied a second time; docs/protocol.md §3.6 says
//!   so.
//!
//! # Cluster time and expiry
//!
//! Sessions expire by *cluster time*, never by a node's own clock, so that every
//! replica removes the same sessions at the same log index (LogCabin's "cluster
//! clock"). The leader stamps each command it proposes with its clock in milliseconds
//! ([`Stamp::time`], see `replica`); applying a command first moves [`Store::clock`] up
//! to that stamp (never down), then:
//!
//! 1. removes every session whose last activity is at least the session timeout behind
//!    the clock (`last_active + timeout <= clock`), oldest first, from an index ordered
//!    by `(last_active, session)`, so the work is proportional to what expires;
//! 2. drops tombstones older than two timeouts (`last_active + 2 * timeout <= clock`);
//!
//! and only then looks at the command itself. A session's activity is the clock at the
//! last command that named it (any command: a write, a retry, a refused one) or at its
//! registration. Cluster time only moves while some leader serves and stamps, and a new
//! leader resumes from the newest stamp it holds, so it runs slower than real time,
//! never faster: a session lives at least its timeout of real time, often longer.
//!
//! The number of sessions is bounded too: a command that would create one more than
//! the maximum first removes the least recently active (a named one leaves a
//! tombstone, as on expiry); tombstones are bounded by the same maximum. The timeout
//! and the maximum ([`SessionLimits`]) are replicated state as well: a leader whose
//! configured rules differ from the store's stamps its own on the next command, and
//! from that index on every replica uses them.
//!
//! # Persistence
//!
//! All maps are persistent B-trees (`imbl::OrdMap`, `OrdSet`): a clone shares every node
//! with the original and copies only what either side changes later. So a snapshot is
//! a clone taken in O(1) on the state thread and serialized on another ([`image`]),
//! and, being ordered, two stores with the same contents serialize to the same bytes.

mod command;
pub mod image;

pub use command::{
    Command, Session, SessionId, SessionLimits, Stamp, WriteOp, WriteResult, MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
};

use imbl::{OrdMap, OrdSet};

/// The newest write applied for one session. Only successful writes are recorded, so
/// the answer to a retry of it is always [`WriteResult::Ok`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct SessionRecord {
    /// 0 for a registered session that has not written yet.
    last_seq: u64,
    /// [`Command::fingerprint`] of that write: a retry must match it.
    last_fingerprint: u64,
    /// Cluster time of the last command that named this session (or registered it).
    last_active: u64,
}

/// What is left of an expired named session: enough to refuse its old retries.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tombstone {
    last_seq: u64,
    /// The session's last activity; the tombstone goes two timeouts after it.
    last_active: u64,
}

/// The key-value map and the session table. Cloning is O(1) (see the module
/// documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Store {
    data: OrdMap<String, String>,
    /// Bytes of keys and values in `data`: about the size of a snapshot of it.
    data_bytes: u64,
    /// Cluster time in ms: the largest stamp applied so far.
    clock: u64,
    /// The session rules in force.
    limits: SessionLimits,
    /// Registrations so far; the next registered session gets this plus one.
    registered: u64,
    sessions: OrdMap<SessionId, SessionRecord>,
    /// Every session, by `(last_active, id)`: the front is the next to expire.
    /// Invariant: holds exactly `(record.last_active, id)` for each entry of `sessions`.
    by_activity: OrdSet<(u64, SessionId)>,
    /// Expired named sessions, by client name.
    tombstones: OrdMap<String, Tombstone>,
    /// Every tombstone, by `(last_active, name)`. Same invariant as `by_activity`.
    tombstones_by_activity: OrdSet<(u64, String)>,
}

/// What the session table says about a write, before the write is applied.
enum Verdict {
    /// Apply it and record it.
    Apply,
    /// Do not apply it; answer this.
    Answer(WriteResult),
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Applies one committed command and returns its result.
    pub fn apply(&mut self, command: &Command) -> WriteResult {
        self.advance(&command.stamp);
        if command.op == WriteOp::Register {
            return self.register();
        }
        let fingerprint = command.fingerprint();
        if let Some(session) = &command.session {
            if let Verdict::Answer(result) = self.check(session, fingerprint) {
                return result;
            }
        }
        let entry_bytes = |k: &String, v: &String| (k.len() + v.len()) as u64;
        match &command.op {
            WriteOp::Put { value } => {
                self.data_bytes += entry_bytes(&command.key, value);
                if let Some(old) = self.data.insert(command.key.clone(), value.clone()) {
                    self.data_bytes -= entry_bytes(&command.key, &old);
                }
            }
            WriteOp::Append { value } => {
                let current = self.data.entry(command.key.clone()).or_default();
                if current.is_empty() {
                    self.data_bytes += command.key.len() as u64;
                }
                current.push_str(value);
                self.data_bytes += value.len() as u64;
            }
            WriteOp::Delete => {
                if let Some(old) = self.data.remove(&command.key) {
                    self.data_bytes -= entry_bytes(&command.key, &old);
                }
            }
            WriteOp::Register => unreachable!("handled above"),
        }
        if let Some(session) = &command.session {
            self.record(session, fingerprint);
        }
        WriteResult::Ok
    }

    /// Moves the clock and the rules to what the leader stamped, then removes what
    /// expired by the new time (see the module documentation).
    fn advance(&mut self, stamp: &Stamp) {
        if let Some(limits) = stamp.sessions {
            self.limits = limits;
        }
        self.clock = self.clock.max(stamp.time);
        let timeout = self.limits.timeout_ms;
        // Peek first: the common case (nothing expires) costs one lookup, no copy.
        while let Some((last_active, id)) = self.by_activity.get_min() {
            if last_active.saturating_add(timeout) > self.clock {
                break;
            }
            let id = id.clone();
            self.remove_session(&id);
        }
        // New rules may have lowered the maximum.
        while self.sessions.len() as u64 > self.limits.max_sessions {
            self.remove_least_active();
        }
        let tombstone_life = timeout.saturating_mul(2);
        while let Some((last_active, _)) = self.tombstones_by_activity.get_min() {
            if last_active.saturating_add(tombstone_life) > self.clock {
                break;
            }
            let (_, name) = self
                .tombstones_by_activity
                .remove_min()
                .expect("just looked at it");
            self.tombstones.remove(&name);
        }
    }

    /// Opens a registered session, making room for it first.
    fn register(&mut self) -> WriteResult {
        self.make_room();
        self.registered += 1;
        let id = SessionId::Registered(self.registered);
        self.insert_session(id, 0, 0);
        WriteResult::Registered {
            session: self.registered,
        }
    }

    /// What the session table says about a write of `session` (and the session is
    /// active now, if it exists).
    fn check(&mut self, session: &Session, fingerprint: u64) -> Verdict {
        let Some(record) = self.sessions.get(&session.id) else {
            return match &session.id {
                SessionId::Registered(n) if *n <= self.registered => {
                    Verdict::Answer(WriteResult::SessionExpired)
                }
                SessionId::Registered(_) => Verdict::Answer(WriteResult::UnknownSession),
                SessionId::Named(name) => match self.tombstones.get(name) {
                    Some(t) if session.seq <= t.last_seq => {
                        Verdict::Answer(WriteResult::SessionExpired)
                    }
                    // A new client, or one whose expired session knew only older seqs.
                    _ => Verdict::Apply,
                },
            };
        };
        let (last_seq, last_fingerprint) = (record.last_seq, record.last_fingerprint);
        self.touch(&session.id);
        if session.seq == last_seq {
            if last_fingerprint != fingerprint {
                return Verdict::Answer(WriteResult::SeqReused { seq: session.seq });
            }
            return Verdict::Answer(WriteResult::Ok);
        }
        if session.seq < last_seq {
            return Verdict::Answer(WriteResult::StaleSeq { last_seq });
        }
        Verdict::Apply
    }

    /// Records an applied write of `session`, creating the session if it is new.
    fn record(&mut self, session: &Session, fingerprint: u64) {
        if let Some(record) = self.sessions.get_mut(&session.id) {
            record.last_seq = session.seq;
            record.last_fingerprint = fingerprint;
            return; // `check` made it active now
        }
        if let SessionId::Named(name) = &session.id {
            if let Some(t) = self.tombstones.remove(name) {
                self.tombstones_by_activity
                    .remove(&(t.last_active, name.clone()));
            }
        }
        self.make_room();
        self.insert_session(session.id.clone(), session.seq, fingerprint);
    }

    fn insert_session(&mut self, id: SessionId, last_seq: u64, last_fingerprint: u64) {
        let record = SessionRecord {
            last_seq,
            last_fingerprint,
            last_active: self.clock,
        };
        self.by_activity.insert((self.clock, id.clone()));
        self.sessions.insert(id, record);
    }

    /// Marks the existing session `id` active at the current clock.
    fn touch(&mut self, id: &SessionId) {
        let clock = self.clock;
        let record = self
            .sessions
            .get_mut(id)
            .expect("touch an existing session");
        if record.last_active != clock {
            let before = std::mem::replace(&mut record.last_active, clock);
            self.by_activity.remove(&(before, id.clone()));
            self.by_activity.insert((clock, id.clone()));
        }
    }

    /// Removes sessions until one more fits under the maximum.
    fn make_room(&mut self) {
        while self.sessions.len() as u64 >= self.limits.max_sessions.max(1) {
            self.remove_least_active();
        }
    }

    fn remove_least_active(&mut self) {
        if let Some((_, id)) = self.by_activity.get_min().cloned() {
            self.remove_session(&id);
        }
    }

    /// Removes a session (expired, or pushed out); a named one leaves a tombstone.
    fn remove_session(&mut self, id: &SessionId) {
        let Some(record) = self.sessions.remove(id) else {
            return;
        };
        self.by_activity.remove(&(record.last_active, id.clone()));
        if let SessionId::Named(name) = id {
            let tombstone = Tombstone {
                last_seq: record.last_seq,
                last_active: record.last_active,
            };
            self.tombstones_by_activity
                .insert((record.last_active, name.clone()));
            if let Some(old) = self.tombstones.insert(name.clone(), tombstone) {
                self.tombstones_by_activity
                    .remove(&(old.last_active, name.clone()));
            }
            while self.tombstones.len() as u64 > self.limits.max_sessions {
                let (last_active, name) = self
                    .tombstones_by_activity
                    .remove_min()
                    .expect("as many index entries as tombstones");
                debug_assert!(self.tombstones.contains_key(&name), "{last_active}");
                self.tombstones.remove(&name);
            }
        }
    }

    /// About the size of the store's image in bytes (keys and values; sessions are
    /// small beside them).
    pub fn approx_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Number of live sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Number of tombstones of expired named sessions.
    pub fn tombstones(&self) -> usize {
        self.tombstones.len()
    }

    /// Whether the session `id` is live.
    pub fn has_session(&self, id: &SessionId) -> bool {
        self.sessions.contains_key(id)
    }

    /// Cluster time in ms: the newest stamp applied.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// The session rules in force.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(key: &str, op: WriteOp, session: Option<(&str, u64)>) -> Command {
        Command::write(key, op, session.map(|(c, s)| Session::named(c, s)))
    }

    fn append(v: &str) -> WriteOp {
        WriteOp::Append { value: v.into() }
    }

    /// `command` as the leader stamped it at cluster time `time`.
    fn at(time: u64, mut command: Command) -> Command {
        command.stamp.time = time;
        command
    }

    /// A store whose sessions expire after `timeout_ms`, at most `max` of them.
    fn limited(timeout_ms: u64, max: u64) -> Store {
        let mut s = Store::new();
        let mut rules = Command::write("", WriteOp::Delete, None);
        rules.stamp.sessions = Some(SessionLimits {
            timeout_ms,
            max_sessions: max,
        });
        s.apply(&rules);
        s
    }

    fn register(s: &mut Store, time: u64) -> u64 {
        match s.apply(&at(time, Command::register())) {
            WriteResult::Registered { session } => session,
            other => panic!("{other:?}"),
        }
    }

    fn write_as(id: u64, seq: u64, value: &str) -> Command {
        Command::write("k", append(value), Some(Session::registered(id, seq)))
    }

    #[test]
    fn put_append_delete() {
        let mut s = Store::new();
        s.apply(&cmd("k", append("a"), None));
        assert_eq!(
            s.get("k"),
            Some("a"),
            "append to a missing key starts from \"\""
        );
        s.apply(&cmd("k", append("b"), None));
        assert_eq!(s.get("k"), Some("ab"));
        s.apply(&cmd("k", WriteOp::Put { value: "x".into() }, None));
        assert_eq!(s.get("k"), Some("x"));
        s.apply(&cmd("k", WriteOp::Delete, None));
        assert_eq!(s.get("k"), None);
        assert_eq!(s.apply(&cmd("k", WriteOp::Delete, None)), WriteResult::Ok);
    }

    #[test]
    fn a_retried_write_is_applied_once() {
        let mut s = Store::new();
        assert_eq!(
            s.apply(&cmd("k", append("a"), Some(("c1", 1)))),
            WriteResult::Ok
        );
        assert_eq!(
            s.apply(&cmd("k", append("a"), Some(("c1", 1)))),
            WriteResult::Ok
        );
        assert_eq!(s.get("k"), Some("a"));
        s.apply(&cmd("k", append("b"), Some(("c1", 2))));
        s.apply(&cmd("k", append("z"), Some(("c2", 1))));
        assert_eq!(s.get("k"), Some("abz"), "sessions are per client");
        assert_eq!(
            s.apply(&cmd("k", append("a"), Some(("c1", 1)))),
            WriteResult::StaleSeq { last_seq: 2 }
        );
        assert_eq!(s.get("k"), Some("abz"));
    }

    #[test]
    fn a_reused_client_name_is_refused_never_silently_dropped() {
        // A new process reusing an old client name starts its seq again at 1: the same
        // seq as a recorded write, but a different write. It is not a retry.
        let mut s = Store::new();
        s.apply(&cmd("k", append("a"), Some(("c1", 1))));
        assert_eq!(
            s.apply(&cmd("k", append("b"), Some(("c1", 1)))),
            WriteResult::SeqReused { seq: 1 }
        );
        assert_eq!(
            s.apply(&cmd("other", append("a"), Some(("c1", 1)))),
            WriteResult::SeqReused { seq: 1 },
            "another key is another write"
        );
        assert_eq!(s.get("k"), Some("a"));
        assert_eq!(s.get("other"), None);
        // The real retry still gets the first answer.
        assert_eq!(
            s.apply(&cmd("k", append("a"), Some(("c1", 1)))),
            WriteResult::Ok
        );
    }

    #[test]
    fn the_size_estimate_follows_puts_appends_and_deletes() {
        let mut s = Store::new();
        s.apply(&cmd(
            "ab",
            WriteOp::Put {
                value: "xyz".into(),
            },
            None,
        ));
        assert_eq!(s.approx_bytes(), 5);
        s.apply(&cmd("ab", append("12"), None));
        s.apply(&cmd("c", append("1"), None));
        assert_eq!(s.approx_bytes(), 7 + 2);
        s.apply(&cmd("ab", WriteOp::Put { value: "".into() }, None));
        assert_eq!(s.approx_bytes(), 2 + 2);
        s.apply(&cmd("ab", WriteOp::Delete, None));
        s.apply(&cmd("zz", WriteOp::Delete, None));
        assert_eq!(s.approx_bytes(), 2);
    }

    #[test]
    fn commands_without_a_session_apply_every_time() {
        let mut s = Store::new();
        s.apply(&cmd("k", append("a"), None));
        s.apply(&cmd("k", append("a"), None));
        assert_eq!(s.get("k"), Some("aa"));
    }

    #[test]
    fn registration_hands_out_numbers_in_log_order_and_writes_use_them() {
        let mut s = Store::new();
        assert_eq!(register(&mut s, 10), 1);
        assert_eq!(register(&mut s, 10), 2);
        assert!(s.is_empty(), "registering writes no key");
        assert_eq!(s.sessions(), 2);
        assert_eq!(s.apply(&write_as(2, 1, "a")), WriteResult::Ok);
        assert_eq!(s.apply(&write_as(2, 1, "a")), WriteResult::Ok, "a retry");
        assert_eq!(
            s.apply(&write_as(2, 1, "b")),
            WriteResult::SeqReused { seq: 1 }
        );
        assert_eq!(
            s.apply(&write_as(1, 7, "c")),
            WriteResult::Ok,
            "gaps are fine"
        );
        assert_eq!(
            s.apply(&write_as(1, 3, "d")),
            WriteResult::StaleSeq { last_seq: 7 }
        );
        assert_eq!(s.get("k"), Some("ac"));
        assert_eq!(
            s.apply(&write_as(3, 1, "x")),
            WriteResult::UnknownSession,
            "a number not handed out yet"
        );
        assert_eq!(s.get("k"), Some("ac"));
    }

    #[test]
    fn idle_sessions_expire_by_cluster_time_oldest_first() {
        let mut s = limited(100, 1000);
        let a = register(&mut s, 1000);
        let b = register(&mut s, 1040);
        s.apply(&at(1050, cmd("k", append("n"), Some(("named", 1)))));
        // Activity: a at 1000, b at 1040, "named" at 1050. A write keeps b alive.
        assert_eq!(s.apply(&at(1090, write_as(b, 1, "b"))), WriteResult::Ok);
        // The clock reaches 1099: nothing is 100 ms idle yet.
        s.apply(&at(1099, cmd("x", WriteOp::Delete, None)));
        assert_eq!(s.sessions(), 3);
        // At 1100, a is exactly 100 ms idle: gone. The others stay.
        s.apply(&at(1100, cmd("x", WriteOp::Delete, None)));
        assert!(!s.has_session(&SessionId::Registered(a)));
        assert!(s.has_session(&SessionId::Registered(b)));
        assert_eq!(s.sessions(), 2);
        // A stamp from the past (another leader's older clock) moves nothing back.
        s.apply(&at(500, cmd("x", WriteOp::Delete, None)));
        assert_eq!(s.clock(), 1100);
        // The expired session's retry is refused, not applied; so is a new write.
        assert_eq!(
            s.apply(&at(1100, write_as(a, 1, "a"))),
            WriteResult::SessionExpired
        );
        assert_eq!(s.get("k"), Some("nb"));
        // Expiry happens before the command is looked at: b's write at 1190 finds b
        // expired (last active 1090) and is refused; "named" expired too.
        assert_eq!(
            s.apply(&at(1190, write_as(b, 2, "b"))),
            WriteResult::SessionExpired
        );
        assert_eq!(s.sessions(), 0);
        assert_eq!(s.tombstones(), 1);
        assert_eq!(s.get("k"), Some("nb"));
    }

    #[test]
    fn a_named_session_leaves_a_tombstone_for_one_more_timeout() {
        let mut s = limited(100, 1000);
        s.apply(&at(0, cmd("k", append("a"), Some(("old", 5)))));
        s.apply(&at(150, cmd("x", WriteOp::Delete, None)));
        assert_eq!((s.sessions(), s.tombstones()), (0, 1));
        // Within the tombstone's life, a retry of seq 5 (or older) is refused...
        for seq in [5, 2] {
            assert_eq!(
                s.apply(&at(160, cmd("k", append("a"), Some(("old", seq))))),
                WriteResult::SessionExpired
            );
        }
        assert_eq!(s.get("k"), Some("a"));
        // ... and a newer seq starts the session again (the client simply went on).
        assert_eq!(
            s.apply(&at(170, cmd("k", append("b"), Some(("old", 6))))),
            WriteResult::Ok
        );
        assert_eq!((s.sessions(), s.tombstones()), (1, 0));
        assert_eq!(s.get("k"), Some("ab"));
        // Expire it again and let the tombstone age out (two timeouts after 170):
        // then the name is new, and even a retry of seq 6 is applied a second time.
        // This is the limit of the named form that docs/protocol.md §3.6 states.
        s.apply(&at(369, cmd("x", WriteOp::Delete, None)));
        assert_eq!((s.sessions(), s.tombstones()), (0, 1));
        s.apply(&at(370, cmd("x", WriteOp::Delete, None)));
        assert_eq!((s.sessions(), s.tombstones()), (0, 0));
        assert_eq!(
            s.apply(&at(370, cmd("k", append("b"), Some(("old", 6))))),
            WriteResult::Ok
        );
        assert_eq!(s.get("k"), Some("abb"));
    }

    #[test]
    fn the_number_of_sessions_and_tombstones_is_bounded() {
        let mut s = limited(1_000_000, 3);
        let first = register(&mut s, 1);
        for (t, name) in [(2, "n1"), (3, "n2")] {
            s.apply(&at(t, cmd("k", append("x"), Some((name, 1)))));
        }
        // The first session writes, so n1 is now the least recently active.
        assert_eq!(s.apply(&at(4, write_as(first, 1, "y"))), WriteResult::Ok);
        let fourth = register(&mut s, 5);
        assert_eq!(s.sessions(), 3, "the new one fits by pushing one out");
        assert!(s.has_session(&SessionId::Registered(fourth)));
        assert!(s.has_session(&SessionId::Registered(first)));
        assert!(!s.has_session(&SessionId::Named("n1".into())));
        // n1 was pushed out, not forgotten: its retry is refused.
        assert_eq!(
            s.apply(&at(6, cmd("k", append("x"), Some(("n1", 1))))),
            WriteResult::SessionExpired
        );
        // Registered sessions pushed out answer session_expired as well.
        for t in 7..12 {
            register(&mut s, t);
        }
        assert_eq!(s.sessions(), 3);
        assert_eq!(
            s.apply(&at(12, write_as(first, 2, "z"))),
            WriteResult::SessionExpired
        );
        // Tombstones are bounded by the same maximum, least recently active out first.
        for (i, t) in (20..26).enumerate() {
            s.apply(&at(
                t,
                cmd("k", append("x"), Some((format!("m{i}").as_str(), 1))),
            ));
        }
        assert_eq!(s.tombstones(), 3);
        assert!(s.sessions() <= 3);
    }

    #[test]
    fn new_rules_apply_from_the_command_that_carries_them() {
        let mut s = Store::new();
        assert_eq!(s.limits(), SessionLimits::default());
        for t in 1..=5 {
            register(&mut s, t);
        }
        let mut shrink = at(6, Command::register());
        shrink.stamp.sessions = Some(SessionLimits {
            timeout_ms: 10,
            max_sessions: 2,
        });
        assert_eq!(s.apply(&shrink), WriteResult::Registered { session: 6 });
        assert_eq!(
            s.sessions(),
            2,
            "trimmed to the new maximum, then the new one"
        );
        assert!(s.has_session(&SessionId::Registered(5)));
        assert!(s.has_session(&SessionId::Registered(6)));
        s.apply(&at(16, cmd("x", WriteOp::Delete, None)));
        assert_eq!(s.sessions(), 0, "and the new timeout");
    }
}
