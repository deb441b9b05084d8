//! The HTTP API's endpoints (docs/protocol.md §5): which method and path mean what, and
//! how a request becomes a request of the line protocol (§3).
//!
//! Every key-value request is turned into the JSON object a client would have sent on
//! the client port and goes through the same parser ([`parse_request_object`]), so the
//! two front doors check the same things with the same messages; a follower forwards
//! that same object to the leader.
//!
//! [`parse_request_object`]: crate::protocol::parse_request_object

use serde_json::{Map, Value};

use super::parse::{percent_decode, query_pairs, Head};

/// What a request's method and path ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route<'a> {
    /// `POST /put`, `/append`, `/delete`, `/register`: this op, fields in a JSON body.
    Simple(&'static str),
    /// `GET /get?key=K`.
    SimpleGet,
    /// `/v1/kv/KEY` with this method; the key as sent (percent-encoded).
    Kv(KvMethod, &'a str),
    /// `GET /v1/status`.
    Status,
    /// `GET /v1/events`.
    Events,
    /// `GET /`: the dashboard.
    Page,
}

/// The methods of `/v1/kv/KEY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KvMethod {
    Get,
    Put,
    /// With `?op=append`.
    Post,
    Delete,
}

/// Why a request has no route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NoRoute {
    /// 404: no such path.
    NotFound,
    /// 405: the path takes only these methods (the `Allow` field).
    Method(&'static str),
}

/// The routing table.
pub(super) fn route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, NoRoute> {
    let (allow, route) = match path {
        "/put" => ("POST", Route::Simple("put")),
        "/append" => ("POST", Route::Simple("append")),
        "/delete" => ("POST", Route::Simple("delete")),
        "/register" => ("POST", Route::Simple("register")),
        "/get" => ("GET", Route::SimpleGet),
        "/v1/status" => ("GET", Route::Status),
        "/v1/events" => ("GET", Route::Events),
        "/" => ("GET", Route::Page),
        _ => {
            let Some(key) = path.strip_prefix("/v1/kv/") else {
                return Err(NoRoute::NotFound);
            };
            let method = match method {
                "GET" => KvMethod::Get,
                "PUT" => KvMethod::Put,
                "POST" => KvMethod::Post,
                "DELETE" => KvMethod::Delete,
                _ => return Err(NoRoute::Method("GET, PUT, POST, DELETE")),
            };
            return Ok(Route::Kv(method, key));
        }
    };
    if method == allow {
        Ok(route)
    } else {
        Err(NoRoute::Method(allow))
    }
}

/// What the port does for a routed request.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Call {
    /// Answer with this node's status; with `log`, the dashboard's detail and that
    /// many of the last log entries (`dashboard::status`).
    Status { log: Option<usize> },
    /// Answer with the event stream.
    Events,
    /// Serve the dashboard page.
    Page,
    /// Serve this request of the line protocol. `raw_value`: the answer to a get is the
    /// value itself as the body (REST form), not JSON.
    Client {
        request: Map<String, Value>,
        raw_value: bool,
    },
}

