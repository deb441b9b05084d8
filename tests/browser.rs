//! The dashboard (`GET /`, docs/protocol.md §5.7) in a real browser: headless Chromium
//! driven through chromedriver's WebDriver API (`common::webdriver`), on three nodes
//! started as `make cluster` starts them. The page must show the three nodes as they
//! report themselves with exactly one leader; a put typed into its form must reach the
//! log strip of every node, committed; and when the leader is SIGKILLed, the page must
//! grey it out and show the leader the others elect.
//!
//! It needs /usr/bin/chromium and chromedriver (Debian's `chromium` and
//! `chromium-driver`); without them it says so and passes. `make test-browser`
//! installs them and runs it with `RAFTKV_SCREENSHOT=docs/dashboard.png`, which writes
//! the README's screenshot (a path relative to the repository).

mod common;

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use common::{
    free_ports, read_key,
    webdriver::{base64_decode, chromedriver, Browser, CHROMIUM},
    Answer, Cluster, KvOp, RetryClient,
};
use serde_json::{json, Value};

/// How long the page may take to show what the nodes report.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Each node as the page shows it: id, role (empty when unreachable), reachable.
const ROWS: &str = "return [...document.querySelectorAll('.node-row')].map(r => ({
    node: Number(r.dataset.node), role: r.dataset.role, reachable: r.dataset.reachable === 'true'
}));";

/// Per node shown, whether its log strip has a committed put of `arguments[0]`.
const PUT_SHOWN: &str = "return [...document.querySelectorAll('.node-row')].map(r =>
    [...r.querySelectorAll('.cell')].some(c => c.dataset.key === arguments[0]
        && c.dataset.op === 'put' && !c.classList.contains('pending')));";

/// The nodes whose log strip has a committed no-op of term `arguments[0]`.
const NOOP_SHOWN: &str = "return [...document.querySelectorAll('.node-row')]
    .filter(r => [...r.querySelectorAll('.cell')].some(c => c.dataset.op === 'noop'
        && Number(c.dataset.term) === arguments[0] && !c.classList.contains('pending')))
    .map(r => Number(r.dataset.node));";

#[test]
fn the_page_shows_the_cluster_live_a_put_from_its_form_and_a_failover() {
    let driver = match chromedriver() {
        Some(driver) if Path::new(CHROMIUM).exists() => driver,
        _ => {
            eprintln!(
                "SKIPPED the browser test: it needs {CHROMIUM} and chromedriver (Debian \
                 packages chromium and chromium-driver); `make test-browser` installs them \
                 and runs it"
            );
            return;
        }
    };
    let started = Instant::now();
    let mut c = Cluster::new(3);
    let http = c.add_http();
    c.secure(); // as `make cluster` starts nodes
    for id in c.ids() {
        c.spawn(id);
    }
    let (leader, _) = c.wait_for_leader(&c.ids(), Duration::from_secs(20));
    // Some writes first, so the log strips hold more than the put of the test.
    let mut client = RetryClient::new(1, c.client_addrs());
    let keys = ["greeting", "colour", "city", "river", "planet", "fruit"];
    for (i, key) in keys.iter().cycle().take(30).enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = client.write(key, KvOp::Append(format!("{i};")), deadline);
        assert!(matches!(answer, Answer::Ok(_)), "{answer:?}");
    }

    let browser = Browser::start(&driver, free_ports(1)[0], c.dir.path(), 1280, 800);
    browser.open(&format!("http://{}/", http[&1]));
    let what = format!("three reachable nodes, n{leader} the only leader");
    wait_for_page(&c, &browser, &what, |rows| {
        rows.len() == 3 && rows.iter().all(|r| r["reachable"] == true) && leaders(rows) == [leader]
    });

    // A put through the page's form: n1 serves the page and forwards it to the leader.
    let (key, value) = ("from-the-page", "hello, browser");
    browser.type_into("#put-key", key);
    browser.type_into("#put-value", value);
    browser.click("#put-btn");
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        let shown = browser.run(PUT_SHOWN, json!([key]));
        if shown == json!([true, true, true]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the put of {key} is not committed in every node's log strip within \
             {PAGE_TIMEOUT:?}: {shown}\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = browser.run(
        "return document.getElementById('answer').textContent;",
        json!([]),
    );
    assert!(
        answer.as_str().is_some_and(|a| a.contains(": ok in")),
        "the form shows the answer: {answer}"
    );
    let read = read_key(&c.client_addrs(), key, Duration::from_secs(10));
    assert_eq!(read.as_deref(), Some(value), "the put really happened");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");

    // A failover, as `make kill-leader` makes one: the old leader greys out, the
    // others elect a new one, and the page shows it, and its first entry (the no-op
    // of its term) committed in the logs of the two left.
    c.kill(leader);
    let survivors: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    let (new_leader, term) = c.wait_for_leader(&survivors, Duration::from_secs(20));
    let what = format!("n{leader} unreachable, n{new_leader} the only leader");
    wait_for_page(&c, &browser, &what, |rows| {
        rows.iter()
            .all(|r| (r["node"] == leader) != (r["reachable"] == true))
            && leaders(rows) == [new_leader]
    });
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        let shown = browser.run(NOOP_SHOWN, json!([term]));
        let shown: Vec<u64> = serde_json::from_value(shown).unwrap_or_default();
        if shown == survivors {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the no-op of term {term} is not committed in the logs of {survivors:?} on the \
             page within {PAGE_TIMEOUT:?}; it is in those of {shown:?}\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(path) = std::env::var_os("RAFTKV_SCREENSHOT") {
        let png = browser.screenshot();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        fs::write(&path, png).expect("write the screenshot");
        eprintln!("wrote {}", Path::new(&path).display());
    }
    eprintln!(
        "the browser test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Polls the rows the page shows until `ok` holds of them; `what` explains a timeout.
fn wait_for_page(c: &Cluster, browser: &Browser, what: &str, ok: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        let rows = browser.run(ROWS, json!([]));
        if rows.as_array().is_some_and(|rows| ok(rows)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page does not show {what} within {PAGE_TIMEOUT:?}; it shows {rows}\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The nodes the page shows as leaders.
fn leaders(rows: &[Value]) -> Vec<u64> {
    rows.iter()
        .filter(|r| r["role"] == "leader")
        .filter_map(|r| r["node"].as_u64())
        .collect()
}

#[test]
fn screenshots_decode_from_base64() {
    assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
    assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
    assert_eq!(base64_decode("").unwrap(), b"");
    assert!(base64_decode("a*b=").is_none());
}
