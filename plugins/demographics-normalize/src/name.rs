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
///
/// Text between two backslashes is an HL7 escape sequence the engine kept as the sender
/// wrote it (`\.br\`, `\H\`, `\Zxx\`, a `\Xhh\` that is not text here): it is left as
/// it is, since `\.BR\` is no longer a line break.
pub fn normalize(name: &str) -> String {
    let collapsed = collapse_whitespace(name);
    let mut out = String::with_capacity(collapsed.len());
    let mut rest = collapsed.as_str();
    while !rest.is_empty() {
        let (text, sequence) = match rest.find('\\') {
            Some(open) => match rest[open + 1..].find('\\') {
                Some(len) => (&rest[..open], &rest[open..open + len + 2]),
                None => (rest, ""),
            },
            None => (rest, ""),
        };
        uppercase_into(text, &mut out);
        out.push_str(sequence);
        rest = &rest[text.len() + sequence.len()..];
    }
    out
}

fn uppercase_into(text: &str, out: &mut String) {
    for c in text.chars() {
        let latin1 = u32::from(c) <= 0xFF;
        let upper = c.to_uppercase();
        if latin1 && upper.clone().any(|u| u32::from(u) > 0xFF) {
            out.push(c);
        } else {
            out.extend(upper);
        }
    }
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
    fn escape_sequences_are_left_as_written() {
        assert_eq!(normalize(r"smith\.br\ann"), r"SMITH\.br\ANN");
        assert_eq!(normalize(r"caf\Xe9\ x"), r"CAF\Xe9\ X");
        assert_eq!(normalize(r"\H\doe\N\"), r"\H\DOE\N\");
        // A lone backslash is text, and what follows it is uppercased as usual.
        assert_eq!(normalize(r"doe\jane"), r"DOE\JANE");
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
