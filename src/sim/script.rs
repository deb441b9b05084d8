//! Golden scripts: the core's rules told as stories, checked as text.
//!
//! A script is a list of commands, one per line, with `#` comments and blank lines
//! between them. Running it prints, under each command and indented by two spaces,
//! what happened. [`run`] returns the script with that output in place, so the test
//! compares the text it got with the text in the file, and `make golden` writes it
//! back for review as a diff.
//!
//! Reading the output:
//! - `n1@2 → n3 Append base=4@1 [5@2] commit=4`: a message sent, with the sender's term
//!   (for a PreVote, the term it would campaign in); `✗ dropped`, `✗ link cut`,
//!   `✗ n3 is down` when it is lost instead of delivered.
//! - `n2@2 follower → candidate`, `n3@2 follower, term was 1`, `n1@2 commit=5`: a role,
//!   term or commit change of the node whose turn it was.
//! - `n1 → client: put x=1 → ok`: a reply (`not_leader (leader n2)`, `timeout`, ...).
//! - `n2 synced 2@1..4@1` (with `cluster ... disk`): what the turn made durable. A
//!   leader's line follows its messages, since its appends leave before its own sync;
//!   anyone else's precedes them.
//! - `n2 ✗ protocol violation from n1: entries not consecutive: ...`: the node refused a
//!   message that breaks a rule of the core's validation (`raft/validate.rs`) and did
//!   nothing else with it; `n2 does not campaign: ...` when its term is at the limit.
//! - In the output of `tick` (several ticks), `deliver` and `drop`, a line that repeats
//!   is printed once, where it first appeared, with `×N` after it (a leader heartbeating
//!   into a cut link for twenty ticks is one line per follower).
//!
//! The cluster is a set of [`SimNode`]s, each running the server's own turn code, on a
//! network that delivers only when told to: nothing happens between commands, so
//! every interleaving in a story is one the script chose. Commands:
//!
//! | command | what it does |
//! |---|---|
//! | `cluster nodes=N [leader=ID] [election=T] [heartbeat=T] [append-bytes=B] [snapshot=N] [session-timeout=MS] [term=T] [seed=S] [disk]` | a new cluster (first line); `leader` elects that node quietly; `term` starts every node in that term; `append-bytes` is the byte budget of one AppendEntries (`append-bytes=1`: one entry each); `snapshot` takes a snapshot every N applied entries (saving it completes at once, and the log keeps N/4 entries behind it); `session-timeout` is the idle time after which client sessions expire, in ms of cluster time (a tick is 30 ms); `disk` prints, after each turn, what the turn made durable (`n2 synced 2@1..4@1`) |
//! | `campaign ID` | the node's election timer fires now: it starts a pre-vote |
//! | `elect ID` | `campaign ID`, then only election messages are delivered until none is left; prints, instead of the trace, each round's answers, the outcome, and the node's last messages (a new leader's first appends, still in flight) |
//! | `tick [ID...] [n=K] [deliver]` | K ticks (default 1) on the given nodes (default all live ones); with `deliver` the network works meanwhile: after each tick, messages are delivered until none is in flight |
//! | `deliver [to=ID] [from=ID]` | delivers the messages now in flight (all, or those matching), one batch per receiver |
//! | `stabilize` | delivers until no message is in flight |
//! | `drop [to=ID] [from=ID]` | loses the messages now in flight (all, or those matching) |
//! | `hold [to=ID] [from=ID]` | delays the messages now in flight (all, or those matching): no delivery sees them until `release` |
//! | `release` | puts the held messages back in flight, behind everything sent since: they arrive late |
//! | `partition ID...` | cuts the given nodes off from the others, both ways |
//! | `cut FROM TO` | cuts the link from FROM to TO only |
//! | `heal` | restores every link |
//! | `put ID k=v [k=v...] [session=N seq=S]`, `append ID ...` | writes sent to node ID, all in one batch; with `session`, exactly-once writes of that registered session, numbered from `seq` (default 1) |
//! | `register ID` | registers a client session at node ID (the reply names its number) |
//! | `delete ID k...`, `get ID k... [stale]` | likewise |
//! | `crash ID [at=before-sync\|after-sync\|message=K] [keep=N]` | crashes the node now, or arms a crash at that point of its next turn; `keep` unsynced writes survive (default 0) |
//! | `restart ID` | restarts a crashed node from its disk |
//! | `inject ID from=N KIND term=T [to=N] ...` | hands node ID a hand-made message as if it had just arrived (`append prev=4@2 entries=5@3,7@3 commit=9`, `append-response match=9`, `vote last=7@4`, ...; the syntax is in `script/inject.rs`) |
//! | `status [ID...]` | one line per node |
//! | `log [ID...]` | each node's log; `\|` marks its commit point (`1@1 noop \|`: all committed; a down node's log is what its disk holds) |
//!
//! Writing a script: election timeouts are drawn from `[10, 20)` ticks with the
//! cluster's `seed`, and a follower's lease ends after 10 ticks without its leader, so
//! `tick n=10` ends leases but also fires any timer that drew exactly 10. Pick a `seed`
//! under which only the timers the story wants fire. `RAFTKV_GOLDEN_ONLY=name` runs (or
//! with `make golden`, rewrites) only the scripts whose file name contains `name`.

