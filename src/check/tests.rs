//! The checker's tests: histories that must pass, histories that must fail (each a small
//! story of what went wrong), the limits, and randomized histories checked against a
//! brute-force enumeration and a plain memoized search that share none of its shortcuts.

use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

// ---- building histories -----------------------------------------------------------

fn op(client: u64, kind: KvOp, invoke: u64, complete: Option<u64>) -> Operation {
    Operation {
        client,
        key: "k".into(),
        op: kind,
        invoke,
        complete,
        read: None,
    }
}

fn put(client: u64, value: &str, invoke: u64, complete: u64) -> Operation {
    op(client, KvOp::Put(value.into()), invoke, Some(complete))
}

fn append(client: u64, value: &str, invoke: u64, complete: u64) -> Operation {
    op(client, KvOp::Append(value.into()), invoke, Some(complete))
}

fn delete(client: u64, invoke: u64, complete: u64) -> Operation {
    op(client, KvOp::Delete, invoke, Some(complete))
}

fn get(client: u64, read: Option<&str>, invoke: u64, complete: u64) -> Operation {
    Operation {
        read: read.map(str::to_string),
        ..op(client, KvOp::Get, invoke, Some(complete))
    }
}

/// A write (or read) whose outcome is unknown: invoked at `invoke`, never answered.
fn unknown(client: u64, kind: KvOp, invoke: u64) -> Operation {
    op(client, kind, invoke, None)
}

fn on(key: &str, operation: Operation) -> Operation {
    Operation {
        key: key.into(),
        ..operation
    }
}

#[track_caller]
fn assert_linearizable(history: &[Operation]) {
    if let Err(violation) = check(history) {
        panic!("expected a linearizable history, got:\n{violation}");
    }
}

/// Asserts the history is refuted (not merely given up on or malformed).
#[track_caller]
fn assert_violation(history: &[Operation]) -> Violation {
    match check(history) {
        Ok(()) => panic!("expected a violation, but the history passed: {history:#?}"),
        Err(violation) => {
            assert!(
                violation.message.starts_with("No linearization exists"),
                "expected a refutation, got:\n{violation}"
            );
            violation
        }
    }
}

// ---- histories that must pass -----------------------------------------------------

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(check_with_limit(&[], 0), Ok(CheckOutcome::Linearizable));
    assert_linearizable(&[]);
}

#[test]
fn sequential_put_get_append_delete_history_passes() {
    assert_linearizable(&[
        get(1, None, 0, 1),
        put(1, "a", 2, 3),
        get(2, Some("a"), 4, 5),
        append(1, "b", 6, 7),
        get(3, Some("ab"), 8, 9),
        put(2, "c", 10, 11),
        get(1, Some("c"), 12, 13),
        delete(3, 14, 15),
        get(2, None, 16, 17),
        put(1, "d", 18, 19),
        get(1, Some("d"), 20, 21),
    ]);
}

#[test]
fn append_to_missing_key_starts_from_empty_string() {
    assert_linearizable(&[append(1, "x", 0, 1), get(1, Some("x"), 2, 3)]);
    assert_linearizable(&[
        put(1, "old", 0, 1),
        delete(1, 2, 3),
        append(2, "x", 4, 5),
        append(3, "y", 6, 7),
        get(1, Some("xy"), 8, 9),
    ]);
}

#[test]
fn empty_string_value_is_not_the_same_as_absent() {
    assert_linearizable(&[put(1, "", 0, 1), get(1, Some(""), 2, 3)]);
    assert_violation(&[put(1, "", 0, 1), get(1, None, 2, 3)]);
    assert_violation(&[get(1, Some(""), 0, 1)]);
}

#[test]
fn concurrent_puts_may_take_effect_in_either_order() {
    // Both puts overlap; later reads agree on one order — either one.
    for (first, last) in [("a", "b"), ("b", "a")] {
        assert_linearizable(&[
            put(1, "a", 0, 10),
            put(2, "b", 5, 15),
            get(3, Some(first), 6, 8),
            get(3, Some(last), 20, 21),
            get(1, Some(last), 22, 23),
        ]);
    }
}

#[test]
fn read_overlapping_a_write_may_see_old_or_new_value() {
    for seen in ["old", "new"] {
        assert_linearizable(&[
            put(1, "old", 0, 1),
            put(2, "new", 10, 20),
            get(3, Some(seen), 12, 18),
            get(3, Some("new"), 21, 22),
        ]);
    }
}

