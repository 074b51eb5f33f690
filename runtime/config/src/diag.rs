//! Error reports: where (`file:line:col`), what, and how to fix it.

use std::fmt;
use std::ops::Range;

/// One problem in a config file, with its position and, where we know it, the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The config file as it was named to us.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Renders diagnostics one after another, each on its own line(s).
pub(crate) fn render(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Collects diagnostics against one source text.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    file: &'a str,
    text: &'a str,
    pub(crate) out: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Sink {
            file,
            text,
            out: Vec::new(),
        }
    }

    /// Records an error at `span` (start of the file when there is none).
    pub(crate) fn error(
        &mut self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let (line, column) = line_col(self.text, span.map_or(0, |s| s.start));
        self.out.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
            help,
        });
    }
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// `"a, b, c"` plus ` (did you mean `b`?)` when `wrong` is a near miss of one of them.
pub(crate) fn choices_help<'c>(
    what: &str,
    wrong: &str,
    choices: impl IntoIterator<Item = &'c str> + Clone,
) -> String {
    let list: Vec<&str> = choices.clone().into_iter().collect();
    let mut help = if list.is_empty() {
        format!("{what}: none")
    } else {
        format!("{what}: {}", list.join(", "))
    };
    if let Some(near) = did_you_mean(wrong, choices) {
        help.push_str(&format!(" (did you mean `{near}`?)"));
    }
    help
}

/// The closest candidate to `wrong`, if it is close enough to be a typo.
pub(crate) fn did_you_mean<'c>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let limit = (wrong.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(wrong, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Edit distance by characters, counting a swap of neighbours as one edit (`retyr` is one
/// typo away from `retry`): the optimal-string-alignment variant of Levenshtein.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j - 1] + cost)
                .min(d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Turns a TOML/serde error into our shape. serde says "unknown field `x`, expected one of
/// `a`, `b`"; we say "unknown key" and offer the valid keys and the near miss.
pub(crate) fn from_toml(sink: &mut Sink<'_>, err: &toml::de::Error) {
    let message = err.message().trim_end();
    let span = err.span();
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((key, expected)) = rest.split_once('`')
    {
        let valid: Vec<&str> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|k| !k.is_empty())
            .collect();
        let help = choices_help("valid keys here", key, valid.iter().copied());
        sink.error(span, format!("unknown key `{key}`"), Some(help));
    } else if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((key, _)) = rest.split_once('`')
    {
        sink.error(
            span,
            format!("missing key `{key}`"),
            Some(format!(
                "add `{key} = ...` to this table; see docs/config.md"
            )),
        );
    } else if message.contains("untagged enum SizeValue") {
        sink.error(
            span,
            "expected a size".to_owned(),
            Some(crate::units::SIZE_HELP.to_owned()),
        );
    } else {
        // serde names Rust types; a config author thinks in TOML ones.
        let help = if message.starts_with("invalid type: integer")
            || message.starts_with("invalid type: floating point")
        {
            // A bare number where text goes: nearly always a duration (`30` could mean
            // seconds or milliseconds, so it is refused) or a quoted name.
            Some(
                "durations are written with their unit, in quotes: \"30s\", \"500ms\", \"5m\"; \
                 names, paths and addresses are quoted too"
                    .to_owned(),
            )
        } else if message.starts_with("invalid type: string")
            && (message.contains("expected i64") || message.contains("expected u"))
        {
            Some("write the number without quotes, e.g. `max_attempts = 5`".to_owned())
        } else if message.contains("expected a boolean") {
            Some("write true or false, without quotes".to_owned())
        } else {
            None
        };
        let message = message
            .replace("expected i64", "expected a whole number")
            .replace("expected a boolean", "expected true or false");
        sink.error(span, message, help);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_and_suggestion() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("retyr", "retry"), 1);
        assert_eq!(
            did_you_mean("visit-status-mapp", ["visit-status-map", "demographics"]),
            Some("visit-status-map")
        );
        assert_eq!(did_you_mean("zzz", ["visit-status-map"]), None);
    }

    #[test]
    fn positions_are_one_based_characters() {
        assert_eq!(line_col("a\nbé c", 0), (1, 1));
        assert_eq!(line_col("a\nbé c", 2), (2, 1));
        assert_eq!(line_col("a\nbé c", 5), (2, 3));
    }
}