mod inject;

use std::collections::BTreeMap;

use super::{
    invariants::{DurableLog, Invariants},
    network::Links,
    node::{CrashPoint, Requester, SimNode},
};
use crate::{
    kv::{Command, Session, Store, WriteOp},
    raft::{Body, Entry, Message, NodeId, Payload, Pos, Role, Term},
    replica::{ClientOp, Input, Outcome, ReplicaConfig, Snapshot},
};

/// Runs a script and returns its text with every command's output in place (old
/// output lines are dropped first). An unusable line is an error naming it.
pub fn run(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut cluster: Option<Cluster> = None;
    for (number, line) in text.lines().enumerate() {
        if line.starts_with("  ") {
            continue; // output of an earlier run
        }
        out.push_str(line);
        out.push('\n');
        let command = line.trim();
        if command.is_empty() || command.starts_with('#') {
            continue;
        }
        let fail = |e: String| format!("line {}: {command}: {e}", number + 1);
        let words: Vec<&str> = command.split_whitespace().collect();
        let lines = if words[0] == "cluster" {
            let (c, lines) =
                Cluster::new(&Args::parse(&words[1..]).map_err(fail)?).map_err(fail)?;
            cluster = Some(c);
            lines
        } else {
            let c = cluster
                .as_mut()
                .ok_or_else(|| fail("the script must start with `cluster`".into()))?;
            c.command(words[0], &Args::parse(&words[1..]).map_err(fail)?)
                .map_err(fail)?
        };
        for l in lines {
            out.push_str("  ");
            out.push_str(&l);
            out.push('\n');
        }
    }
    Ok(out)
}