/// The request `route` (of `head`, with `body`) makes; `Err` is a `bad_request`
/// message.
pub(super) fn call(route: Route<'_>, head: &Head, body: &[u8]) -> Result<Call, String> {
    let query = query_pairs(&head.query)?;
    let text = |name: &str| {
        query
            .iter()
            .rev() // the last one counts, as for a field given twice in JSON
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let param = |name: &str| text(name).map(Value::from);
    let mut request = Map::new();
    let raw_value = match route {
        Route::Status => {
            let log = text("log").map(str::parse::<usize>).transpose();
            return match log {
                Ok(log) => Ok(Call::Status { log }),
                Err(_) => Err("log must be a number of log entries".into()),
            };
        }
        Route::Events => return Ok(Call::Events),
        Route::Page => return Ok(Call::Page),
        Route::Simple(op) => {
            request = json_body(body)?;
            request.insert("op".into(), op.into());
            if op != "register" {
                session_headers(&mut request, head)?;
            }
            false
        }
        Route::SimpleGet => {
            request.insert("op".into(), "get".into());
            request.extend(param("key").map(|key| ("key".into(), key)));
            false
        }
        Route::Kv(method, key) => {
            let key = percent_decode(key, false)?;
            request.insert("key".into(), key.into());
            let op = match method {
                KvMethod::Get => "get",
                KvMethod::Delete => "delete",
                KvMethod::Put => "put",
                KvMethod::Post => match param("op") {
                    Some(op) if op == "append" => "append",
                    _ => return Err("POST /v1/kv/KEY needs ?op=append (PUT sets a value)".into()),
                },
            };
            request.insert("op".into(), op.into());
            if matches!(method, KvMethod::Put | KvMethod::Post) {
                let value = String::from_utf8(body.to_vec())
                    .map_err(|_| "the value (the body) must be UTF-8 text".to_string())?;
                request.insert("value".into(), value.into());
            }
            if method != KvMethod::Get {
                session_headers(&mut request, head)?;
            }
            method == KvMethod::Get
        }
    };
    if request.get("op") == Some(&Value::from("get")) {
        request.extend(param("consistency").map(|c| ("consistency".into(), c)));
    }
    Ok(Call::Client { request, raw_value })
}

/// A simple-form body: a JSON object, or nothing (which counts as `{}`).
fn json_body(body: &[u8]) -> Result<Map<String, Value>, String> {
    if body.trim_ascii().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("invalid JSON body: {e}")),
    }
}

/// The exactly-once headers and the request fields they stand for.
const SESSION_HEADERS: [(&str, &str); 3] = [
    ("Raftkv-Session", "session"),
    ("Raftkv-Client", "client"),
    ("Raftkv-Seq", "seq"),
];

