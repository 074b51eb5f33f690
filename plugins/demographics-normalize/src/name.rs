//! Person names: one spelling of whitespace and case.
//!
//! The rule: trim, collapse every run of whitespace to one space, and uppercase every
//! letter. Uppercase is the one case rule that loses nothing a receiver could match on:
//! title case would have to guess at `McDONALD`, `O'BRIEN`, `van der BERG` and `DE LA CRUZ`,
//! and would guess wrong for some of them. Punctuation (hyphens, apostrophes, periods)
//! is kept as written.
//!
//! A letter whose uppercase falls outside Latin-1 while the letter itself is inside it
//! (`ÿ` → `Ÿ`, `µ` → `Μ`) is kept as it is, so a name read from an ISO 8859-1 message can
//! always be written back to it.

use alloc::string::String;
use plexus_sdk::text::collapse_whitespace;

/// `"  o'brien   mary-kate "` → `"O'BRIEN MARY-KATE"`; a value of only whitespace becomes
/// empty.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in collapse_whitespace(name).chars() {
        let latin1 = u32::from(c) <= 0xFF;
        let upper = c.to_uppercase();
        if latin1 && upper.clone().any(|u| u32::from(u) > 0xFF) {
            out.push(c);
        } else {
            out.extend(upper);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn names_are_trimmed_collapsed_and_uppercased() {
        for (raw, want) in [
            ("doe", "DOE"),
            ("  Doe  ", "DOE"),
            ("mary   kate", "MARY KATE"),
            ("o'brien-smith", "O'BRIEN-SMITH"),
            ("van der berg", "VAN DER BERG"),
            ("jr.", "JR."),
            ("Ñúñez", "ÑÚÑEZ"),
            ("straße", "STRASSE"),
            ("\t", ""),
            ("DOE", "DOE"),
        ] {
            assert_eq!(normalize(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn latin1_letters_stay_latin1() {
        assert_eq!(normalize("ÿves"), "ÿVES");
        assert_eq!(normalize("µller"), "µLLER");
        // Outside Latin-1 already: uppercased as usual.
        assert_eq!(normalize("łukasz"), "ŁUKASZ");
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for raw in ["  o'brien  mary ", "ÿves", "straße"] {
            let once = normalize(raw);
            assert_eq!(normalize(&once), once);
        }
    }
}