#[test]
fn concurrent_appends_may_apply_in_either_order() {
    for seen in ["xy", "yx"] {
        assert_linearizable(&[
            append(1, "x", 0, 10),
            append(2, "y", 0, 10),
            get(3, Some(seen), 11, 12),
            get(1, Some(seen), 13, 14),
        ]);
    }
}

#[test]
fn ops_that_only_touch_at_one_instant_count_as_concurrent() {
    // The put completes at 10 and the read is invoked at 10: closed intervals overlap,
    // so the read may still be ordered first.
    assert_linearizable(&[put(1, "a", 0, 10), get(2, None, 10, 12)]);
}

#[test]
fn interleaved_keys_are_checked_independently() {
    assert_linearizable(&[
        on("x", put(1, "1", 0, 10)),
        on("y", put(2, "1", 0, 10)),
        on("x", get(3, Some("1"), 11, 12)),
        on("y", get(3, None, 5, 8)),
        on("y", get(4, Some("1"), 11, 12)),
    ]);
}

// ---- unknown outcomes ---------------------------------------------------------------

#[test]
fn unknown_outcome_write_may_have_taken_effect() {
    assert_linearizable(&[
        put(1, "a", 0, 10),
        unknown(2, KvOp::Put("b".into()), 5),
        get(3, Some("b"), 20, 30),
    ]);
}

#[test]
fn unknown_outcome_write_may_never_have_taken_effect() {
    assert_linearizable(&[
        put(1, "a", 0, 10),
        unknown(2, KvOp::Put("b".into()), 5),
        get(3, Some("a"), 20, 30),
    ]);
    assert_linearizable(&[
        put(1, "a", 0, 10),
        unknown(2, KvOp::Append("b".into()), 5),
        unknown(2, KvOp::Delete, 6),
        get(3, Some("a"), 20, 30),
        get(3, Some("a"), 40, 50),
    ]);
}

#[test]
fn unknown_outcome_write_may_take_effect_long_after_its_client_gave_up() {
    assert_linearizable(&[
        put(1, "a", 0, 10),
        unknown(2, KvOp::Append("b".into()), 5),
        get(3, Some("a"), 20, 30),
        get(3, Some("a"), 40, 50),
        get(3, Some("ab"), 60, 70),
    ]);
}

#[test]
fn unknown_outcome_get_is_ignored() {
    let mut lost_read = unknown(2, KvOp::Get, 2);
    lost_read.read = Some("never written".into());
    assert_linearizable(&[put(1, "a", 0, 1), lost_read, get(3, Some("a"), 5, 6)]);
}

// ---- histories that must fail -----------------------------------------------------

#[test]
fn read_of_value_written_only_after_the_read_completed_fails() {
    assert_violation(&[get(1, Some("a"), 0, 10), put(2, "a", 11, 20)]);
}

#[test]
fn stale_read_after_newer_write_completed_fails() {
    assert_violation(&[
        put(1, "old", 0, 10),
        put(1, "new", 20, 30),
        get(2, Some("old"), 40, 50),
    ]);
}

#[test]
fn two_reads_seeing_concurrent_appends_in_opposite_orders_fail() {
    assert_violation(&[
        append(1, "x", 0, 10),
        append(2, "y", 0, 10),
        get(3, Some("xy"), 20, 30),
        get(4, Some("yx"), 20, 30),
    ]);
}

#[test]
fn append_applied_twice_fails() {
    assert_violation(&[append(1, "a", 0, 10), get(2, Some("aa"), 20, 30)]);
    // Retried without an answer, then acknowledged: still only one append was sent.
    assert_violation(&[
        unknown(1, KvOp::Append("a".into()), 0),
        get(2, Some("a"), 5, 6),
        get(2, Some("aa"), 20, 30),
    ]);
}

#[test]
fn read_after_a_completed_delete_that_still_sees_the_value_fails() {
    assert_violation(&[
        put(1, "a", 0, 10),
        delete(1, 20, 30),
        get(2, Some("a"), 40, 50),
    ]);
}

#[test]
fn read_of_a_value_nobody_wrote_fails() {
    assert_violation(&[
        put(1, "a", 0, 10),
        put(2, "b", 5, 15),
        get(3, Some("c"), 0, 20),
    ]);
}

