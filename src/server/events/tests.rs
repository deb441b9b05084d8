use std::{
    sync::{atomic::AtomicUsize, Arc},
    thread,
    time::{Duration, Instant},
};

use super::*;
use crate::raft::Entry;

fn bus() -> Arc<EventBus> {
    let member = |id: NodeId| NodeSpec {
        id,
        raft: format!("127.0.0.1:700{id}"),
        client: format!("127.0.0.1:800{id}"),
        http: None,
    };
    Arc::new(EventBus::new(1, vec![member(1), member(2), member(3)]))
}

fn commit(index: Index) -> What {
    What::Commit { index }
}

/// Everything queued for `s` now.
fn drain(s: &Subscription) -> Vec<What> {
    std::iter::from_fn(|| s.try_next())
        .map(|e| e.what.clone())
        .collect()
}

#[test]
fn an_inactive_bus_builds_nothing() {
    let bus = bus();
    let built = AtomicUsize::new(0);
    let build = || {
        built.fetch_add(1, Ordering::Relaxed);
        commit(1)
    };
    assert!(!bus.active());
    emit!(bus, build());
    assert_eq!(
        built.load(Ordering::Relaxed),
        0,
        "built with nobody watching"
    );
    let s = bus.subscribe(Watcher::Stream, 8).unwrap();
    emit!(bus, build());
    assert_eq!(built.load(Ordering::Relaxed), 1);
    drop(s);
    assert!(!bus.active(), "the last subscriber left");
    emit!(bus, build());
    assert_eq!(built.load(Ordering::Relaxed), 1);
}

#[test]
fn a_slow_subscriber_loses_events_and_is_told_how_many_where_they_went_missing() {
    let bus = bus();
    let slow = bus.subscribe(Watcher::Stream, 4).unwrap();
    let fast = bus.subscribe(Watcher::Stream, 64).unwrap();
    for i in 1..=10 {
        bus.emit(commit(i));
    }
    assert_eq!(drain(&slow), (1..=4).map(commit).collect::<Vec<_>>());
    assert_eq!(
        drain(&fast).len(),
        10,
        "one slow subscriber costs the others nothing"
    );
    bus.emit(commit(11));
    assert_eq!(drain(&slow), [What::Dropped { count: 6 }, commit(11)]);
    bus.emit(commit(12));
    assert_eq!(drain(&slow), [commit(12)], "told once");
}

#[test]
fn a_gap_that_finds_no_room_either_is_counted_with_the_rest() {
    let bus = bus();
    let slow = bus.subscribe(Watcher::Stream, 2).unwrap();
    for i in 1..=5 {
        bus.emit(commit(i)); // 3 lost
    }
    assert_eq!(drain(&slow).len(), 2);
    bus.emit(commit(6)); // the gap goes in, then 6
    bus.emit(commit(7)); // full: lost
    assert_eq!(drain(&slow), [What::Dropped { count: 3 }, commit(6)]);
    bus.emit(commit(8));
    assert_eq!(drain(&slow), [What::Dropped { count: 1 }, commit(8)]);
}

#[test]
fn emitting_never_waits_for_a_subscriber_that_never_reads() {
    let bus = bus();
    let _stalled = bus.subscribe(Watcher::Stream, 16).unwrap();
    let _trace = bus.subscribe(Watcher::Trace, 16).unwrap();
    let started = Instant::now();
    let emitters: Vec<_> = (0..4)
        .map(|_| {
            let bus = Arc::clone(&bus);
            thread::spawn(move || {
                for i in 0..50_000 {
                    emit!(bus, commit(i));
                }
            })
        })
        .collect();
    for e in emitters {
        e.join().unwrap();
    }
    // 200,000 events, each offered to two full queues: a blocked send would hang here.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let lost: u64 = bus
        .subscribers
        .read()
        .iter()
        .map(|s| s.lost.load(Ordering::Relaxed))
        .sum();
    assert_eq!(lost, 2 * (200_000 - 16));
}

