//! Capability `log`: log lines from the plug-in, capped in count, total bytes and line
//! length per message. What is over the caps is counted and reported, not kept.

use crate::bindings::plexus::transform::log::{self as wit, Level};
use crate::config::Limits;
use crate::host::HostState;

/// One line a plug-in logged (or wrote to stdout/stderr).
#[derive(Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level (stdout is `info`, stderr `warn`).
    pub level: LogLevel,
    /// The text, cut to the line limit.
    pub line: String,
}

// Plug-ins are told not to log message content above debug, but a line is still
// untrusted text: Debug shows its level and length only.
impl std::fmt::Debug for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLine")
            .field("level", &self.level)
            .field("len", &self.line.len())
            .finish()
    }
}

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl From<Level> for LogLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        }
    }
}

/// The capped log of one run.
pub(crate) struct LogSink {
    pub(crate) lines: Vec<LogLine>,
    pub(crate) dropped: usize,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
    max_line: usize,
}

impl LogSink {
    pub(crate) fn new(limits: &Limits) -> Self {
        LogSink {
            lines: Vec::new(),
            dropped: 0,
            bytes: 0,
            max_lines: limits.log_lines,
            max_bytes: limits.log_bytes,
            max_line: limits.log_line_bytes,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.lines.clear();
        self.dropped = 0;
        self.bytes = 0;
    }

    pub(crate) fn push(&mut self, level: LogLevel, line: &str) {
        if self.lines.len() >= self.max_lines {
            self.dropped += 1;
            return;
        }
        // A line is one line: control characters (a newline, a terminal escape) are
        // written escaped, so a plug-in cannot forge log lines of its own. Cut and
        // counted after escaping, so the caps hold for what is kept.
        let escaped = escape_controls(cut(line, self.max_line));
        let line = cut(&escaped, self.max_line);
        if self.bytes + line.len() > self.max_bytes {
            self.dropped += 1;
            return;
        }
        self.bytes += line.len();
        self.lines.push(LogLine {
            level,
            line: line.to_owned(),
        });
    }
}

/// `text` with control characters but tab written as escapes (`\n`, `\u{1b}`).
pub(crate) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(crate) fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` whole when it fits in `max` bytes; otherwise cut on a character boundary and
/// marked as cut, the whole still at most `max` bytes.
pub(crate) fn bounded(text: String, max: usize) -> String {
    const MARK: &str = "… (cut)";
    if text.len() <= max {
        return text;
    }
    // A new string: truncating would keep the whole (possibly huge) allocation alive.
    let mut kept = cut(&text, max.saturating_sub(MARK.len())).to_owned();
    kept.push_str(MARK);
    kept
}

impl wit::Host for HostState {
    fn log(&mut self, level: Level, line: String) -> wasmtime::Result<()> {
        self.log.push(level.into(), &line);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_lines_bytes_and_length() {
        let limits = Limits {
            log_lines: 3,
            log_bytes: 10,
            log_line_bytes: 4,
            ..Limits::default()
        };
        let mut sink = LogSink::new(&limits);
        for line in ["abcdef", "gh", "ijkl", "mn", "op"] {
            sink.push(LogLevel::Info, line);
        }
        let kept: Vec<_> = sink.lines.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(kept, ["abcd", "gh", "ijkl"]);
        assert_eq!(sink.dropped, 2);
        assert_eq!(cut("héllo", 2), "h");
    }

    #[test]
    fn control_characters_are_escaped_within_the_caps() {
        let limits = Limits {
            log_lines: 10,
            log_bytes: 96,
            log_line_bytes: 32,
            ..Limits::default()
        };
        let mut sink = LogSink::new(&limits);
        sink.push(LogLevel::Info, "forged\nINFO admin logged in\u{1b}[2J");
        sink.push(LogLevel::Info, &"\u{1}".repeat(1_000));
        sink.push(LogLevel::Info, "tab\tkept");
        let kept: Vec<_> = sink.lines.iter().map(|l| l.line.as_str()).collect();
        assert!(
            kept.iter().all(|l| !l.contains(['\n', '\u{1b}', '\u{1}'])),
            "{kept:?}"
        );
        assert!(kept[0].starts_with("forged\\nINFO"), "{kept:?}");
        assert!(kept.iter().all(|l| l.len() <= 32), "{kept:?}");
        assert!(sink.bytes <= 96);
        assert_eq!(kept.last(), Some(&"tab\tkept"));
    }

    #[test]
    fn bounded_text_is_cut_on_a_char_boundary_and_marked() {
        assert_eq!(bounded("short".to_owned(), 64), "short");
        let long = bounded("é".repeat(100), 20);
        assert!(long.len() <= 20, "{long}");
        assert!(long.starts_with("éé") && long.ends_with("(cut)"), "{long}");
    }
}