#[test]
fn append_to_missing_key_that_does_not_start_from_empty_fails() {
    assert_violation(&[append(1, "b", 0, 10), get(2, Some("ab"), 20, 30)]);
}

#[test]
fn value_flipping_back_between_sequential_reads_fails() {
    // The write overlaps both reads, but once a read saw it, a later read cannot
    // un-see it.
    assert_violation(&[
        put(1, "old", 0, 1),
        put(2, "new", 10, 100),
        get(3, Some("new"), 20, 30),
        get(3, Some("old"), 40, 50),
    ]);
}

#[test]
fn read_cannot_see_an_unknown_outcome_write_before_its_invoke() {
    assert_violation(&[
        get(1, Some("b"), 0, 10),
        unknown(2, KvOp::Put("b".into()), 20),
        get(1, Some("b"), 30, 40),
    ]);
    assert_violation(&[
        get(1, Some("b"), 0, 10),
        unknown(2, KvOp::Put("b".into()), 20),
    ]);
}

#[test]
fn unknown_outcome_write_cannot_be_seen_then_unseen() {
    assert_violation(&[
        put(1, "a", 0, 1),
        unknown(2, KvOp::Append("x".into()), 2),
        get(3, Some("ax"), 10, 20),
        get(3, Some("a"), 30, 40),
    ]);
}

#[test]
fn violation_names_the_broken_key_among_many() {
    let violation = check(&[
        on("a", put(1, "1", 0, 10)),
        on("a", get(2, Some("1"), 11, 12)),
        on("b", put(1, "1", 0, 10)),
        on("b", get(2, None, 11, 12)),
        on("c", get(2, None, 11, 12)),
    ])
    .unwrap_err();
    assert_eq!(violation.key, "b");
}

