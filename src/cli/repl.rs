//! `raftkv repl`: a blocking read-eval-print loop over a [`Client`].
//!
//! Lines are split into words like a shell does (see [`tokenize`]), the first word is
//! the command (see [`parse_command`]), and each result is printed as one or more
//! lines. On a terminal each result is followed by `(leader n2, 1.3 ms)`: which node
//! answered and how long the command took. When input is not a terminal there is no
//! banner, prompt or timing line, only results and errors, so
//! `raftkv repl --cluster c.json < script.txt` prints a stable transcript. Errors never
//! end the loop; `exit`, `quit` or end of input (Ctrl-D) do.
//!
//! `get` prints a value in double quotes with the same escapes the tokenizer reads
//! (`"a\nb"`), so an empty value (`""`) and a missing key (`(nil)`) are told apart.

use std::{
    io::{self, BufRead, Write},
    time::Instant,
};

use crate::client::{fmt_duration, Client};

/// The REPL's help text.
pub const HELP: &str = "\
commands:
  put KEY VALUE      set KEY to VALUE
  append KEY VALUE   append VALUE to the value of KEY (missing counts as \"\")
  get KEY            print the value of KEY, or (nil)
  delete KEY         remove KEY
  status             show every node's view of the cluster
  leader             show which node is the leader
  help               show this text
  exit | quit        leave (or Ctrl-D)
words are split on spaces; quote with \"...\" or '...'; in \"...\" and bare words,
\\n \\t \\r \\\\ \\\" \\' and \\<space> are escapes; a word starting with # begins a comment";

/// One REPL command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplCommand {
    Put { key: String, value: String },
    Append { key: String, value: String },
    Get { key: String },
    Delete { key: String },
    Status,
    Leader,
    Help,
    Exit,
}

/// Splits `line` into words, shell style:
/// - words are separated by unquoted whitespace; adjacent quoted and unquoted parts
///   join into one word (`a"b c"` is `ab c`), and `""` is an empty word;
/// - inside `'...'` every character is literal;
/// - inside `"..."` and in bare words, a backslash escapes: `\n` newline, `\t` tab,
///   `\r` carriage return, `\\`, `\"`, `\'`, `\ ` (space); before any other character
///   the backslash is kept as it is (`\d` stays `\d`);
/// - a `#` at the start of a word begins a comment that runs to the end of the line.
///
/// An unterminated quote or a trailing backslash is an error.
pub fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e) => push_escape(&mut word, e),
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(e) => push_escape(&mut word, e),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn push_escape(word: &mut String, escaped: char) {
    match escaped {
        'n' => word.push('\n'),
        't' => word.push('\t'),
        'r' => word.push('\r'),
        '\\' | '"' | '\'' | ' ' => word.push(escaped),
        other => {
            word.push('\\');
            word.push(other);
        }
    }
}

/// Writes `value` in double quotes, escaped so that [`tokenize`] reads it back.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Turns the words of one line into a command: `Ok(None)` for an empty line, `Err`
/// with a short usage line for an unknown command or a wrong number of arguments.
/// Command names are case-insensitive.
pub fn parse_command(words: &[String]) -> Result<Option<ReplCommand>, String> {
    let Some((name, args)) = words.split_first() else {
        return Ok(None);
    };
    let name = name.to_ascii_lowercase();
    let usage = |u: &str| Err(format!("usage: {u}"));
    let command = match (name.as_str(), args) {
        ("put", [key, value]) => ReplCommand::Put {
            key: key.clone(),
            value: value.clone(),
        },
        ("put", _) => return usage("put KEY VALUE"),
        ("append", [key, value]) => ReplCommand::Append {
            key: key.clone(),
            value: value.clone(),
        },
        ("append", _) => return usage("append KEY VALUE"),
        ("get", [key]) => ReplCommand::Get { key: key.clone() },
        ("get", _) => return usage("get KEY"),
        ("delete" | "del", [key]) => ReplCommand::Delete { key: key.clone() },
        ("delete" | "del", _) => return usage("delete KEY"),
        ("status", []) => ReplCommand::Status,
        ("status", _) => return usage("status"),
        ("leader", []) => ReplCommand::Leader,
        ("leader", _) => return usage("leader"),
        ("help" | "?", _) => ReplCommand::Help,
        ("exit" | "quit", []) => ReplCommand::Exit,
        ("exit" | "quit", _) => return usage(&name),
        (other, _) => {
            let shown: String = other.chars().take(40).collect();
            return Err(format!("unknown command {shown:?}; type help for the list"));
        }
    };
    Ok(Some(command))
}

