//! Golden scripts (tests/scripts/*.txt): each runs through `raftkv::sim::script` and
//! must print exactly the output stored under its commands. After a deliberate change
//! of behaviour, `make golden` rewrites the files; review the diff like code.

use std::{fs, path::Path};

/// Set by `make golden`: write the new output instead of comparing.
const REWRITE: &str = "RAFTKV_GOLDEN";
/// Runs only the scripts whose file name contains this text (while writing one).
const ONLY: &str = "RAFTKV_GOLDEN_ONLY";

#[test]
fn golden_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts");
    let mut paths: Vec<_> = fs::read_dir(&dir)
        .expect("tests/scripts exists")
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .filter(|p| {
            std::env::var(ONLY).map_or(true, |only| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(&only))
            })
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no scripts in {}", dir.display());
    let rewrite = std::env::var(REWRITE).is_ok_and(|v| v == "rewrite");
    let mut failures = Vec::new();
    for path in &paths {
        let name = path.file_name().expect("file name").to_string_lossy();
        let expected = fs::read_to_string(path).expect("readable script");
        let actual = match raftkv::sim::script::run(&expected) {
            Ok(text) => text,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if actual == expected {
            continue;
        }
        if rewrite {
            fs::write(path, &actual).expect("writable script");
            println!("rewrote {name}");
        } else {
            failures.push(format!("{name} changed:\n{}", diff(&expected, &actual)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden scripts failed (run `make golden` to accept new output, then \
         review the diff):\n\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n\n")
    );
}

/// A line diff (`-` expected, `+` actual) with two lines of context, from the longest
/// common subsequence; scripts are small, so the quadratic table is fine.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut lines = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            lines.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            lines.push(('+', b[j]));
            j += 1;
        } else {
            lines.push(('-', a[i]));
            i += 1;
        }
    }
    let near_change = |k: usize| {
        lines[k.saturating_sub(2)..(k + 3).min(lines.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    for (k, (c, line)) in lines.iter().enumerate() {
        if near_change(k) {
            out.push_str(&format!("{c} {line}\n"));
        } else if k > 0 && near_change(k - 1) {
            out.push_str("  ...\n");
        }
    }
    out
}
