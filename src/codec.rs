//! Newline-delimited JSON framing, shared by peers, clients and the CLI.
//!
//! Every reader in the project goes through [`read_line`], which refuses to buffer more
//! than a caller-chosen number of bytes: a peer or client that never sends `\n` cannot
//! make a node allocate without bound.

use std::io::{self, BufRead, Write};

/// What one call to [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line is in the buffer, without its trailing `\n` (and `\r`).
    Complete,
    /// The stream ended cleanly before any byte of a new line.
    Eof,
    /// The stream ended in the middle of a line (the partial line is discarded).
    Truncated,
    /// The line grew past the limit; the buffer holds its first `max` bytes and the
    /// stream is positioned somewhere inside the line, so the caller should close it.
    TooLong,
}

/// Reads one `\n`-terminated line into `buf` (cleared first), refusing lines longer
/// than `max` bytes.
pub fn read_line<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                Line::Eof
            } else {
                Line::Truncated
            });
        }
        let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
            Some(pos) => (&available[..pos], true),
            None => (available, false),
        };
        if buf.len() + chunk.len() > max {
            let room = max - buf.len();
            buf.extend_from_slice(&chunk[..room]);
            let consumed = chunk.len();
            reader.consume(consumed);
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(chunk);
        let consumed = chunk.len() + usize::from(found);
        reader.consume(consumed);
        if found {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Line::Complete);
        }
    }
}

/// Serializes `value` as one JSON line (with the trailing `\n`) onto `out`.
pub fn write_json_line<W: Write, T: serde::Serialize + ?Sized>(
    out: &mut W,
    value: &T,
) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn lines(input: &[u8], max: usize) -> Vec<(Line, Vec<u8>)> {
        let mut r = io::BufReader::with_capacity(4, Cursor::new(input.to_vec()));
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            let l = read_line(&mut r, &mut buf, max).unwrap();
            let stop = matches!(l, Line::Eof | Line::Truncated | Line::TooLong);
            out.push((l, buf));
            if stop {
                return out;
            }
        }
    }

    #[test]
    fn splits_lines_across_small_buffers() {
        let got = lines(b"hello world\r\nsecond\n", 100);
        assert_eq!(got[0], (Line::Complete, b"hello world".to_vec()));
        assert_eq!(got[1], (Line::Complete, b"second".to_vec()));
        assert_eq!(got[2].0, Line::Eof);
    }

    #[test]
    fn a_half_line_then_eof_is_truncated() {
        let got = lines(b"{\"op\":", 100);
        assert_eq!(got[0].0, Line::Truncated);
    }

    #[test]
    fn refuses_lines_over_the_limit() {
        let got = lines(b"0123456789abcdef\nok\n", 8);
        assert_eq!(got[0], (Line::TooLong, b"01234567".to_vec()));
        // exactly at the limit is fine
        let got = lines(b"01234567\n", 8);
        assert_eq!(got[0], (Line::Complete, b"01234567".to_vec()));
    }
}
