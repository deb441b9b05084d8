//! `raftkv repl`: a blocking read-eval-print loop over a [`Client`].
//!
//! Lines are split into words like a shell does (see [`tokenize`]), the first word is
//! the command (see [`parse_command`]), and each result is printed as one or more
//! lines. Errors never end the loop; `exit`, `quit` or end of input (Ctrl-D) do.
//!
//! On a terminal ([`run_terminal`]) the REPL behaves like redis-cli: a prompt, line
//! editing, history kept across sessions in `~/.raftkv_history` (or
//! `$RAFTKV_HISTFILE`; see [`history_path`]) with Ctrl-R to search it, tab completion
//! of command names, Ctrl-C to abandon the line being typed and Ctrl-D to leave; each
//! result is followed by `(leader n2, 1.3 ms)`: which node answered and how long the
//! command took. When input is not a terminal ([`run`]) there is no banner, prompt or
//! timing line, only results and errors, so `raftkv repl --cluster c.json < script.txt`
//! prints a stable transcript.
//!
//! `get` prints a value in double quotes with the same escapes the tokenizer reads
//! (`"a\nb"`), so an empty value (`""`) and a missing key (`(nil)`) are told apart.

use std::{
    ffi::OsString,
    io::{self, BufRead, Write},
    path::{Path, PathBuf},
    time::Instant,
};

use rustyline::{
    completion::{Completer, Pair},
    error::ReadlineError,
    highlight::Highlighter,
    hint::Hinter,
    history::DefaultHistory,
    validate::Validator,
    CompletionType, Config, Context, Editor, Helper,
};

use crate::client::{fmt_duration, Client};

/// The environment variable that overrides where the history is kept (empty: keep
/// none), like redis-cli's `REDISCLI_HISTFILE`.
pub const HISTFILE_ENV: &str = "RAFTKV_HISTFILE";
/// The history file's name in the user's home directory.
pub const HISTORY_FILE: &str = ".raftkv_history";
/// Lines of history kept.
const HISTORY_LINES: usize = 1000;
/// The command names tab completion offers (aliases included), sorted.
const COMMANDS: [&str; 10] = [
    "append", "del", "delete", "exit", "get", "help", "leader", "put", "quit", "status",
];

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

/// What the loop does after a line.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// Runs one input line: parses it, runs the command and writes the result to `out`,
/// with `timed` followed by the line naming the node that answered and the time taken.
fn step<W: Write>(client: &mut Client, line: &str, out: &mut W, timed: bool) -> io::Result<Flow> {
    let words = match tokenize(line) {
        Ok(words) => words,
        Err(e) => {
            writeln!(out, "error: {e}")?;
            return Ok(Flow::Continue);
        }
    };
    let command = match parse_command(&words) {
        Ok(None) => return Ok(Flow::Continue),
        Ok(Some(ReplCommand::Exit)) => return Ok(Flow::Exit),
        Ok(Some(command)) => command,
        Err(usage) => {
            writeln!(out, "{usage}")?;
            return Ok(Flow::Continue);
        }
    };
    let timed = timed && !matches!(command, ReplCommand::Help);
    let started = Instant::now();
    let (text, answered_by) = execute(client, command);
    let elapsed = fmt_duration(started.elapsed());
    writeln!(out, "{text}")?;
    if timed {
        match answered_by {
            Some(addr) => writeln!(out, "(leader {}, {elapsed})", client.node_label(&addr))?,
            None => writeln!(out, "({elapsed})")?,
        }
    }
    out.flush()?;
    Ok(Flow::Continue)
}

/// Runs the loop over input that is not a terminal: reads commands from `input` until
/// end of input or `exit`, writes results (and errors) to `out`, nothing else. Returns
/// only on end of input, `exit`, or an I/O error.
pub fn run<R: BufRead, W: Write>(client: &mut Client, mut input: R, out: &mut W) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            writeln!(out, "error: the line is not valid UTF-8")?;
            continue;
        };
        if step(client, text.trim_end_matches(['\n', '\r']), out, false)? == Flow::Exit {
            return Ok(());
        }
    }
}

/// Where the terminal REPL keeps its history: `$RAFTKV_HISTFILE` when set (empty:
/// nowhere), else `~/.raftkv_history`; nowhere without a home directory. `histfile`
/// and `home` are the values of those two variables.
pub fn history_path(histfile: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    match histfile {
        Some(path) if path.is_empty() => None,
        Some(path) => Some(PathBuf::from(path)),
        None => home
            .filter(|home| !home.is_empty())
            .map(|home| Path::new(&home).join(HISTORY_FILE)),
    }
}

/// Tab completion: where the word under the cursor starts, and the command names it
/// may complete to. Only the first word of a line is a command; nothing is offered
/// after it.
fn complete(line: &str, pos: usize) -> (usize, Vec<&'static str>) {
    let before = &line[..pos];
    let start = before.len() - before.trim_start().len();
    let word = &before[start..];
    if word.contains(char::is_whitespace) {
        return (pos, Vec::new());
    }
    let word = word.to_ascii_lowercase();
    let names = COMMANDS
        .iter()
        .copied()
        .filter(|name| name.starts_with(&word))
        .collect();
    (start, names)
}