/// A command's arguments: bare words and `key=value` pairs, in order.
struct Args<'a> {
    words: Vec<&'a str>,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Args<'a> {
    fn parse(words: &[&'a str]) -> Result<Args<'a>, String> {
        let mut args = Args {
            words: Vec::new(),
            pairs: Vec::new(),
        };
        for w in words {
            match w.split_once('=') {
                Some((k, v)) => args.pairs.push((k, v)),
                None => args.words.push(w),
            }
        }
        Ok(args)
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        self.get(key)
            .map(|v| v.parse().map_err(|_| format!("{key}={v} is not a number")))
            .transpose()
    }

    /// The bare words as node ids (`n2` or `2`), leaving out the flags commands know.
    fn ids(&self) -> Result<Vec<NodeId>, String> {
        self.words
            .iter()
            .filter(|w| !FLAGS.contains(w))
            .map(|w| node_id(w))
            .collect()
    }

    /// Exactly one bare node id, first.
    fn one_id(&self) -> Result<NodeId, String> {
        node_id(self.words.first().ok_or("which node?")?)
    }
}

/// Bare words that are flags, not node ids: `tick ... deliver`, `get ... stale`,
/// `cluster ... disk`.
const FLAGS: &[&str] = &["deliver", "stale", "disk"];

fn node_id(word: &str) -> Result<NodeId, String> {
    word.trim_start_matches('n')
        .parse()
        .map_err(|_| format!("{word} is not a node id"))
}

/// The cluster a script drives.
struct Cluster {
    ids: Vec<NodeId>,
    nodes: BTreeMap<NodeId, SimNode>,
    config: ReplicaConfig,
    seed: u64,
    invariants: Invariants,
    links: Links,
    /// Messages sent and not yet delivered or dropped, oldest first.
    in_flight: Vec<Message>,
    /// Messages delayed by `hold`, waiting for `release`.
    held: Vec<Message>,
    /// Crashes armed for a node's next turn: where, and how many writes survive.
    armed: BTreeMap<NodeId, (CrashPoint, usize)>,
    /// What each client request was, by request number, to print its reply.
    requests: BTreeMap<u64, String>,
    next_request: u64,
    /// Print what each turn made durable (the `disk` word of `cluster`).
    show_disk: bool,
    /// Output of the current command.
    out: Vec<String>,
}

impl Cluster {
    fn new(args: &Args) -> Result<(Cluster, Vec<String>), String> {
        let n: u64 = args.number("nodes")?.ok_or("nodes=N is required")?;
        if !(1..=9).contains(&n) {
            return Err("nodes must be 1 to 9".into());
        }
        let mut config = ReplicaConfig::default();
        if let Some(t) = args.number("election")? {
            config.raft.election_ticks = t;
        }
        if let Some(t) = args.number("heartbeat")? {
            config.raft.heartbeat_ticks = t;
        }
        if let Some(b) = args.number("append-bytes")? {
            config.raft.max_append_bytes = b;
        }
        if let Some(n) = args.number("snapshot")? {
            config.snapshot_entries = n;
        }
        if let Some(ms) = args.number("session-timeout")? {
            config.sessions.timeout_ms = ms;
        }
        let ids: Vec<NodeId> = (1..=n).collect();
        let start_term: Term = args.number("term")?.unwrap_or(0);
        let mut c = Cluster {
            nodes: ids
                .iter()
                .map(|&id| {
                    let mut node = SimNode::new(id);
                    node.disk.hard_state.term = start_term;
                    (id, node)
                })
                .collect(),
            ids,
            config,
            seed: args.number("seed")?.unwrap_or(0),
            invariants: Invariants::default(),
            links: Links::default(),
            in_flight: Vec::new(),
            held: Vec::new(),
            armed: BTreeMap::new(),
            requests: BTreeMap::new(),
            next_request: 1,
            show_disk: false,
            out: Vec::new(),
        };
        for id in c.ids.clone() {
            c.start(id);
        }
        if let Some(leader) = args.number::<NodeId>("leader")? {
            c.node(leader)?;
            c.campaign(leader)?;
            c.stabilize()?;
            c.out.clear();
            if c.nodes[&leader].replica.as_ref().map(|r| r.role()) != Some(Role::Leader) {
                return Err(format!("n{leader} did not win the election"));
            }
            c.status(&[])?;
        }
        c.show_disk = args.words.contains(&"disk");
        let out = std::mem::take(&mut c.out);
        Ok((c, out))
    }

    fn command(&mut self, name: &str, args: &Args) -> Result<Vec<String>, String> {
        match name {
            "campaign" => self.campaign(args.one_id()?)?,
            "elect" => self.elect(args.one_id()?)?,
            "tick" => {
                let n: u32 = args.number("n")?.unwrap_or(1);
                let ids = self.given_or_live(args)?;
                let deliver = args.words.contains(&"deliver");
                for _ in 0..n {
                    for &id in &ids {
                        // A node that crashed during this command stops ticking.
                        if self.nodes[&id].is_up() {
                            self.turn(id, vec![Input::Tick])?;
                        }
                    }
                    if deliver {
                        self.stabilize()?;
                    }
                }
                collapse_repeats(&mut self.out);
            }
            "deliver" => {
                self.deliver(args.number("to")?, args.number("from")?)?;
                collapse_repeats(&mut self.out);
            }
            "stabilize" => self.stabilize()?,
            "drop" => {
                let (to, from) = (args.number("to")?, args.number("from")?);
                let (dropped, kept) = self.in_flight.drain(..).partition(|m| matches(m, to, from));
                self.in_flight = kept;
                let dropped: Vec<Message> = dropped;
                for m in dropped {
                    self.out.push(format!("{m}  ✗ dropped"));
                }
                collapse_repeats(&mut self.out);
            }
            "hold" => {
                let (to, from) = (args.number("to")?, args.number("from")?);
                let (held, kept): (Vec<Message>, Vec<Message>) =
                    self.in_flight.drain(..).partition(|m| matches(m, to, from));
                self.in_flight = kept;
                for m in held {
                    self.out.push(format!("{m}  ⏸ held"));
                    self.held.push(m);
                }
            }
            "release" => {
                for m in std::mem::take(&mut self.held) {
                    self.out.push(format!("{m}  ▶ released"));
                    self.in_flight.push(m);
                }
            }
            "partition" => {
                let cut = args.ids()?;
                let rest: Vec<NodeId> = self
                    .ids
                    .iter()
                    .copied()
                    .filter(|i| !cut.contains(i))
                    .collect();
                self.links.partition(&[cut, rest]);
                self.out.push(format!("cut: {}", self.links.describe()));
            }
            "cut" => {
                let ids = args.ids()?;
                let [from, to] = ids[..] else {
                    return Err("cut FROM TO".into());
                };
                self.links.cut_one_way(from, to);
                self.out.push(format!("cut: {}", self.links.describe()));
            }
            "heal" => {
                self.links.heal();
                self.out.push("network healed".into());
            }
            "put" | "append" => self.writes(name, args)?,
            "delete" | "get" => self.keys(name, args)?,
            "register" => {
                let id = args.one_id()?;
                let request = self.request(ClientOp::Write(Command::register()), "register".into());
                self.turn(id, vec![request])?;
            }
            "crash" => self.crash(args)?,
            "restart" => {
                let id = args.one_id()?;
                if self.node(id)?.is_up() {
                    return Err(format!("n{id} is running"));
                }
                self.start(id);
                self.out.push(format!("n{id} restarts"));
                self.status(&[id])?;
            }
            "inject" => self.inject(args)?,
            "status" => self.status(&args.ids()?)?,
            "log" => self.logs(&args.ids()?)?,
            other => return Err(format!("unknown command {other:?}")),
        }
        Ok(std::mem::take(&mut self.out))
    }

    fn node(&self, id: NodeId) -> Result<&SimNode, String> {
        self.nodes.get(&id).ok_or_else(|| format!("no node n{id}"))
    }

    fn given_or_live(&self, args: &Args) -> Result<Vec<NodeId>, String> {
        let ids = args.ids()?;
        for &id in &ids {
            self.node(id)?;
        }
        Ok(if ids.is_empty() {
            self.ids
                .iter()
                .copied()
                .filter(|id| self.nodes[id].is_up())
                .collect()
        } else {
            ids
        })
    }

    fn start(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.start(&self.ids, &self.config, self.seed);
    }

    fn campaign(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).ok_or(format!("no node n{id}"))?;
        let replica = node.replica.as_mut().ok_or(format!("n{id} is down"))?;
        let before = Look::of(replica);
        replica.campaign();
        self.turn_from(id, Vec::new(), Some(before))
    }

    /// Delivers the messages now in flight that match, one batch per receiver in id
    /// order; messages sent meanwhile wait for the next delivery.
    fn deliver(&mut self, to: Option<NodeId>, from: Option<NodeId>) -> Result<(), String> {
        self.deliver_where(|m| matches(m, to, from))
    }

    /// [`deliver`](Self::deliver) for the messages in flight that `pick` chooses.
    fn deliver_where(&mut self, pick: impl Fn(&Message) -> bool) -> Result<(), String> {
        let (now, later): (Vec<Message>, Vec<Message>) =
            self.in_flight.drain(..).partition(|m| pick(m));
        self.in_flight = later;
        let mut batches: BTreeMap<NodeId, Vec<Input<Requester>>> = BTreeMap::new();
        let mut sent = Vec::new();
        for m in now {
            if self.links.is_cut(m.from, m.to) {
                self.out.push(format!("{m}  ✗ link cut"));
            } else if !self.nodes.get(&m.to).is_some_and(SimNode::is_up) {
                self.out.push(format!("{m}  ✗ n{} is down", m.to));
            } else if let Body::InstallSnapshot { meta } = m.body {
                // The data comes from the sender's disk, as its replicator streams it;
                // the transfer's end is reported back to the sender.
                sent.push((m.from, m.to));
                let snapshot = self.nodes[&m.from].disk.snapshot.clone();
                match snapshot.filter(|s| s.meta == meta) {
                    Some(snapshot) => batches.entry(m.to).or_default().push(Input::PeerSnapshot {
                        message: m,
                        snapshot,
                    }),
                    None => self
                        .out
                        .push(format!("{m}  ✗ n{} has no such snapshot", m.from)),
                }
            } else {
                batches.entry(m.to).or_default().push(Input::Peer(m));
            }
        }
        for (id, batch) in batches {
            self.turn(id, batch)?;
        }
        for (leader, peer) in sent {
            if self.nodes[&leader].is_up() {
                self.out.push(format!(
                    "n{leader}'s runtime: snapshot transfer to n{peer} ended"
                ));
                self.turn(leader, vec![Input::SnapshotSent(peer)])?;
            }
        }
        Ok(())
    }

    /// `elect ID`: the node campaigns, and only election messages (pre-votes, votes and
    /// their answers) are delivered until none is in flight. Instead of the full trace it
    /// prints each round's answers, the outcome, and the messages the node sent last (a
    /// new leader's first appends, left in flight).
    fn elect(&mut self, id: NodeId) -> Result<(), String> {
        let quiet_from = self.out.len();
        let sent_from = self.in_flight.len();
        self.campaign(id)?;
        let mut rounds: Vec<Round> = Vec::new();
        for _ in 0..100 {
            let now: Vec<Message> = self
                .in_flight
                .iter()
                .filter(|m| Round::kind(m).is_some())
                .cloned()
                .collect();
            if now.is_empty() {
                break;
            }
            for m in &now {
                let kind = Round::kind(m).expect("election message");
                let unreachable = if !self.nodes.get(&m.to).is_some_and(SimNode::is_up) {
                    Some("down")
                } else if self.links.is_cut(m.from, m.to) {
                    Some("link cut")
                } else {
                    None
                };
                let request = matches!(m.body, Body::PreVote { .. } | Body::Vote { .. });
                if request && m.from == id {
                    let i = match rounds
                        .iter()
                        .position(|r| r.kind == kind && r.term == m.term)
                    {
                        Some(i) => i,
                        None => {
                            rounds.push(Round::new(kind, m.term));
                            rounds.len() - 1
                        }
                    };
                    rounds[i].asked.push((m.to, unreachable));
                } else if !request && m.to == id && unreachable.is_none() {
                    // An answer belongs to the latest round of its kind.
                    let granted = matches!(
                        m.body,
                        Body::PreVoteResponse { granted: true }
                            | Body::VoteResponse { granted: true }
                    );
                    if let Some(r) = rounds.iter_mut().rev().find(|r| r.kind == kind) {
                        r.answers.push((m.from, granted, m.term));
                    }
                }
            }
            self.deliver_where(|m| Round::kind(m).is_some())?;
        }
        let sent_last: Vec<String> = self.in_flight[sent_from.min(self.in_flight.len())..]
            .iter()
            .filter(|m| m.from == id && Round::kind(m).is_none())
            .map(|m| m.to_string())
            .collect();
        let replies: Vec<String> = self.out[quiet_from..]
            .iter()
            .filter(|l| l.contains(" → client: "))
            .cloned()
            .collect();
        self.out.truncate(quiet_from);
        for r in &rounds {
            self.out.push(r.describe(id));
        }
        let replica = self
            .node(id)?
            .replica
            .as_ref()
            .ok_or(format!("n{id} is down"))?;
        self.out.push(format!(
            "n{id}@{} {}",
            replica.node().term(),
            replica.role().as_str()
        ));
        self.out.extend(sent_last);
        self.out.extend(replies);
        Ok(())
    }

    fn stabilize(&mut self) -> Result<(), String> {
        for _ in 0..100 {
            if self.in_flight.is_empty() {
                return Ok(());
            }
            self.deliver(None, None)?;
        }
        Err("still not stable after 100 rounds of delivery".into())
    }

    fn writes(&mut self, name: &str, args: &Args) -> Result<(), String> {
        let id = args.one_id()?;
        let session: Option<u64> = args.number("session")?;
        let first_seq: u64 = args.number("seq")?.unwrap_or(1);
        let mut batch = Vec::new();
        let writes = args
            .pairs
            .iter()
            .filter(|(k, _)| !matches!(*k, "session" | "seq"));
        for (seq, &(key, value)) in (first_seq..).zip(writes) {
            let op = match name {
                "put" => WriteOp::Put {
                    value: value.into(),
                },
                _ => WriteOp::Append {
                    value: value.into(),
                },
            };
            let (exactly_once, what) = match session {
                Some(n) => (
                    Some(Session::registered(n, seq)),
                    format!("{name} {key}={value} (session {n} seq {seq})"),
                ),
                None => (None, format!("{name} {key}={value}")),
            };
            let command = Command::write(key, op, exactly_once);
            batch.push(self.request(ClientOp::Write(command), what));
        }
        self.turn(id, batch)
    }

    fn keys(&mut self, name: &str, args: &Args) -> Result<(), String> {
        let id = args.one_id()?;
        let stale = args.words.contains(&"stale");
        let mut batch = Vec::new();
        for &key in args.words[1..].iter().filter(|&&w| w != "stale") {
            let op = match name {
                "get" => ClientOp::Get {
                    key: key.into(),
                    stale,
                },
                _ => ClientOp::Write(Command::write(key, WriteOp::Delete, None)),
            };
            let what = if stale {
                format!("{name} {key} (stale)")
            } else {
                format!("{name} {key}")
            };
            batch.push(self.request(op, what));
        }
        self.turn(id, batch)
    }

    fn request(&mut self, op: ClientOp, what: String) -> Input<Requester> {
        let number = self.next_request;
        self.next_request += 1;
        self.requests.insert(number, what);
        Input::Request(op, Requester::Script(number))
    }

    /// `inject ID ...`: the node gets the message described as if it had just arrived.
    /// An InstallSnapshot comes with the claimed sender's snapshot if it has that one,
    /// else with an empty store (what a forger has).
    fn inject(&mut self, args: &Args) -> Result<(), String> {
        let id = args.one_id()?;
        let m = inject::message(id, args)?;
        if !self.node(id)?.is_up() {
            return Err(format!("n{id} is down"));
        }
        self.out.push(format!("{m}  ✎ injected"));
        let input = match m.body {
            Body::InstallSnapshot { meta } => {
                let theirs = self
                    .nodes
                    .get(&m.from)
                    .and_then(|n| n.disk.snapshot.clone());
                let snapshot = theirs.filter(|s| s.meta == meta).unwrap_or(Snapshot {
                    meta,
                    members: self.ids.clone(),
                    store: Store::new(),
                });
                Input::PeerSnapshot {
                    message: m,
                    snapshot,
                }
            }
            _ => Input::Peer(m),
        };
        self.turn(id, vec![input])
    }

    fn crash(&mut self, args: &Args) -> Result<(), String> {
        let id = args.one_id()?;
        let keep: usize = args.number("keep")?.unwrap_or(0);
        let point = match args.get("at") {
            None => None,
            Some("before-sync") => Some(CrashPoint::BeforeSync),
            Some("after-sync") => Some(CrashPoint::AfterSync),
            Some(other) => return Err(format!("at={other}: before-sync or after-sync")),
        };
        let point = match (point, args.number::<usize>("message")?) {
            (None, Some(k)) => Some(CrashPoint::BeforeMessage(k)),
            (p, None) => p,
            (Some(_), Some(_)) => return Err("give at= or message=, not both".into()),
        };
        match point {
            Some(p) => {
                self.node(id)?;
                self.armed.insert(id, (p, keep));
                self.out
                    .push(format!("n{id} will crash at {}", describe_point(p)));
                Ok(())
            }
            None => self.crash_now(id, None, keep),
        }
    }

    fn crash_now(
        &mut self,
        id: NodeId,
        point: Option<CrashPoint>,
        keep: usize,
    ) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).ok_or(format!("no node n{id}"))?;
        let Some((kept, written)) = node.crash(|_| keep, &mut self.invariants)? else {
            return Err(format!("n{id} is already down"));
        };
        let at = point.map_or(String::new(), |p| format!(" at {}", describe_point(p)));
        let survive = if written > 0 {
            format!(" ({kept} of {written} unsynced writes survive)")
        } else {
            String::new()
        };
        self.out.push(format!("n{id} crashes{at}{survive}"));
        self.invariants
            .check_durability(&self.disks())
            .map_err(|e| format!("VIOLATION: {e}"))
    }

    fn disks(&self) -> Vec<DurableLog<'_>> {
        self.nodes
            .iter()
            .map(|(&id, n)| n.disk.durable(id))
            .collect()
    }

    /// One turn of node `id` on `batch`, and its effects printed.
    fn turn(&mut self, id: NodeId, batch: Vec<Input<Requester>>) -> Result<(), String> {
        let before = self.nodes[&id].replica.as_ref().map(Look::of);
        self.turn_from(id, batch, before)
    }

    /// [`turn`](Self::turn), reporting changes against `before`.
    fn turn_from(
        &mut self,
        id: NodeId,
        batch: Vec<Input<Requester>>,
        before: Option<Look>,
    ) -> Result<(), String> {
        let armed = self.armed.remove(&id);
        let node = self.nodes.get_mut(&id).expect("known node");
        let disk_before = self.show_disk.then(|| {
            let log = node.disk.log().iter().map(|e| (e.index, e.term)).collect();
            (node.disk.hard_state, log)
        });
        let output = node.turn(batch, armed.map(|a| a.0), &mut self.invariants);
        let synced = disk_before.and_then(|b| describe_synced(&b, node));
        let after = node.replica.as_ref().map(Look::of);
        if let Some(e) = output.violation {
            return Err(format!("VIOLATION: {e}"));
        }
        for v in &output.refused {
            self.out
                .push(format!("n{id} ✗ protocol violation from n{}: {v}", v.from));
        }
        if output.campaign_refused {
            let term = after.map_or(0, |a| a.term);
            self.out.push(format!(
                "n{id} does not campaign: term {term} is the highest there may be"
            ));
        }
        let mut commit = None;
        if let (Some(b), Some(a)) = (before, after) {
            if a.role != b.role {
                self.out.push(format!(
                    "n{id}@{} {} → {}",
                    a.term,
                    b.role.as_str(),
                    a.role.as_str()
                ));
            } else if a.term != b.term {
                self.out.push(format!(
                    "n{id}@{} {}, term was {}",
                    a.term,
                    a.role.as_str(),
                    b.term
                ));
            }
            if a.commit != b.commit {
                commit = Some(format!("n{id}@{} commit={}", a.term, a.commit));
            }
        }
        // A leader's messages leave before its own sync, and it counts its own copy toward
        // a commit only after it: its sync line comes after its messages, and a commit it
        // reached in a turn that synced comes after that. Anyone else syncs first.
        let leading = after.is_some_and(|a| a.role == Role::Leader);
        let commit_after_sync = leading && synced.is_some();
        if !commit_after_sync {
            self.out.extend(commit.take());
        }
        if !leading {
            self.out.extend(synced.clone());
        }
        for m in output.messages {
            self.out.push(m.to_string());
            self.in_flight.push(m);
        }
        if leading {
            self.out.extend(synced);
        }
        self.out.extend(commit);
        for (to, outcome) in output.replies {
            let Requester::Script(number) = to else {
                continue;
            };
            let what = self.requests.remove(&number).unwrap_or_default();
            self.out.push(format!(
                "n{id} → client: {what} → {}",
                describe_outcome(&outcome)
            ));
        }
        if let Some(point) = output.crashed {
            self.crash_now(id, Some(point), armed.map_or(0, |a| a.1))?;
        } else if let Some((p, keep)) = armed {
            // The turn never reached that point: keep it armed for the next one.
            self.armed.insert(id, (p, keep));
        }
        if let Some(snapshot) = output.save {
            // Saving takes no time here: the snapshot is durable at once, and the
            // replica hears so in a turn of its own.
            let meta = snapshot.meta;
            let node = self.nodes.get_mut(&id).expect("known node");
            node.saved(snapshot, &mut self.invariants)
                .map_err(|e| format!("VIOLATION: {e}"))?;
            let before = node.replica.as_ref().map(|r| r.node().log().first_index());
            self.turn(id, vec![Input::SnapshotSaved(meta)])?;
            let node = &self.nodes[&id];
            let after = node.replica.as_ref().map(|r| r.node().log().first_index());
            let compacted = match (before, after) {
                (Some(b), Some(a)) if a > b => format!("; log compacted, now from {a}"),
                _ => String::new(),
            };
            self.out.push(format!(
                "n{id} saved snapshot {}{compacted}",
                Pos(meta.index, meta.term)
            ));
        }
        Ok(())
    }

    /// The nodes named, or every node when none is.
    fn these_or_all(&self, ids: &[NodeId]) -> Vec<NodeId> {
        if ids.is_empty() {
            self.ids.clone()
        } else {
            ids.to_vec()
        }
    }

    fn status(&mut self, ids: &[NodeId]) -> Result<(), String> {
        let ids = self.these_or_all(ids);
        for id in ids {
            let node = self.node(id)?;
            let line = match &node.replica {
                Some(r) => {
                    let n = r.node();
                    let leader = n.leader().map_or("-".into(), |l| format!("n{l}"));
                    let vote = n
                        .hard_state()
                        .voted_for
                        .map_or("-".into(), |v| format!("n{v}"));
                    let snapshot = match n.snapshot() {
                        s if s.index == 0 => String::new(),
                        s => format!(" snapshot={}", Pos(s.index, s.term)),
                    };
                    let sessions = match r.store().sessions() {
                        0 => String::new(),
                        k => format!(" sessions={k}"),
                    };
                    format!(
                        "n{id}@{} {} leader={leader} vote={vote} last={} commit={} applied={}{snapshot}{sessions}",
                        n.term(),
                        n.role().as_str(),
                        Pos(n.last_index(), n.log().last_term()),
                        n.commit_index(),
                        n.applied_index()
                    )
                }
                None => {
                    let d = &node.disk;
                    let last = Pos(d.last_index(), d.term(d.last_index()).unwrap_or(0));
                    format!(
                        "n{id} down (on disk: term={} vote={} last={last})",
                        d.hard_state.term,
                        d.hard_state
                            .voted_for
                            .map_or("-".into(), |v| format!("n{v}"))
                    )
                }
            };
            self.out.push(line);
        }
        Ok(())
    }

    fn logs(&mut self, ids: &[NodeId]) -> Result<(), String> {
        let ids = self.these_or_all(ids);
        for id in ids {
            let node = self.node(id)?;
            let (entries, commit, base): (Vec<Entry>, u64, u64) = match &node.replica {
                Some(r) => {
                    let n = r.node();
                    (
                        (n.log().first_index()..=n.last_index())
                            .filter_map(|i| n.log().get(i).cloned())
                            .collect(),
                        n.commit_index(),
                        n.log().base().index,
                    )
                }
                None => (
                    node.disk.log().to_vec(),
                    0,
                    node.disk.log().first().map_or(0, |e| e.index - 1),
                ),
            };
            let describe = |es: &[Entry]| -> String {
                es.iter()
                    .map(|e| format!("{} {}", Pos(e.index, e.term), describe_entry(e)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let body = if entries.is_empty() {
                "(empty)".into()
            } else if !node.is_up() {
                describe(&entries)
            } else {
                // `|` marks the commit point, even at either end.
                let at = commit.saturating_sub(base) as usize;
                let (committed, rest) = entries.split_at(at.min(entries.len()));
                [describe(committed), describe(rest)]
                    .join(" | ")
                    .trim()
                    .to_string()
            };
            let down = if node.is_up() { "" } else { " (down, on disk)" };
            let compacted = if base > 0 {
                format!("[compacted ..{base}] ")
            } else {
                String::new()
            };
            self.out.push(format!("n{id}{down}: {compacted}{body}"));
        }
        Ok(())
    }
}

/// One round of a campaign seen by `elect`: a pre-vote or a vote for one term.
struct Round {
    kind: &'static str,
    /// The term asked for.
    term: Term,
    /// Who was asked, and why no answer could come back (down, link cut).
    asked: Vec<(NodeId, Option<&'static str>)>,
    /// Answers in arrival order: voter, granted, the term its answer carried.
    answers: Vec<(NodeId, bool, Term)>,
}

impl Round {
    fn new(kind: &'static str, term: Term) -> Round {
        Round {
            kind,
            term,
            asked: Vec::new(),
            answers: Vec::new(),
        }
    }

    /// `pre-vote` or `vote` for election messages, `None` for the others.
    fn kind(m: &Message) -> Option<&'static str> {
        match m.body {
            Body::PreVote { .. } | Body::PreVoteResponse { .. } => Some("pre-vote"),
            Body::Vote { .. } | Body::VoteResponse { .. } => Some("vote"),
            _ => None,
        }
    }

    /// `n3 vote for term 2: granted by n2; refused by n4; no answer from n1 (down)`.
    fn describe(&self, candidate: NodeId) -> String {
        let mut parts = Vec::new();
        let yes: Vec<String> = self
            .answers
            .iter()
            .filter(|a| a.1)
            .map(|a| format!("n{}", a.0))
            .collect();
        if !yes.is_empty() {
            parts.push(format!("granted by {}", yes.join(" ")));
        }
        // A voter already in the term asked for (a later one, for a vote) refused for
        // that reason alone; say so.
        let blocked = |t: Term| {
            if self.kind == "pre-vote" {
                t >= self.term
            } else {
                t > self.term
            }
        };
        let no: Vec<String> = self
            .answers
            .iter()
            .filter(|a| !a.1)
            .map(|&(v, _, t)| {
                if blocked(t) {
                    format!("n{v} (in term {t})")
                } else {
                    format!("n{v}")
                }
            })
            .collect();
        if !no.is_empty() {
            parts.push(format!("refused by {}", no.join(" ")));
        }
        let silent: Vec<String> = self
            .asked
            .iter()
            .filter(|(v, _)| !self.answers.iter().any(|a| a.0 == *v))
            .map(|(v, why)| match why {
                Some(why) => format!("n{v} ({why})"),
                None => format!("n{v}"),
            })
            .collect();
        if !silent.is_empty() {
            parts.push(format!("no answer from {}", silent.join(" ")));
        }
        format!(
            "n{candidate} {} for term {}: {}",
            self.kind,
            self.term,
            parts.join("; ")
        )
    }
}

/// What a turn may change that the script reports.
#[derive(Clone, Copy)]
struct Look {
    role: Role,
    term: Term,
    commit: u64,
}

impl Look {
    fn of(r: &crate::replica::Replica<Requester>) -> Look {
        Look {
            role: r.role(),
            term: r.node().term(),
            commit: r.node().commit_index(),
        }
    }
}

/// Prints each repeated line once, where it first appeared, with `×N` after it.
fn collapse_repeats(lines: &mut Vec<String>) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines.iter() {
        *counts.entry(l.clone()).or_default() += 1;
    }
    let mut seen = std::collections::BTreeSet::new();
    lines.retain(|l| seen.insert(l.clone()));
    for l in lines.iter_mut() {
        let n = counts[l.as_str()];
        if n > 1 {
            l.push_str(&format!("  ×{n}"));
        }
    }
}

/// What a turn made durable: the new term and vote, and the entries on disk that were
/// not there (at that index, with that term) before the turn.
fn describe_synced(
    before: &(crate::raft::HardState, BTreeMap<u64, Term>),
    after: &SimNode,
) -> Option<String> {
    let (hs, log) = before;
    let mut parts = Vec::new();
    let now = after.disk.hard_state;
    if now != *hs {
        let vote = now.voted_for.map_or("-".into(), |v| format!("n{v}"));
        parts.push(format!("term={} vote={vote}", now.term));
    }
    let written: Vec<Pos> = after
        .disk
        .log()
        .iter()
        .filter(|e| log.get(&e.index) != Some(&e.term))
        .map(|e| Pos(e.index, e.term))
        .collect();
    match written[..] {
        [] => {}
        [one] => parts.push(format!("{one}")),
        [first, .., last] => parts.push(format!("{first}..{last}")),
    }
    (!parts.is_empty()).then(|| format!("n{} synced {}", after.id, parts.join(", ")))
}

fn matches(m: &Message, to: Option<NodeId>, from: Option<NodeId>) -> bool {
    to.is_none_or(|t| m.to == t) && from.is_none_or(|f| m.from == f)
}

fn describe_point(p: CrashPoint) -> String {
    match p {
        CrashPoint::BeforeSync => "before-sync".into(),
        CrashPoint::AfterSync => "after-sync".into(),
        CrashPoint::BeforeMessage(k) => format!("message={k}"),
    }
}

fn describe_entry(e: &Entry) -> String {
    match &e.payload {
        Payload::Noop => "noop".into(),
        Payload::Command(c) => match &c.op {
            WriteOp::Put { value } => format!("put {}={value}", c.key),
            WriteOp::Append { value } => format!("append {}={value}", c.key),
            WriteOp::Delete => format!("delete {}", c.key),
            WriteOp::Register => "register".into(),
        },
    }
}

fn describe_outcome(o: &Outcome) -> String {
    match o {
        Outcome::Value(Some(v)) => format!("{v:?}"),
        Outcome::Value(None) => "(missing)".into(),
        Outcome::Written => "ok".into(),
        Outcome::Registered(n) => format!("session {n}"),
        Outcome::Failed { code, leader, .. } => match leader {
            Some(l) => format!("{} (leader n{l})", code.as_str()),
            None => code.as_str().to_string(),
        },
    }
}
