//! Small text helpers for values and for the errors that name them.

use crate::prelude::*;
use core::fmt::Write as _;

/// Trims `value` and collapses every run of whitespace inside it to one space:
/// `"  DOE   JANE "` becomes `"DOE JANE"`.
pub fn collapse_whitespace(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for word in value.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The folded form of a key: [whitespace collapsed](collapse_whitespace), then lowercased.
/// `"  Checked   IN "` folds to `"checked in"`.
pub fn fold_key(key: &str) -> String {
    collapse_whitespace(key)
        .chars()
        .flat_map(char::to_lowercase)
        .collect()
}

/// `value` as it may appear in an error detail: in backticks, at most 64 characters,
/// control characters escaped, so a stray free-text field cannot flood the error queue.
///
/// Name values in errors only when the operator needs them to fix a mapping (the unmapped
/// code); never patient data.
pub fn quoted(value: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::from("`");
    for (i, c) in value.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('`');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_trimmed_and_collapsed() {
        assert_eq!(collapse_whitespace("  DOE \t  JANE  "), "DOE JANE");
        assert_eq!(collapse_whitespace(" \t "), "");
    }

    #[test]
    fn folding_trims_collapses_and_lowercases() {
        assert_eq!(fold_key("  Checked \t  IN "), "checked in");
        assert_eq!(fold_key("ÉTÉ"), "été");
        assert_eq!(fold_key("   "), "");
    }

    #[test]
    fn quoted_values_are_bounded_and_escaped() {
        assert_eq!(quoted("Roomed"), "`Roomed`");
        assert_eq!(quoted("a\rb"), "`a\\rb`");
        let long = "x".repeat(100);
        assert_eq!(quoted(&long).chars().count(), 67);
    }
}
