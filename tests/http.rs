//! The HTTP API against real nodes (docs/protocol.md §5): every endpoint, exactly-once
//! writes by headers and by body, bad requests, keep-alive and pipelining, forwarding
//! from followers, the client token, the deadlines, and a leader SIGKILLed while clients
//! write through it. The requests are written by hand, byte for byte, so that malformed
//! ones can be sent too; answers are parsed with `httparse`.

mod common;

use std::{
    collections::BTreeMap,
    fs,
    io::{self, BufRead, BufReader, Read, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use common::{check_tokens, Cluster};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret";

/// A cluster of `n` nodes, each with an HTTP address, started as `make cluster` starts
/// them (named, with a cluster secret) and with `args` (and with the client token
/// [`TOKEN`] if `guarded`); returns it with the HTTP addresses once it has a leader.
fn http_cluster(n: u64, args: &[&str], guarded: bool) -> (Cluster, BTreeMap<u64, String>) {
    let mut c = Cluster::new(n);
    let http = c.add_http();
    c.node_args = args.iter().map(|a| a.to_string()).collect();
    c.secure(); // as `make cluster` starts nodes
    if guarded {
        let token_file = c.dir.path().join("token");
        fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        c.node_args.push("--client-token-file".into());
        c.node_args.push(token_file.display().to_string());
    }
    for id in c.ids() {
        c.spawn(id);
    }
    let bearer = format!("Bearer {TOKEN}");
    let auth: &[(&str, &str)] = if guarded {
        &[("Authorization", &bearer)]
    } else {
        &[]
    };
    leader_by_http(&c, &http, auth);
    (c, http)
}

/// Waits until every node's `/v1/status` names the same leader, which says it leads;
/// returns it. (Through HTTP, so that it works with a token.)
fn leader_by_http(c: &Cluster, http: &BTreeMap<u64, String>, auth: &[(&str, &str)]) -> u64 {
    let mut found = None;
    c.wait_until("an agreed leader", Duration::from_secs(20), || {
        let statuses: Vec<Value> = http
            .values()
            .filter_map(|addr| {
                let mut h = Http::try_connect(addr)?;
                h.send("GET", "/v1/status", auth, b"");
                Some(h.try_recv().ok()??.json())
            })
            .collect();
        let leader = statuses.first().map(|s| s["leader"].clone());
        let agreed = statuses.len() == http.len()
            && statuses
                .iter()
                .all(|s| Some(&s["leader"]) == leader.as_ref())
            && statuses.iter().any(|s| s["role"] == "leader");
        found = leader.and_then(|l| l.as_u64()).filter(|_| agreed);
        found.is_some()
    });
    found.unwrap()
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error` of a JSON error answer.
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }
}

/// A keep-alive connection to a node's HTTP address.
struct Http {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Http {
    fn connect(addr: &str) -> Http {
        Http::try_connect(addr).unwrap_or_else(|| panic!("cannot connect to {addr}"))
    }

    fn try_connect(addr: &str) -> Option<Http> {
        let stream = TcpStream::connect(addr).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream.set_nodelay(true).ok()?;
        let reader = BufReader::new(stream.try_clone().ok()?);
        Some(Http { stream, reader })
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends one request (`Content-Length` added when there is a body).
    fn send(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) {
        self.send_raw(&request(method, target, headers, body));
    }

    /// Reads one answer; `None` if the connection closed first.
    fn recv(&mut self) -> Option<Answer> {
        self.try_recv().unwrap()
    }

    /// Reads one answer: `Ok(None)` if the connection closed before it began, `Err` if
    /// it failed or closed in the middle.
    fn try_recv(&mut self) -> io::Result<Option<Answer>> {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            if self.reader.read_until(b'\n', &mut head)? == 0 {
                if head.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed in a head",
                ));
            }
        }
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut fields);
        let complete = parsed.parse(&head).map_err(io::Error::other)?.is_complete();
        assert!(complete, "{head:?}");
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(Some(Answer {
            status: parsed.code.unwrap_or(0),
            headers,
            body,
        }))
    }

    fn call(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        self.send(method, target, headers, body);
        self.recv().expect("an answer")
    }

    /// Whether the node closed the connection (after the answers already read).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}

fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on a fresh connection.
fn call(addr: &str, method: &str, target: &str, body: &[u8]) -> Answer {
    Http::connect(addr).call(method, target, &[], body)
}

/// Polls a stale read of `target` at `addr` until it answers `want`.
fn wait_for_stale(addr: &str, target: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = call(addr, "GET", target, b"");
        if got.status == 200 && got.text() == want {
            return;
        }
        assert!(Instant::now() < deadline, "{target} at {addr}: {got:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_endpoint_of_both_forms_on_the_leader_and_on_followers() {
    let (c, http) = http_cluster(3, &[], false);
    let (leader, _) = c.wait_for_leader(&c.ids(), Duration::from_secs(10));
    let followers: Vec<&String> = http
        .iter()
        .filter(|(id, _)| **id != leader)
        .map(|(_, a)| a)
        .collect();
    let mut on_leader = Http::connect(&http[&leader]);
    let mut on_follower = Http::connect(followers[0]);

    // The simple form, on the leader and (forwarded) on a follower.
    for h in [&mut on_leader, &mut on_follower] {
        let put = h.call("POST", "/put", &[], br#"{"key":"s","value":"a"}"#);
        assert_eq!((put.status, put.json()), (200, json!({"ok": true})));
        let append = h.call("POST", "/append", &[], br#"{"key":"s","value":"b"}"#);
        assert_eq!(append.status, 200);
        let get = h.call("GET", "/get?key=s", &[], b"");
        assert_eq!(get.json(), json!({"ok": true, "value": "ab"}));
        assert_eq!(get.header("content-type"), Some("application/json"));
        let delete = h.call("POST", "/delete", &[], br#"{"key":"s"}"#);
        assert_eq!(delete.status, 200);
        let gone = h.call("GET", "/get?key=s", &[], b"");
        assert_eq!(gone.json(), json!({"ok": true, "value": null}));
        let register = h.call("POST", "/register", &[], b"");
        assert!(
            register.json()["session"].as_u64().unwrap() >= 1,
            "{register:?}"
        );
    }

    // The REST form with keys that need percent-encoding (this is `a b/c?d&e=é%`),
    // on both.
    let path = "/v1/kv/a%20b%2Fc%3Fd%26e%3D%C3%A9%25";
    for (h, value) in [
        (&mut on_leader, "from the leader"),
        (&mut on_follower, "from a follower"),
    ] {
        let put = h.call("PUT", path, &[], value.as_bytes());
        assert_eq!((put.status, put.json()), (200, json!({"ok": true})));
        let get = h.call("GET", path, &[], b"");
        assert_eq!((get.status, get.text().as_str()), (200, value));
        assert_eq!(
            get.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        let simple = h.call("GET", &format!("/get?key={}", &path[7..]), &[], b"");
        assert_eq!(simple.json()["value"], value, "the same key by both forms");
        let append = h.call("POST", &format!("{path}?op=append"), &[], b"!\n");
        assert_eq!(append.status, 200);
        assert_eq!(h.call("GET", path, &[], b"").text(), format!("{value}!\n"));
    }
    let delete = on_follower.call("DELETE", path, &[], b"");
    assert_eq!(delete.status, 200);
    let missing = on_leader.call("GET", path, &[], b"");
    assert_eq!(
        (missing.status, missing.error().as_str()),
        (404, "not_found")
    );
    let empty = on_leader.call("PUT", "/v1/kv/empty", &[], b"");
    assert_eq!(empty.status, 200);
    assert_eq!(
        on_follower.call("GET", "/v1/kv/empty", &[], b"").status,
        200
    );

    // Stale reads are served by each node from its own state.
    on_leader.call("PUT", "/v1/kv/st", &[], b"fresh");
    for addr in http.values() {
        wait_for_stale(addr, "/v1/kv/st?consistency=stale", "fresh");
        let simple = call(addr, "GET", "/get?key=st&consistency=stale", b"");
        assert_eq!(simple.json()["value"], "fresh");
    }

    // Status, from every node: the object of §3.9, readable by a page of any origin
    // (the dashboard reads every node's).
    for (id, addr) in &http {
        let answer = call(addr, "GET", "/v1/status", b"");
        assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
        let status = answer.json();
        assert_eq!(
            (status["ok"].clone(), status["node"].clone()),
            (json!(true), json!(id))
        );
        assert_eq!(status["leader"], leader);
        assert_eq!(status["leader_addr"], c.addr(leader));
        assert_eq!(status["members"], json!([1, 2, 3]));
        assert!(
            status.get("log").is_none(),
            "no detail unless asked: {status}"
        );
    }
    // A key read is not open to other origins: a page elsewhere must not read the data.
    let get = call(&http[&leader], "GET", "/v1/kv/empty", b"");
    assert_eq!(get.header("access-control-allow-origin"), None);

    // The dashboard's detail: the last entries, the addresses, the vote, and on the
    // leader each follower's progress.
    on_leader.call("PUT", "/v1/kv/last", &[], b"v");
    for (id, addr) in &http {
        let detail = call(addr, "GET", "/v1/status?log=3", b"");
        assert_eq!(detail.header("access-control-allow-origin"), Some("*"));
        let status = detail.json();
        let log = status["log"].as_array().unwrap();
        assert!(log.len() <= 3, "{status}");
        let last = status["last_log_index"].as_u64().unwrap();
        assert_eq!(log.last().unwrap()["index"], last, "{status}");
        let addresses = status["addresses"].as_array().unwrap();
        assert_eq!(addresses.len(), 3);
        assert_eq!(addresses[*id as usize - 1]["http"], json!(addr));
        assert!(
            status["vote"].is_u64() || status["vote"].is_null(),
            "{status}"
        );
        if *id == leader {
            assert_eq!(log.last().unwrap()["key"], "last", "{status}");
            assert_eq!(log.last().unwrap()["op"], "put", "{status}");
            let progress = status["progress"].as_object().unwrap();
            assert_eq!(progress.len(), 2, "{status}");
            for p in progress.values() {
                assert!(p["match"].as_u64().unwrap() < p["next"].as_u64().unwrap());
                assert!(p["state"].is_string(), "{status}");
            }
        } else {
            assert!(status.get("progress").is_none(), "{status}");
        }
    }

    // The dashboard itself, from any node.
    for addr in http.values() {
        let page = call(addr, "GET", "/", b"");
        assert_eq!(page.status, 200);
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(page.text().contains("<title>raftkv dashboard</title>"));
    }
}

#[test]
fn a_retried_write_is_applied_once_by_headers_by_body_and_across_nodes() {
    let (c, http) = http_cluster(3, &[], false);
    let (leader, _) = c.wait_for_leader(&c.ids(), Duration::from_secs(10));
    let follower = http.keys().copied().find(|&id| id != leader).unwrap();
    let headers = [("Raftkv-Client", "h1"), ("Raftkv-Seq", "1")];
    for addr in [&http[&leader], &http[&follower], &http[&leader]] {
        let answer = Http::connect(addr).call("POST", "/v1/kv/h?op=append", &headers, b"x");
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let body = br#"{"key":"b","value":"y","client":"b1","seq":1}"#;
    for addr in [&http[&follower], &http[&leader], &http[&follower]] {
        assert_eq!(call(addr, "POST", "/append", body).status, 200);
    }
    // A registered session by header, twice.
    let session = call(&http[&follower], "POST", "/register", b"").json()["session"].clone();
    let session = session.as_u64().unwrap().to_string();
    let headers = [("Raftkv-Session", session.as_str()), ("Raftkv-Seq", "1")];
    for addr in [&http[&leader], &http[&follower]] {
        let answer = Http::connect(addr).call("POST", "/v1/kv/r?op=append", &headers, b"z");
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let leader_addr = &http[&leader];
    assert_eq!(call(leader_addr, "GET", "/v1/kv/h", b"").text(), "x");
    assert_eq!(call(leader_addr, "GET", "/v1/kv/b", b"").text(), "y");
    assert_eq!(call(leader_addr, "GET", "/v1/kv/r", b"").text(), "z");
    // An older seq of the same client is refused, not applied.
    let old = Http::connect(leader_addr).call(
        "POST",
        "/v1/kv/h?op=append",
        &[("Raftkv-Client", "h1"), ("Raftkv-Seq", "1")],
        b"other",
    );
    assert_eq!(old.status, 400, "{old:?}");
    let one_without_the_other =
        Http::connect(leader_addr).call("PUT", "/v1/kv/h", &[("Raftkv-Client", "h1")], b"v");
    assert_eq!(one_without_the_other.status, 400);
    assert!(one_without_the_other.json()["message"]
        .as_str()
        .unwrap()
        .contains("together"));
}

#[test]
fn bad_requests_get_their_status_and_json_and_the_node_stays_fine() {
    let (c, http) = http_cluster(1, &["--max-line-bytes", "4096"], false);
    let addr = &http[&1];
    let mut h = Http::connect(addr);
    // Answered, and the connection stays open.
    for (method, target, body, status, message) in [
        ("POST", "/put", &b"{nope"[..], 400, "invalid JSON body"),
        ("POST", "/put", b"[1,2]", 400, "must be a JSON object"),
        ("POST", "/put", br#"{"value":"v"}"#, 400, "missing \"key\""),
        ("POST", "/put", br#"{"key":"k"}"#, 400, "missing \"value\""),
        ("GET", "/get", b"", 400, "missing \"key\""),
        (
            "GET",
            "/get?key=k&consistency=eventual",
            b"",
            400,
            "consistency",
        ),
        (
            "POST",
            "/put",
            br#"{"key":"k","value":"v","seq":1}"#,
            400,
            "needs \"session\"",
        ),
        ("PUT", "/v1/kv/%E", b"v", 400, "percent-encoding"),
        ("PUT", "/v1/kv/k", b"\xff\xfe", 400, "UTF-8"),
        ("POST", "/v1/kv/k?op=frob", b"v", 400, "op=append"),
        ("GET", "/put", b"", 405, "takes POST"),
        (
            "PATCH",
            "/v1/kv/k",
            b"v",
            405,
            "takes GET, PUT, POST, DELETE",
        ),
        ("GET", "/nope", b"", 404, "no such endpoint"),
        ("POST", "/v1/events", b"", 405, "takes GET"),
        ("GET", "/index.html", b"", 404, "no such endpoint"),
        ("POST", "/", b"", 405, "takes GET"),
        (
            "GET",
            "/v1/status?log=all",
            b"",
            400,
            "log must be a number",
        ),
    ] {
        let answer = h.call(method, target, &[], body);
        assert_eq!(answer.status, status, "{method} {target}: {answer:?}");
        let v = answer.json();
        assert_eq!(v["ok"], false);
        assert!(
            v["message"].as_str().unwrap().contains(message),
            "{method} {target}: {v}"
        );
        assert!(
            v.get("leader_addr").is_some(),
            "the error object of §3.3: {v}"
        );
        if status == 405 {
            assert!(answer.header("allow").is_some());
        }
    }
    assert_eq!(
        h.call("GET", "/v1/status", &[], b"").status,
        200,
        "still the same connection"
    );

    // Answered, then closed: the framing is lost.
    let long_header = format!("X-Long: {}\r\n", "y".repeat(17 << 10));
    for (raw, status) in [
        (b"garbage garbage\r\n\r\n".to_vec(), 400),
        (b"\x00\x01\x02\xff\r\n\r\n".to_vec(), 400),
        (
            request("POST", "/put", &[("Transfer-Encoding", "chunked")], b""),
            411,
        ),
        (request("PUT", "/v1/kv/k", &[], &vec![b'v'; 5000]), 413),
        (
            format!("GET /v1/status HTTP/1.1\r\n{long_header}\r\n").into_bytes(),
            431,
        ),
        (
            b"POST /put HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
            400,
        ),
        (
            b"POST /put HTTP/1.1\r\nContent-Length: -3\r\n\r\n".to_vec(),
            400,
        ),
    ] {
        let mut h = Http::connect(addr);
        h.send_raw(&raw);
        let answer = h
            .recv()
            .unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(&raw[..20])));
        assert_eq!(
            answer.status,
            status,
            "{:?}: {answer:?}",
            String::from_utf8_lossy(&raw[..20])
        );
        assert_eq!(answer.json()["error"], "bad_request");
        assert_eq!(answer.header("connection"), Some("close"));
        assert!(h.closed());
    }

    // Half a request, then gone; binary noise; nothing of it changed anything.
    let mut h = Http::connect(addr);
    h.send_raw(b"PUT /v1/kv/half HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    drop(h);
    let status = call(addr, "GET", "/v1/status", b"");
    assert_eq!(status.status, 200);
    assert_eq!(call(addr, "GET", "/v1/kv/half", b"").status, 404);
    assert_eq!(call(addr, "GET", "/v1/kv/k", b"").status, 404);
    assert!(c.status(1).is_some(), "the client port too");
}

#[test]
fn keep_alive_pipelining_and_connection_close() {
    let (_c, http) = http_cluster(1, &[], false);
    let addr = &http[&1];
    let mut h = Http::connect(addr);
    for i in 0..20 {
        let value = format!("v{i}");
        assert_eq!(h.call("PUT", "/v1/kv/k", &[], value.as_bytes()).status, 200);
        assert_eq!(h.call("GET", "/v1/kv/k", &[], b"").text(), value);
    }
    // Pipelined: all sent in one write, answered in order; a stale read and a status
    // behind writes still wait their turn.
    let mut batch = Vec::new();
    for i in 0..30 {
        batch.extend(request(
            "POST",
            "/v1/kv/p?op=append",
            &[],
            format!("{i},").as_bytes(),
        ));
        batch.extend(request("GET", "/v1/kv/p?consistency=stale", &[], b""));
        batch.extend(request("GET", "/v1/status", &[], b""));
    }
    h.send_raw(&batch);
    let all: String = (0..30).map(|i| format!("{i},")).collect();
    let mut seen = String::new();
    for _ in 0..30 {
        assert_eq!(h.recv().unwrap().json(), json!({"ok": true}));
        // Read when the node read the request: it may miss appends sent before it
        // and not applied yet, but never goes back.
        let stale = h.recv().unwrap();
        match stale.status {
            200 => {
                let text = stale.text();
                assert!(all.starts_with(&text) && text.len() >= seen.len(), "{text}");
                seen = text;
            }
            status => assert_eq!((status, seen.as_str()), (404, ""), "{stale:?}"),
        }
        assert_eq!(h.recv().unwrap().json()["node"], 1);
    }
    // Applied in the order sent. (Asked after the answers: a read pipelined behind
    // writes may be served before they commit, as on the client port.)
    assert_eq!(h.call("GET", "/v1/kv/p", &[], b"").text(), all);

    // Connection: close is honoured; HTTP/1.0 closes unless asked to keep alive.
    let answer = h.call("GET", "/v1/status", &[("Connection", "close")], b"");
    assert_eq!(
        (answer.status, answer.header("connection")),
        (200, Some("close"))
    );
    assert!(h.closed());
    let mut old = Http::connect(addr);
    old.send_raw(b"GET /v1/kv/k HTTP/1.0\r\n\r\n");
    assert_eq!(old.recv().unwrap().text(), "v19");
    assert!(old.closed());
    let mut old = Http::connect(addr);
    for _ in 0..2 {
        old.send_raw(b"GET /v1/kv/k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(old.recv().unwrap().header("connection"), Some("keep-alive"));
    }
}

#[test]
fn with_a_token_every_request_needs_it_and_followers_forward_with_it() {
    let (c, http) = http_cluster(3, &[], true);
    let bearer = format!("Bearer {TOKEN}");
    let leader = leader_by_http(&c, &http, &[("Authorization", &bearer)]);
    let follower = http.keys().copied().find(|&id| id != leader).unwrap();
    let mut h = Http::connect(&http[&follower]);
    for (method, target) in [("GET", "/v1/status"), ("PUT", "/v1/kv/k"), ("GET", "/nope")] {
        let answer = h.call(method, target, &[], b"v");
        assert_eq!(
            (answer.status, answer.error().as_str()),
            (401, "unauthorized"),
            "{target}"
        );
        assert!(answer
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer"));
    }
    // The same connection, now with the token; the follower forwards with its own.
    let auth = [("Authorization", bearer.as_str())];
    assert_eq!(h.call("PUT", "/v1/kv/k", &auth, b"guarded").status, 200);
    assert_eq!(h.call("GET", "/v1/kv/k", &auth, b"").text(), "guarded");
    assert_eq!(
        h.call("GET", "/v1/status", &auth, b"").json()["node"],
        follower
    );
    // A wrong token: 401, and the connection is closed.
    let wrong = h.call(
        "GET",
        "/v1/kv/k",
        &[("Authorization", "Bearer s3creT")],
        b"",
    );
    assert_eq!(wrong.status, 401);
    assert!(h.closed());
    let leader_http = &http[&leader];
    assert_eq!(
        Http::connect(leader_http)
            .call("GET", "/v1/kv/k", &auth, b"")
            .text(),
        "guarded"
    );
}

#[test]
fn slow_and_idle_clients_are_cut_off() {
    let (_c, http) = http_cluster(
        1,
        &["--client-line-ms", "400", "--client-idle-ms", "1500"],
        false,
    );
    let addr = &http[&1];
    // A request sent a byte at a time, too slowly: 408, then closed.
    let mut h = Http::connect(addr);
    let mut dribble = h.stream.try_clone().unwrap();
    let started = Instant::now();
    let writer = thread::spawn(move || {
        for &byte in b"GET /v1/status HTTP/1.1\r\nHost: test\r\n\r\n" {
            if dribble.write_all(&[byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    let answer = h.recv().expect("an answer");
    assert_eq!(answer.status, 408, "{answer:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "before the request was complete"
    );
    assert!(h.closed());
    writer.join().unwrap();
    // A silent connection is closed after the idle time, without a word.
    let mut idle = Http::connect(addr);
    let started = Instant::now();
    assert!(idle.closed());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    // Requests in a steady flow are not cut off.
    let mut busy = Http::connect(addr);
    for _ in 0..8 {
        assert_eq!(busy.call("GET", "/v1/status", &[], b"").status, 200);
        thread::sleep(Duration::from_millis(250));
    }
}

/// What a curl-like script does: append `token` to `log` with the same client/seq at
/// one node after another until a definite answer; false if told to stop first.
fn append_until_answered(
    addrs: &[String],
    start: usize,
    client: &str,
    seq: u64,
    token: &str,
    stop: &AtomicBool,
) -> bool {
    let seq = seq.to_string();
    let headers = [("Raftkv-Client", client), ("Raftkv-Seq", seq.as_str())];
    let request = request("POST", "/v1/kv/log?op=append", &headers, token.as_bytes());
    let mut attempt = start;
    loop {
        let addr = &addrs[attempt % addrs.len()];
        attempt += 1;
        if let Some(mut h) = Http::try_connect(addr) {
            let sent = h.stream.write_all(&request);
            match sent.and_then(|()| h.try_recv()) {
                Ok(Some(a)) if a.status == 200 => return true,
                // Not applied, or not known: the same numbers again, elsewhere.
                Ok(Some(a)) if matches!(a.status, 503 | 504) => {}
                Ok(Some(a)) => panic!("unexpected answer {a:?}: {}", a.text()),
                Ok(None) | Err(_) => {} // the node died under us
            }
        }
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        thread::sleep(Duration::from_millis(30));
    }
}

#[test]
fn a_leader_killed_during_writes_loses_no_acknowledged_write() {
    let (mut c, http) = http_cluster(3, &[], false);
    let (leader, _) = c.wait_for_leader(&c.ids(), Duration::from_secs(10));
    let addrs: Vec<String> = http.values().cloned().collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (addrs, stop, acked) = (addrs.clone(), Arc::clone(&stop), Arc::clone(&acked));
            thread::spawn(move || {
                let client = format!("w{w}");
                for seq in 1..=400u64 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let token = format!("w{w}.{seq};");
                    if append_until_answered(&addrs, w, &client, seq, &token, &stop) {
                        acked.lock().unwrap().push(token);
                    }
                }
            })
        })
        .collect();
    let acked_count = || acked.lock().unwrap().len();
    let wait = Duration::from_secs(20);
    c.wait_until("writes through the leader", wait, || acked_count() >= 40);
    c.kill(leader);
    let survivors: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    c.wait_for_leader(&survivors, Duration::from_secs(20));
    let after = acked_count() + 40;
    c.wait_until("writes after the failover", wait, || acked_count() >= after);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let (new_leader, _) = c.wait_for_leader(&survivors, Duration::from_secs(20));
    let value = call(&http[&new_leader], "GET", "/v1/kv/log", b"").text();
    check_tokens(&value, &acked);
    // Through a follower too (forwarded, linearizable).
    let follower = survivors.iter().find(|&&id| id != new_leader).unwrap();
    let through_follower = call(&http[follower], "GET", "/v1/kv/log", b"").text();
    assert!(through_follower.len() >= value.len());
}