/// Copies the exactly-once headers of a write into its request; the parser then checks
/// them as it checks the fields (given together, `session` or `client`, …).
fn session_headers(request: &mut Map<String, Value>, head: &Head) -> Result<(), String> {
    let given: Vec<(&str, &str, &[u8])> = SESSION_HEADERS
        .iter()
        .filter_map(|&(header, field)| {
            let value = head.header(&header.to_ascii_lowercase())?;
            Some((header, field, value))
        })
        .collect();
    if given.is_empty() {
        return Ok(());
    }
    if SESSION_HEADERS
        .iter()
        .any(|(_, field)| request.get(*field).is_some_and(|v| !v.is_null()))
    {
        return Err(
            "give session, client and seq in the body or as Raftkv- headers, not both".into(),
        );
    }
    for (header, field, value) in given {
        let text =
            std::str::from_utf8(value).map_err(|_| format!("{header} must be UTF-8 text"))?;
        let value = if field == "client" {
            Value::from(text)
        } else {
            let number = text
                .parse::<u64>()
                .map_err(|_| format!("{header} must be an integer from 1 to 2^64-1"))?;
            Value::from(number)
        };
        request.insert(field.into(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn head(target: &str, headers: &[(&str, &str)]) -> Head {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Head {
            method: String::new(),
            path: path.into(),
            query: query.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
                .collect(),
            len: 0,
            body_len: 0,
            keep_alive: true,
            expects_continue: false,
        }
    }

    /// The request `method target` makes, with `headers` and `body`.
    fn request(
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Call, String> {
        let head = head(target, headers);
        let route = route(method, &head.path).map_err(|e| format!("{e:?}"))?;
        call(route, &head, body.as_bytes())
    }

    fn client(call: Result<Call, String>) -> (Value, bool) {
        match call {
            Ok(Call::Client { request, raw_value }) => (Value::Object(request), raw_value),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_table() {
        assert_eq!(route("POST", "/put"), Ok(Route::Simple("put")));
        assert_eq!(route("GET", "/get"), Ok(Route::SimpleGet));
        assert_eq!(route("GET", "/v1/status"), Ok(Route::Status));
        assert_eq!(route("GET", "/v1/events"), Ok(Route::Events));
        assert_eq!(route("POST", "/v1/events"), Err(NoRoute::Method("GET")));
        assert_eq!(route("GET", "/"), Ok(Route::Page));
        assert_eq!(route("HEAD", "/"), Err(NoRoute::Method("GET")));
        assert_eq!(
            route("DELETE", "/v1/kv/a/b"),
            Ok(Route::Kv(KvMethod::Delete, "a/b"))
        );
        assert_eq!(route("GET", "/put"), Err(NoRoute::Method("POST")));
        assert_eq!(
            route("PATCH", "/v1/kv/k"),
            Err(NoRoute::Method("GET, PUT, POST, DELETE"))
        );
        for path in ["/v1/kv", "/nope", "/v1/status/", "/index.html"] {
            assert_eq!(route("GET", path), Err(NoRoute::NotFound), "{path}");
        }
    }

    #[test]
    fn requests_become_line_protocol_requests() {
        let body = r#"{"key":"k","value":"v","client":"c","seq":3,"op":"delete"}"#;
        assert_eq!(
            client(request("POST", "/put", &[], body)),
            (
                json!({"op":"put","key":"k","value":"v","client":"c","seq":3}),
                false
            )
        );
        assert_eq!(
            client(request("POST", "/register", &[], "")),
            (json!({"op":"register"}), false)
        );
        assert_eq!(
            client(request("GET", "/get?key=a+b%26&consistency=stale", &[], "")),
            (
                json!({"op":"get","key":"a b&","consistency":"stale"}),
                false
            )
        );
        assert_eq!(
            client(request("GET", "/v1/kv/a%2Fb+c?consistency=stale", &[], "")),
            (
                json!({"op":"get","key":"a/b+c","consistency":"stale"}),
                true
            )
        );
        let headers = [("Raftkv-Client", "c9"), ("raftkv-seq", "12")];
        assert_eq!(
            client(request("POST", "/v1/kv/k?op=append", &headers, "x y\n")),
            (
                json!({"op":"append","key":"k","value":"x y\n","client":"c9","seq":12}),
                false
            )
        );
        assert_eq!(
            client(request(
                "DELETE",
                "/v1/kv/k",
                &[("Raftkv-Session", "4"), ("Raftkv-Seq", "1")],
                ""
            )),
            (json!({"op":"delete","key":"k","session":4,"seq":1}), false)
        );
        assert_eq!(
            request("GET", "/v1/status", &[], "ignored"),
            Ok(Call::Status { log: None })
        );
        assert_eq!(
            request("GET", "/v1/status?log=40", &[], ""),
            Ok(Call::Status { log: Some(40) })
        );
        assert_eq!(request("GET", "/?anything", &[], ""), Ok(Call::Page));
    }

    #[test]
    fn bad_requests_say_why() {
        for (method, target, headers, body, message) in [
            ("POST", "/put", &[][..], "[1]", "must be a JSON object"),
            ("POST", "/put", &[], "{nope", "invalid JSON body"),
            ("POST", "/v1/kv/k", &[], "v", "needs ?op=append"),
            ("PUT", "/v1/kv/%zz", &[], "v", "percent-encoding"),
            ("GET", "/get?key=%", &[], "", "percent-encoding"),
            ("GET", "/v1/status?log=-1", &[], "", "log must be a number"),
            (
                "PUT",
                "/v1/kv/k",
                &[("Raftkv-Seq", "one")],
                "v",
                "Raftkv-Seq must be an integer",
            ),
            (
                "POST",
                "/put",
                &[("Raftkv-Seq", "1")],
                r#"{"seq":2}"#,
                "not both",
            ),
        ] {
            let err = request(method, target, headers, body).unwrap_err();
            assert!(err.contains(message), "{method} {target}: {err}");
        }
        let err = request("PUT", "/v1/kv/k", &[], "\u{0}\u{ff}").map(|_| ());
        assert!(err.is_ok(), "any UTF-8 text is a value");
        let invalid = call(
            Route::Kv(KvMethod::Put, "k"),
            &head("/v1/kv/k", &[]),
            b"\xff",
        );
        assert!(invalid.unwrap_err().contains("UTF-8"));
    }
}