#[test]
fn streams_are_capped_the_trace_is_not_and_shutdown_ends_only_streams() {
    let bus = bus();
    let trace = bus.subscribe(Watcher::Trace, 8).unwrap();
    let mut streams: Vec<_> = (0..MAX_STREAMS)
        .map(|_| bus.subscribe(Watcher::Stream, 8).unwrap())
        .collect();
    assert!(bus.subscribe(Watcher::Stream, 8).is_none());
    streams.pop();
    let last = bus
        .subscribe(Watcher::Stream, 8)
        .expect("a place was freed");
    bus.emit(commit(1));
    bus.end_streams();
    assert_eq!(
        last.next(Duration::ZERO).map(|e| e.what.clone()),
        Ok(commit(1))
    );
    assert_eq!(last.next(Duration::ZERO).err(), Some(NoEvent::Ended));
    bus.emit(commit(2));
    assert_eq!(drain(&trace), [commit(1), commit(2)]);
    bus.end_all();
    assert!(!bus.active());
    assert_eq!(trace.next(Duration::ZERO).err(), Some(NoEvent::Ended));
}

#[test]
fn requests_are_numbered_and_their_reply_says_how_long_they_took() {
    let bus = bus();
    let s = bus.subscribe(Watcher::Stream, 8).unwrap();
    let get = ClientOp::Get {
        key: "k".into(),
        stale: true,
    };
    let first = bus.request(&get, Via::Http);
    let second = bus.request(&ClientOp::Register, Via::Line);
    assert_eq!((first.req, second.req), (1, 2));
    bus.reply(second, Some(ErrorCode::NotLeader));
    let events = drain(&s);
    assert_eq!(
        events[0],
        What::Request {
            req: 1,
            op: "get",
            key: Some("k".into()),
            stale: true,
            via: Via::Http
        }
    );
    assert_eq!(
        events[1],
        What::Request {
            req: 2,
            op: "register",
            key: None,
            stale: false,
            via: Via::Line
        }
    );
    assert!(matches!(
        events[2],
        What::Reply {
            req: 2,
            ok: false,
            error: Some("not_leader"),
            ..
        }
    ));
}

fn append(term: Term, entries: &[Index], commit: Index, read_round: u64) -> Message {
    let entries = entries
        .iter()
        .map(|&index| Entry {
            index,
            term,
            payload: crate::raft::Payload::Noop,
        })
        .collect();
    Message {
        from: 1,
        to: 2,
        term,
        body: Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries,
            commit,
            read_round,
        },
    }
}

fn answer(term: Term, matched: Index, read_round: u64) -> Message {
    Message {
        from: 2,
        to: 1,
        term,
        body: Body::AppendResponse {
            result: AppendResult::Match(matched),
            read_round,
        },
    }
}

#[test]
fn plain_heartbeats_are_those_that_carry_no_news() {
    let mut beats = Beats::default();
    assert!(!beats.is_plain(&append(1, &[1, 2], 0, 0)), "entries");
    assert!(beats.is_plain(&append(1, &[], 0, 0)));
    assert!(!beats.is_plain(&append(1, &[], 2, 0)), "a higher commit");
    assert!(beats.is_plain(&append(1, &[], 2, 0)));
    assert!(!beats.is_plain(&append(1, &[], 2, 1)), "a new read round");
    assert!(beats.is_plain(&append(1, &[], 2, 1)));
    assert!(!beats.is_plain(&append(2, &[], 2, 1)), "a new term");

    let mut beats = Beats::default();
    assert!(!beats.is_plain(&answer(1, 2, 0)), "acknowledges entries");
    assert!(beats.is_plain(&answer(1, 2, 0)));
    assert!(!beats.is_plain(&answer(1, 2, 1)), "answers a read round");
    assert!(beats.is_plain(&answer(1, 1, 1)));
}

#[test]
fn heartbeats_are_summed_per_peer_at_most_once_an_interval() {
    let bus = bus();
    let s = bus.subscribe(Watcher::Stream, 64).unwrap();
    let mut sent = Beats::default();
    let mut received = Beats::default();
    let heartbeat = append(1, &[], 0, 0);
    for _ in 0..5 {
        bus.message(Way::Sent, &heartbeat, &mut sent);
        bus.message(Way::Received, &answer(1, 0, 0), &mut received);
    }
    assert!(
        drain(&s).is_empty(),
        "the first heartbeat starts the interval"
    );
    thread::sleep(HEARTBEAT_SUMMARY);
    bus.message(Way::Sent, &heartbeat, &mut sent);
    assert_eq!(
        drain(&s),
        [What::Heartbeats {
            peer: 2,
            sent: 6,
            received: 5
        }]
    );
    bus.message(Way::Sent, &heartbeat, &mut sent);
    assert!(drain(&s).is_empty(), "the next summary waits an interval");
    bus.heartbeat(9, Way::Sent); // not a member: ignored
    assert!(drain(&s).is_empty());
}