#[test]
fn violation_message_lists_the_ops_and_the_longest_linearizable_prefix() {
    let violation = assert_violation(&[
        put(7, "a", 0, 10),
        append(8, "b", 20, 30),
        get(9, Some("a"), 40, 50),
        unknown(6, KvOp::Get, 45),
    ]);
    let text = violation.to_string();
    // The append cannot come before the read (it would see "ab") nor after it (it
    // completed first), so the longest prefix stops before the append.
    for expected in [
        "key \"k\"",
        "The key has 4 operations: 3 completed",
        "Longest linearizable prefix found: 1 op (1 of 3 completed ones)",
        "1. op 0: client 7 put \"a\" [0, 10]",
        "value after it: \"a\"",
        "Stuck at op 1: client 8 append \"b\" [20, 30]",
        "op 2: client 9 get -> \"a\" [40, 50]",
        "op 3: client 6 get (no reply) [45, ∞) outcome unknown (left out",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn op_completing_before_its_invoke_is_reported_not_a_panic() {
    let violation = check(&[put(1, "a", 10, 5)]).unwrap_err();
    assert!(violation.message.contains("invalid history"), "{violation}");
}

// ---- limits -------------------------------------------------------------------------

#[test]
fn check_with_limit_gives_up_when_the_search_exceeds_the_limit() {
    let history = [
        put(1, "a", 0, 1),
        append(1, "b", 2, 3),
        get(2, Some("ab"), 4, 5),
        delete(1, 6, 7),
    ];
    assert_eq!(check_with_limit(&history, 1), Ok(CheckOutcome::GaveUp));
    assert_eq!(
        check_with_limit(&history, 100),
        Ok(CheckOutcome::Linearizable)
    );
}

#[test]
fn check_treats_giving_up_as_an_error_not_a_pass() {
    let history = [
        put(1, "a", 0, 1),
        get(2, Some("a"), 2, 3),
        get(2, Some("a"), 4, 5),
    ];
    let violation = check_strict(&history, 1).unwrap_err();
    assert_eq!(violation.key, "k");
    assert!(violation.message.contains("gave up"), "{violation}");
}

#[test]
fn concurrent_appends_are_ordered_by_the_next_read_not_by_trying_every_order() {
    // Twelve concurrent appends then a read showing them in reverse: without the read
    // lookahead the search would try the appends' orders one by one (12! of them).
    let mut history: Vec<Operation> = (0..12)
        .map(|c| append(c, &format!("<{c}>"), 0, 100))
        .collect();
    let all: String = (0..12).rev().map(|c| format!("<{c}>")).collect();
    history.push(get(99, Some(&all), 101, 102));
    assert_eq!(
        check_with_limit(&history, 1_000),
        Ok(CheckOutcome::Linearizable)
    );
}

#[test]
fn unknown_writes_nobody_saw_do_not_multiply_the_search() {
    // Forty timed-out writes that never happened, interleaved with reads.
    let mut history = vec![put(0, "base", 0, 1)];
    for i in 0..40u64 {
        history.push(unknown(
            1 + i,
            KvOp::Append(format!("<lost {i}>")),
            2 + 10 * i,
        ));
        history.push(unknown(
            1 + i,
            KvOp::Put(format!("<lost put {i}>")),
            3 + 10 * i,
        ));
        history.push(get(100, Some("base"), 5 + 10 * i, 8 + 10 * i));
    }
    assert_eq!(
        check_with_limit(&history, 1_000),
        Ok(CheckOutcome::Linearizable)
    );
}

// ---- randomized ---------------------------------------------------------------------

/// A history from a real sequential execution: each client issues ops one after
/// another; each op takes effect at a random instant inside its interval (an
/// unknown-outcome write at a random instant after its invoke — possibly after its
/// client gave up — or never), and reads return the value at their instant.
///
/// Written values are unique unless `tokens` is non-empty, in which case they are drawn
/// from it, so that different writes collide and appends combine ambiguously.
fn generate(
    rng: &mut StdRng,
    keys: &[&str],
    clients: u64,
    ops_per_client: usize,
    unknown_rate: f64,
    tokens: &[&str],
) -> Vec<Operation> {
    let mut history = Vec::new();
    let mut effects = Vec::new(); // (instant, history index)
    for client in 0..clients {
        let mut now = rng.gen_range(0..20u64);
        for n in 0..ops_per_client {
            let invoke = now + rng.gen_range(1..=20);
            let duration = rng.gen_range(0..=60);
            let key = keys[rng.gen_range(0..keys.len())].to_string();
            let token = match tokens.len() {
                0 => None,
                len => Some(tokens[rng.gen_range(0..len)].to_string()),
            };
            let kind = match rng.gen_range(0..100) {
                0..=39 => KvOp::Get,
                40..=64 => KvOp::Put(token.unwrap_or_else(|| format!("<p{client}.{n}>"))),
                65..=89 => KvOp::Append(token.unwrap_or_else(|| format!("<a{client}.{n}>"))),
                _ => KvOp::Delete,
            };
            let lost = rng.gen_bool(unknown_rate);
            let index = history.len();
            if lost {
                if kind != KvOp::Get && rng.gen_bool(0.5) {
                    effects.push((invoke + rng.gen_range(0..=200), index));
                }
                now = invoke + duration;
                let read = (kind == KvOp::Get).then(|| "<garbage>".to_string());
                history.push(Operation {
                    client,
                    key,
                    op: kind,
                    invoke,
                    complete: None,
                    read,
                });
            } else {
                let complete = invoke + duration;
                effects.push((rng.gen_range(invoke..=complete), index));
                now = complete;
                history.push(Operation {
                    client,
                    key,
                    op: kind,
                    invoke,
                    complete: Some(complete),
                    read: None,
                });
            }
        }
    }
    effects.sort_unstable();
    let mut map: HashMap<String, String> = HashMap::new();
    for (_, index) in effects {
        let operation = &mut history[index];
        match &operation.op {
            KvOp::Get => operation.read = map.get(&operation.key).cloned(),
            KvOp::Put(v) => {
                map.insert(operation.key.clone(), v.clone());
            }
            KvOp::Append(v) => map.entry(operation.key.clone()).or_default().push_str(v),
            KvOp::Delete => {
                map.remove(&operation.key);
            }
        }
    }
    history
}

/// Finds a read that must not see `put v`: a completed put `w1` of `v`, then a
/// completed put or delete `w2` invoked after `w1` completed, then a completed read
/// invoked after `w2` completed. Values are unique and none is a prefix of another, so
/// in every linearization the read's value does not start with `v`.
fn stale_read(history: &[Operation]) -> Option<(usize, String)> {
    let completed = |o: &&Operation| o.complete.is_some();
    for w1 in history.iter().filter(completed) {
        let (KvOp::Put(v), Some(c1)) = (&w1.op, w1.complete) else {
            continue;
        };
        for w2 in history.iter().filter(completed) {
            let Some(c2) = w2.complete else { continue };
            if w2.key != w1.key || w2.invoke <= c1 || !matches!(w2.op, KvOp::Put(_) | KvOp::Delete)
            {
                continue;
            }
            let read = history.iter().position(|r| {
                r.key == w1.key && r.op == KvOp::Get && r.complete.is_some() && r.invoke > c2
            });
            if let Some(read) = read {
                return Some((read, v.clone()));
            }
        }
    }
    None
}

#[test]
fn random_histories_from_real_executions_pass_and_fail_once_a_read_is_corrupted() {
    let mut rng = StdRng::seed_from_u64(0x11ea_41ab);
    for round in 0..20 {
        let history = generate(&mut rng, &["x", "y", "z"], 8, 60, 0.1, &[]);
        if let Err(violation) = check(&history) {
            panic!("round {round}: a real execution was refuted:\n{violation}");
        }

        let (read, stale) = stale_read(&history).expect("the history has a stale-read spot");
        let mut corrupted = history.clone();
        corrupted[read].read = Some(stale);
        let violation = assert_violation(&corrupted);
        assert_eq!(violation.key, history[read].key, "round {round}");

        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].op == KvOp::Get && history[i].complete.is_some())
            .collect();
        let read = reads[rng.gen_range(0..reads.len())];
        let mut corrupted = history.clone();
        corrupted[read].read = Some("<never written>".into());
        let violation = assert_violation(&corrupted);
        assert_eq!(violation.key, history[read].key, "round {round}");
    }
}