/// Runs one command; returns the text to print and, for commands answered by one
/// node, that node's address.
fn execute(client: &mut Client, command: ReplCommand) -> (String, Option<String>) {
    let result = match command {
        ReplCommand::Put { key, value } => client.put(&key, &value).map(|()| "OK".to_string()),
        ReplCommand::Append { key, value } => {
            client.append(&key, &value).map(|()| "OK".to_string())
        }
        ReplCommand::Delete { key } => client.delete(&key).map(|()| "OK".to_string()),
        ReplCommand::Get { key } => client
            .get(&key)
            .map(|v| v.as_deref().map_or_else(|| "(nil)".to_string(), quote)),
        ReplCommand::Status => {
            let rows = client.status_all();
            return (
                super::status_table(client, &rows).trim_end().to_string(),
                None,
            );
        }
        ReplCommand::Leader => client.find_leader().map(|addr| {
            let label = client.node_label(&addr);
            if label == addr {
                format!("leader: {addr}")
            } else {
                format!("leader: {label} ({addr})")
            }
        }),
        ReplCommand::Help | ReplCommand::Exit => return (HELP.to_string(), None),
    };
    match result {
        Ok(text) => (text, client.last_addr().map(str::to_string)),
        Err(e) => (format!("error: {e}"), None),
    }
}

