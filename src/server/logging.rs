//! The node's log: one line per event on stderr,
//! `2024-05-01T12:34:56.789Z INFO  n1@3 became leader ...`.
//!
//! The node id and current term in every line come from process-wide atomics that the
//! state thread keeps up to date, so any thread can log without touching the replica.
//! Each line is formatted into one buffer and written with one call, so lines from
//! different threads never interleave.

use std::{
    fmt::{self, Write as _},
    io::Write as _,
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::error::{Error, Result};

/// How much the node logs; each level includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    /// Every Raft message sent and received, among others.
    Debug = 3,
}

impl Level {
    /// Parses `error`, `warn`, `info` or `debug` (case-insensitive).
    pub fn parse(s: &str) -> Result<Level> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(Level::Error),
            "warn" | "warning" => Ok(Level::Warn),
            "info" => Ok(Level::Info),
            "debug" | "trace" => Ok(Level::Debug),
            _ => Err(Error::Config(format!(
                "unknown log level {s:?} (expected error, warn, info or debug)"
            ))),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static NODE: AtomicU64 = AtomicU64::new(0);
static TERM: AtomicU64 = AtomicU64::new(0);

/// Sets the node id shown in every line and the verbosity.
pub(crate) fn init(node: u64, level: Level) {
    NODE.store(node, Ordering::Relaxed);
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Records the current term for the `n1@3` prefix.
pub(crate) fn set_term(term: u64) {
    TERM.store(term, Ordering::Relaxed);
}

/// Whether lines of `level` are written; check before formatting anything costly.
pub(crate) fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line (use the `error!`..`debug!` macros rather than this).
pub(crate) fn write(level: Level, args: fmt::Arguments<'_>) {
    let mut line = String::with_capacity(128);
    push_timestamp(&mut line, SystemTime::now());
    let _ = write!(
        line,
        " {} n{}@{} ",
        level.label(),
        NODE.load(Ordering::Relaxed),
        TERM.load(Ordering::Relaxed)
    );
    let _ = line.write_fmt(args);
    line.push('\n');
    // Nothing sensible can be done if stderr is gone.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
fn push_timestamp(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Lets one line through per interval, for failures that can repeat in a tight loop
/// (e.g. `accept` failing while the process is out of file descriptors).
pub(crate) struct Throttle {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl Throttle {
    pub(crate) fn new(every: std::time::Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` if a line may be written now (`n` lines were suppressed since the
    /// last one), `None` if this one should be suppressed.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        if $crate::server::logging::enabled($level) {
            $crate::server::logging::write($level, format_args!($($arg)*))
        }
    };
}
macro_rules! error { ($($arg:tt)*) => { $crate::server::logging::log_at!($crate::server::logging::Level::Error, $($arg)*) }; }
macro_rules! warning { ($($arg:tt)*) => { $crate::server::logging::log_at!($crate::server::logging::Level::Warn, $($arg)*) }; }
macro_rules! info { ($($arg:tt)*) => { $crate::server::logging::log_at!($crate::server::logging::Level::Info, $($arg)*) }; }
macro_rules! debug { ($($arg:tt)*) => { $crate::server::logging::log_at!($crate::server::logging::Level::Debug, $($arg)*) }; }
pub(crate) use {debug, error, info, log_at, warning};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_timestamps() {
        let mut s = String::new();
        push_timestamp(&mut s, UNIX_EPOCH);
        assert_eq!(s, "1970-01-01T00:00:00.000Z");
        s.clear();
        // 2024-02-29T23:59:58.123Z, a leap day
        push_timestamp(
            &mut s,
            UNIX_EPOCH + Duration::from_millis(1_709_251_198_123),
        );
        assert_eq!(s, "2024-02-29T23:59:58.123Z");
        s.clear();
        push_timestamp(&mut s, UNIX_EPOCH + Duration::from_secs(951_782_400)); // 2000-02-29
        assert_eq!(s, "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_levels() {
        assert_eq!(Level::parse("DEBUG").unwrap(), Level::Debug);
        assert_eq!(Level::parse("warn").unwrap(), Level::Warn);
        assert!(Level::parse("loud").is_err());
        assert!(Level::Error < Level::Debug);
    }
}
