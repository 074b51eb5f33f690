//! Human units: sizes (`"16MiB"`, `65536`) and durations (`"500ms"`, `"30d"`).

use std::time::Duration;

/// What a size may look like, for error help.
pub(crate) const SIZE_HELP: &str = "write a byte count (65536) or a number and a unit: B, KiB, MiB, GiB (e.g. \"64KiB\", \"16MiB\")";

/// What a duration may look like, for error help.
pub(crate) const DURATION_HELP: &str =
    "write a whole number and a unit: ms, s, m, h, d (e.g. \"500ms\", \"5m\", \"30d\")";

/// Parses `"16MiB"`, `"64KiB"`, `"512B"` or `"1024"` into bytes.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = split_number(text.trim())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// Parses `"500ms"`, `"1s"`, `"5m"`, `"24h"` or `"30d"`. A unit is required: a bare number
/// could mean seconds or milliseconds, and a wrong guess is a silent outage.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = split_number(text.trim())?;
    let seconds = |scale: u64| number.checked_mul(scale).map(Duration::from_secs);
    match unit.trim() {
        "ms" => Some(Duration::from_millis(number)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(60 * 60),
        "d" => seconds(24 * 60 * 60),
        _ => None,
    }
}

/// `"16MiB"` -> `(16, "MiB")`. Needs at least one digit.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return None;
    }
    let number = text[..digits].parse().ok()?;
    Some((number, &text[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        assert_eq!(parse_size("64 KiB"), Some(64 << 10));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("512B"), Some(512));
        assert_eq!(parse_size("1024"), Some(1024));
        for bad in ["", "MiB", "16MB", "1.5MiB", "-1", "99999999999999999999GiB"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(
            parse_duration("30d"),
            Some(Duration::from_secs(30 * 86_400))
        );
        for bad in ["", "5", "5 minutes", "1.5s", "s", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