/// What rustyline asks of the REPL: completion of command names; no hints, colours or
/// multi-line input.
struct ReplHelper;

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, names) = complete(line, pos);
        let candidates = names
            .into_iter()
            .map(|name| Pair {
                display: name.to_string(),
                replacement: format!("{name} "),
            })
            .collect();
        Ok((start, candidates))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}
impl Highlighter for ReplHelper {}
impl Validator for ReplHelper {}
impl Helper for ReplHelper {}

fn io_error(e: ReadlineError) -> io::Error {
    match e {
        ReadlineError::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// Runs the loop on a terminal: a banner, the `raftkv> ` prompt with line editing, the
/// history of `history` (loaded at start, new lines appended at the end; a file that
/// cannot be read or written costs a note on stderr, never the session), and a timing
/// line after each result. Returns at `exit`, Ctrl-D or an I/O error.
pub fn run_terminal(client: &mut Client, history: Option<&Path>) -> io::Result<()> {
    let config = Config::builder()
        .max_history_size(HISTORY_LINES)
        .and_then(|c| c.history_ignore_dups(true))
        .map_err(io_error)?
        // A line typed with a leading space stays out of the history, as in bash.
        .history_ignore_space(true)
        .completion_type(CompletionType::List)
        .build();
    let mut editor: Editor<ReplHelper, DefaultHistory> =
        Editor::with_config(config).map_err(io_error)?;
    editor.set_helper(Some(ReplHelper));
    if let Some(path) = history {
        match editor.load_history(path) {
            Ok(()) => {}
            Err(ReadlineError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "raftkv repl: cannot read the history file {}: {e}",
                path.display()
            ),
        }
    }
    let mut out = io::stdout();
    writeln!(
        out,
        "raftkv repl: {} node(s); type help for commands",
        client.addrs().len()
    )?;
    let result = loop {
        match editor.readline("raftkv> ") {
            Ok(line) => {
                // Without the space completion leaves after a command name.
                let entry = line.trim_end();
                if !entry.is_empty() {
                    let _ = editor.add_history_entry(entry);
                }
                match step(client, &line, &mut out, true) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Exit) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            // Ctrl-C abandons the line being typed, as in a shell; Ctrl-D leaves.
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => break Ok(()),
            Err(e) => break Err(io_error(e)),
        }
    };
    if let Some(path) = history {
        if let Err(e) = editor.append_history(path) {
            eprintln!(
                "raftkv repl: the history was not saved to {}: {e}",
                path.display()
            );
        }
    }
    result
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

    fn transcript(client: &mut Client, script: &str) -> String {
        let mut out = Vec::new();
        run(client, script.as_bytes(), &mut out).unwrap();
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
        assert_eq!(transcript(&mut client, script), expected);
    }

    #[test]
    fn on_a_terminal_each_result_is_followed_by_its_node_and_time() {
        let node = fake::start_kv(2);
        let mut client = Client::new(vec![node.addr.clone()], ClientOptions::default());
        let mut out = Vec::new();
        for line in ["put a b", "leader", "status", "help", "bogus", "exit"] {
            step(&mut client, line, &mut out, true).unwrap();
        }
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("OK\n(leader "), "{out}");
        assert!(out.contains(&format!("leader: {}", node.addr)), "{out}");
        assert!(out.contains(" ms)\n"), "{out}");
        assert!(out.contains("ROLE"), "{out}");
        assert!(
            out.ends_with("type help for the list\n"),
            "no timing after help or an error: {out}"
        );
        assert_eq!(
            step(&mut client, "exit", &mut Vec::new(), true).unwrap(),
            Flow::Exit
        );
    }

    #[test]
    fn tab_completes_command_names_in_the_first_word_only() {
        assert_eq!(complete("", 0), (0, COMMANDS.to_vec()));
        assert_eq!(complete("p", 1), (0, vec!["put"]));
        assert_eq!(complete("  de", 4), (2, vec!["del", "delete"]));
        assert_eq!(
            complete("GE", 2),
            (0, vec!["get"]),
            "names are case-insensitive"
        );
        assert_eq!(complete("st", 2), (0, vec!["status"]));
        assert_eq!(complete("x", 1), (0, vec![]));
        assert_eq!(complete("get k", 5), (5, vec![]), "keys are not completed");
        assert_eq!(complete("get ", 4), (4, vec![]));
        // The cursor in the middle of the first word completes what is before it.
        assert_eq!(complete("ap key", 2), (0, vec!["append"]));
        let mut sorted = COMMANDS;
        sorted.sort_unstable();
        assert_eq!(sorted, COMMANDS);
        for name in COMMANDS {
            assert!(
                parse(name).is_ok() || parse(name).unwrap_err().starts_with("usage"),
                "{name} is a command"
            );
        }
    }

    #[test]
    fn the_history_lives_in_the_home_directory_unless_the_variable_says_otherwise() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            history_path(None, os("/home/ann")),
            Some(PathBuf::from("/home/ann/.raftkv_history"))
        );
        assert_eq!(
            history_path(os("/tmp/h"), os("/home/ann")),
            Some(PathBuf::from("/tmp/h"))
        );
        assert_eq!(history_path(os(""), os("/home/ann")), None, "empty: none");
        assert_eq!(history_path(None, None), None, "no home: none");
        assert_eq!(history_path(None, os("")), None);
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
        let out = transcript(&mut client, "put a b\nget a\n");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with("error: not applied: "), "{out}");
        assert!(lines[1].starts_with("error: not applied: "), "{out}");
    }
}