/// Runs the loop: reads commands from `input` until end of input or `exit`, writes
/// results (and errors) to `out`. `interactive` adds a banner, a prompt and a timing
/// line after each result. Returns only on end of input, `exit`, or an I/O error.
pub fn run<R: BufRead, W: Write>(
    client: &mut Client,
    mut input: R,
    out: &mut W,
    interactive: bool,
) -> io::Result<()> {
    if interactive {
        writeln!(
            out,
            "raftkv repl: {} node(s); type help for commands",
            client.addrs().len()
        )?;
    }
    let mut line = Vec::new();
    loop {
        if interactive {
            write!(out, "raftkv> ")?;
            out.flush()?;
        }
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            if interactive {
                writeln!(out)?;
            }
            return Ok(());
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            writeln!(out, "error: the line is not valid UTF-8")?;
            continue;
        };
        let words = match tokenize(text.trim_end_matches(['\n', '\r'])) {
            Ok(words) => words,
            Err(e) => {
                writeln!(out, "error: {e}")?;
                continue;
            }
        };
        let command = match parse_command(&words) {
            Ok(None) => continue,
            Ok(Some(ReplCommand::Exit)) => return Ok(()),
            Ok(Some(command)) => command,
            Err(usage) => {
                writeln!(out, "{usage}")?;
                continue;
            }
        };
        let timed = !matches!(command, ReplCommand::Help);
        let started = Instant::now();
        let (text, answered_by) = execute(client, command);
        let elapsed = fmt_duration(started.elapsed());
        writeln!(out, "{text}")?;
        if interactive && timed {
            match answered_by {
                Some(addr) => writeln!(out, "(leader {}, {elapsed})", client.node_label(&addr))?,
                None => writeln!(out, "({elapsed})")?,
            }
        }
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{fake, ClientOptions};

    fn words(line: &str) -> Vec<String> {
        tokenize(line).unwrap()
    }

    #[test]
    fn tokenizer_splits_and_unquotes() {
        assert_eq!(words("  put  key   value "), ["put", "key", "value"]);
        assert_eq!(words(r#"put k "hello world""#), ["put", "k", "hello world"]);
        assert_eq!(words("put k 'it is'"), ["put", "k", "it is"]);
        assert_eq!(words(r#"put k """#), ["put", "k", ""]);
        assert_eq!(words("put k ''"), ["put", "k", ""]);
        assert_eq!(words(r#"a"b c"d"#), ["ab cd"]);
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words("   "), Vec::<String>::new());
        assert_eq!(words("get k # a comment"), ["get", "k"]);
        assert_eq!(words("# only a comment"), Vec::<String>::new());
        assert_eq!(words("get k#not-a-comment"), ["get", "k#not-a-comment"]);
    }

    #[test]
    fn tokenizer_escapes() {
        assert_eq!(words(r#""a\nb\tc\\d\"e\'f""#), ["a\nb\tc\\d\"e'f"]);
        assert_eq!(words(r"a\ b"), ["a b"]);
        assert_eq!(words(r"a\nb"), ["a\nb"]);
        assert_eq!(
            words(r#"'a\nb\"'"#),
            [r#"a\nb\""#],
            "single quotes are literal"
        );
        assert_eq!(
            words(r#""\d""#),
            [r"\d"],
            "unknown escapes keep the backslash"
        );
        assert_eq!(words(r#"'say "hi"'"#), [r#"say "hi""#]);
        assert_eq!(words("héllo wörld"), ["héllo", "wörld"]);
    }

    #[test]
    fn tokenizer_errors() {
        assert_eq!(
            tokenize(r#"put k "open"#),
            Err("unterminated double quote".into())
        );
        assert_eq!(
            tokenize(r#"put k "ends in \"#),
            Err("unterminated double quote".into())
        );
        assert_eq!(
            tokenize("put k 'open"),
            Err("unterminated single quote".into())
        );
        assert_eq!(tokenize(r"put k v\"), Err("trailing backslash".into()));
    }

    #[test]
    fn quote_round_trips_through_the_tokenizer() {
        for value in [
            "",
            "plain",
            "two words",
            "a\nb\tc\r",
            r#"q"uo'te\"#,
            "#hash",
        ] {
            assert_eq!(words(&quote(value)), [value], "{value:?}");
        }
    }

    fn parse(line: &str) -> Result<Option<ReplCommand>, String> {
        parse_command(&words(line))
    }

    #[test]
    fn command_parsing() {
        let s = String::from;
        assert_eq!(
            parse("put k v"),
            Ok(Some(ReplCommand::Put {
                key: s("k"),
                value: s("v")
            }))
        );
        assert_eq!(
            parse("APPEND k v"),
            Ok(Some(ReplCommand::Append {
                key: s("k"),
                value: s("v")
            }))
        );
        assert_eq!(parse("get k"), Ok(Some(ReplCommand::Get { key: s("k") })));
        assert_eq!(
            parse("delete k"),
            Ok(Some(ReplCommand::Delete { key: s("k") }))
        );
        assert_eq!(parse("status"), Ok(Some(ReplCommand::Status)));
        assert_eq!(parse("leader"), Ok(Some(ReplCommand::Leader)));
        assert_eq!(parse("help"), Ok(Some(ReplCommand::Help)));
        assert_eq!(parse("quit"), Ok(Some(ReplCommand::Exit)));
        assert_eq!(parse("exit"), Ok(Some(ReplCommand::Exit)));
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("put k"), Err("usage: put KEY VALUE".into()));
        assert_eq!(parse("put k v extra"), Err("usage: put KEY VALUE".into()));
        assert_eq!(parse("append"), Err("usage: append KEY VALUE".into()));
        assert_eq!(parse("get"), Err("usage: get KEY".into()));
        assert_eq!(parse("get a b"), Err("usage: get KEY".into()));
        assert_eq!(parse("delete"), Err("usage: delete KEY".into()));
        assert_eq!(parse("status now"), Err("usage: status".into()));
        assert!(parse("frobnicate x")
            .unwrap_err()
            .starts_with("unknown command \"frobnicate\""));
    }

    fn transcript(client: &mut Client, script: &str, interactive: bool) -> String {
        let mut out = Vec::new();
        run(client, script.as_bytes(), &mut out, interactive).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_script_gives_a_plain_transcript_and_errors_do_not_stop_it() {
        let node = fake::start_kv(1);
        let mut client = Client::new(vec![node.addr.clone()], ClientOptions::default());
        let script = "put greeting \"hello world\"\n\
                      append greeting '!'\n\
                      get greeting\n\
                      get nothing\n\
                      put empty \"\"\n\
                      get empty\n\
                      \n\
                      put k \"unterminated\n\
                      bogus\n\
                      put onlykey\n\
                      put multi \"a\\nb\"\n\
                      get multi\n\
                      delete greeting\n\
                      get greeting\n\
                      exit\n\
                      get never\n";
        let expected = "OK\nOK\n\"hello world!\"\n(nil)\nOK\n\"\"\n\
                        error: unterminated double quote\n\
                        unknown command \"bogus\"; type help for the list\n\
                        usage: put KEY VALUE\n\
                        OK\n\"a\\nb\"\nOK\n(nil)\n";
        assert_eq!(transcript(&mut client, script, false), expected);
    }

    #[test]
    fn interactive_mode_adds_prompt_and_timing() {
        let node = fake::start_kv(2);
        let mut client = Client::new(vec![node.addr.clone()], ClientOptions::default());
        let out = transcript(&mut client, "put a b\nleader\nstatus\n", true);
        assert!(out.starts_with("raftkv repl: 1 node(s)"), "{out}");
        assert!(out.contains("raftkv> OK\n(leader "), "{out}");
        assert!(out.contains(&format!("leader: {}", node.addr)), "{out}");
        assert!(out.contains(" ms)\n"), "{out}");
        assert!(out.contains("ROLE"), "{out}");
    }

    #[test]
    fn failures_are_printed_and_classified() {
        let mut client = Client::new(
            vec![fake::refused_addr()],
            ClientOptions {
                deadline: std::time::Duration::from_millis(100),
                ..Default::default()
            },
        );
        let out = transcript(&mut client, "put a b\nget a\n", false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with("error: not applied: "), "{out}");
        assert!(lines[1].starts_with("error: not applied: "), "{out}");
    }
}
