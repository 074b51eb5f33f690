//! Administrative sex (`PID-8`) to HL7 table 0001.
//!
//! | written (any case, surrounding whitespace ignored) | code |
//! |---|---|
//! | `F`, `female`, `fem`, `woman` | `F` |
//! | `M`, `male`, `man` | `M` |
//! | `O`, `other` | `O` |
//! | `U`, `unknown`, `unk` | `U` |
//! | `A`, `ambiguous` | `A` |
//! | `N`, `not applicable`, `n/a`, `na` | `N` |
//!
//! Anything else is unknown, and the plug-in fails the message with `invalid-input`
//! rather than map it to `U`: `U` would assert "the sender does not know", losing a
//! value the sender did know but spelled in a way no one has mapped yet (`W` for
//! *weiblich*, `X`, a typo). An operator can see the spelling in the error queue, fix the
//! sender or extend this table, and replay.
//!
//! Single letters other than the six codes are deliberately not guessed at: `W` may mean
//! *woman* or *weiblich* (female) to one sender and something else to another.

use plexus_sdk::text::fold_key;

/// The value is not a code of table 0001 nor a spelling this plug-in knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unknown;

/// The table 0001 code for `value`; `Ok("")` for a value of only whitespace.
pub fn code(value: &str) -> Result<&'static str, Unknown> {
    Ok(match fold_key(value).as_str() {
        "" => "",
        "f" | "female" | "fem" | "woman" => "F",
        "m" | "male" | "man" => "M",
        "o" | "other" => "O",
        "u" | "unknown" | "unk" => "U",
        "a" | "ambiguous" => "A",
        "n" | "not applicable" | "n/a" | "na" => "N",
        _ => return Err(Unknown),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_common_spellings_map_to_table_0001() {
        for (raw, want) in [
            ("F", "F"),
            ("f", "F"),
            (" Female ", "F"),
            ("FEMALE", "F"),
            ("Male", "M"),
            ("m", "M"),
            ("other", "O"),
            ("Unknown", "U"),
            ("unk", "U"),
            ("A", "A"),
            ("Not  Applicable", "N"),
            ("n/a", "N"),
            ("  ", ""),
        ] {
            assert_eq!(code(raw), Ok(want), "{raw:?}");
        }
    }

    #[test]
    fn anything_else_is_unknown() {
        for raw in ["W", "x", "fm", "femme", "\"\"", "1", "F M"] {
            assert_eq!(code(raw), Err(Unknown), "{raw:?}");
        }
    }
}