/// Linearizable or not, by trying every order of every admissible subset of ops: slow,
/// obviously right, and independent of the search.
fn brute_force(history: &[Operation]) -> bool {
    fn place(ops: &[&Operation], placed: &mut Vec<bool>, value: Option<String>) -> bool {
        if (0..ops.len()).all(|i| placed[i] || ops[i].complete.is_none()) {
            return true;
        }
        for i in 0..ops.len() {
            // Next must not be preceded in real time by an op not yet placed.
            let blocked = (0..ops.len()).any(|j| {
                !placed[j] && j != i && ops[j].complete.is_some_and(|c| c < ops[i].invoke)
            });
            if placed[i] || blocked {
                continue;
            }
            let after = match &ops[i].op {
                KvOp::Get if ops[i].read != value => continue,
                KvOp::Get => value.clone(),
                KvOp::Put(v) => Some(v.clone()),
                KvOp::Append(v) => Some(value.clone().unwrap_or_default() + v),
                KvOp::Delete => None,
            };
            placed[i] = true;
            if place(ops, placed, after) {
                return true;
            }
            placed[i] = false;
        }
        false
    }
    let ops: Vec<&Operation> = history
        .iter()
        .filter(|o| o.op != KvOp::Get || o.complete.is_some())
        .collect();
    place(&ops, &mut vec![false; ops.len()], None)
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let mut rng = StdRng::seed_from_u64(7);
    let values = ["a", "b", "ab"];
    let reads = [
        None,
        Some("a"),
        Some("b"),
        Some("ab"),
        Some("aa"),
        Some("ba"),
        Some("bab"),
    ];
    let (mut passed, mut failed) = (0, 0);
    for round in 0..3000 {
        let mut history = Vec::new();
        for client in 0..3 {
            let mut now = rng.gen_range(0..5u64);
            for _ in 0..rng.gen_range(1..=3) {
                let invoke = now + rng.gen_range(0..4);
                let complete = invoke + rng.gen_range(0..8);
                let value = values[rng.gen_range(0..values.len())].to_string();
                let kind = match rng.gen_range(0..4) {
                    0 => KvOp::Get,
                    1 => KvOp::Put(value),
                    2 => KvOp::Append(value),
                    _ => KvOp::Delete,
                };
                let read = reads[rng.gen_range(0..reads.len())].map(str::to_string);
                let lost = rng.gen_bool(0.2);
                history.push(Operation {
                    client,
                    key: "k".into(),
                    op: kind,
                    invoke,
                    complete: (!lost).then_some(complete),
                    read,
                });
                now = complete + 1;
            }
        }
        let expected = brute_force(&history);
        let got = check_with_limit(&history, 100_000);
        assert_eq!(
            got.is_ok(),
            expected,
            "round {round}: checker says {got:?}, brute force says {expected}: {history:#?}"
        );
        assert_ne!(got, Ok(CheckOutcome::GaveUp));
        if expected {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    // Both answers were exercised plenty.
    assert!(
        passed > 300 && failed > 300,
        "passed {passed}, failed {failed}"
    );
}

/// Plain Wing & Gong search with exact memoization of (set of ops taken, value), none
/// of the checker's shortcuts: the reference for histories too long for brute force.
fn reference(history: &[Operation]) -> bool {
    fn go(
        ops: &[&Operation],
        done: u64,
        value: Option<String>,
        seen: &mut HashSet<(u64, Option<String>)>,
    ) -> bool {
        let pending = |i: usize| done & (1 << i) == 0;
        if (0..ops.len()).all(|i| !pending(i) || ops[i].complete.is_none()) {
            return true;
        }
        if !seen.insert((done, value.clone())) {
            return false;
        }
        (0..ops.len()).any(|i| {
            let minimal = pending(i)
                && !(0..ops.len()).any(|j| {
                    pending(j) && j != i && ops[j].complete.is_some_and(|c| c < ops[i].invoke)
                });
            let after = match &ops[i].op {
                _ if !minimal => return false,
                KvOp::Get if ops[i].read != value => return false,
                KvOp::Get => value.clone(),
                KvOp::Put(v) => Some(v.clone()),
                KvOp::Append(v) => Some(value.clone().unwrap_or_default() + v),
                KvOp::Delete => None,
            };
            go(ops, done | (1 << i), after, seen)
        })
    }
    let ops: Vec<&Operation> = history
        .iter()
        .filter(|o| o.op != KvOp::Get || o.complete.is_some())
        .collect();
    assert!(ops.len() <= 64);
    go(&ops, 0, None, &mut HashSet::new())
}

#[test]
fn agrees_with_plain_memoized_search_on_medium_random_histories() {
    let mut rng = StdRng::seed_from_u64(99);
    let (mut passed, mut failed) = (0, 0);
    for round in 0..400 {
        // Few distinct values, so that different writes collide and appends combine.
        let clients = rng.gen_range(3..=6);
        let tokens = ["x", "y", "xy"];
        let mut history = generate(
            &mut rng,
            &["k"],
            clients,
            36 / clients as usize,
            0.15,
            &tokens,
        );
        // Half the time, one read is changed to some plausible value; whether that
        // breaks the history is for the reference to say.
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].op == KvOp::Get && history[i].complete.is_some())
            .collect();
        if !reads.is_empty() && rng.gen_bool(0.5) {
            let read = reads[rng.gen_range(0..reads.len())];
            history[read].read = [None, Some("x"), Some("y"), Some("xy"), Some("yx")]
                [rng.gen_range(0..5)]
            .map(str::to_string);
        }
        let expected = reference(&history);
        let got = check_with_limit(&history, 1_000_000);
        assert_ne!(got, Ok(CheckOutcome::GaveUp), "round {round}");
        assert_eq!(
            got.is_ok(),
            expected,
            "round {round}: checker says {got:?}, reference says {expected}: {history:#?}"
        );
        if expected {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    assert!(
        passed > 40 && failed > 40,
        "passed {passed}, failed {failed}"
    );
}

#[test]
fn two_thousand_ops_on_one_key_from_sixteen_clients_check_quickly() {
    // About twelve ops in flight at any time, 2% of them timing out.
    let mut rng = StdRng::seed_from_u64(2000);
    let history = generate(&mut rng, &["hot"], 16, 125, 0.02, &[]);
    assert_eq!(history.len(), 2000);
    assert_linearizable(&history);
    // It needs about ten thousand configurations; a hundred thousand flags a regression
    // long before it would make `check` give up.
    assert_eq!(
        check_with_limit(&history, 100_000),
        Ok(CheckOutcome::Linearizable)
    );
}

#[test]
fn two_thousand_ops_on_one_key_from_thirty_two_clients_check_without_giving_up() {
    // About twenty-five ops in flight at any time on one key: ~0.5M configurations.
    let mut rng = StdRng::seed_from_u64(3200);
    let history = generate(&mut rng, &["hot"], 32, 63, 0.02, &[]);
    assert_linearizable(&history);
}
