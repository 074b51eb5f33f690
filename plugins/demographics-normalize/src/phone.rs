//! North American (NANP) phone numbers in one format.
//!
//! A number is NANP when, after removing formatting (spaces, `(`, `)`, `-`, `.`, `/`), it
//! has 10 digits, or 11 starting with the country code `1` (written `1` or `+1`), and
//! both the area code and the exchange start with 2-9. It may end with an extension:
//! `x123`, `X123`, `ext 123`, `ext. 123`, `extension 123` or `#123`.
//!
//! It is written the HL7 TN way, `(AAA)EEE-NNNN`, with `X` and the extension appended when
//! there is one: `(608)555-0147X22`. Anything else (international numbers, 7-digit local
//! numbers without an area code, vanity numbers, e-mail addresses, free text) is not
//! recognised and is left exactly as it is.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;

/// A recognised NANP number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nanp {
    area: String,
    exchange: String,
    line: String,
    extension: Option<String>,
}

impl Nanp {
    /// Recognises `number` (as written in XTN-1); `extension` is XTN-8, used when the
    /// number carries none of its own.
    pub fn parse(number: &str, extension: Option<&str>) -> Option<Nanp> {
        let (digits, own_extension) = split(number.trim())?;
        let digits = match digits.len() {
            10 => digits.as_str(),
            11 if digits.starts_with('1') => &digits[1..],
            _ => return None,
        };
        let (area, rest) = digits.split_at(3);
        let (exchange, line) = rest.split_at(3);
        let leads_ok = |part: &str| part.starts_with(|c: char| ('2'..='9').contains(&c));
        if !leads_ok(area) || !leads_ok(exchange) {
            return None;
        }
        let extension = own_extension.or_else(|| {
            extension
                .map(str::trim)
                .filter(|e| is_extension(e))
                .map(str::to_owned)
        });
        Some(Nanp {
            area: area.to_owned(),
            exchange: exchange.to_owned(),
            line: line.to_owned(),
            extension,
        })
    }

    /// `(AAA)EEE-NNNN`, plus `X` and the extension if there is one: XTN-1.
    pub fn formatted(&self) -> String {
        let mut out = format!("({}){}-{}", self.area, self.exchange, self.line);
        if let Some(ext) = &self.extension {
            out.push('X');
            out.push_str(ext);
        }
        out
    }

    /// The area code: XTN-6.
    pub fn area(&self) -> &str {
        &self.area
    }

    /// The seven-digit local number without punctuation: XTN-7.
    pub fn local(&self) -> String {
        format!("{}{}", self.exchange, self.line)
    }

    /// The extension, if any: XTN-8.
    pub fn extension(&self) -> Option<&str> {
        self.extension.as_deref()
    }
}

/// The digits of the number part and the extension, or `None` when the text is not a
/// phone number written with digits and formatting only.
fn split(text: &str) -> Option<(String, Option<String>)> {
    let lower = text.to_ascii_lowercase();
    let tail_at = lower
        .find(|c: char| c.is_ascii_alphabetic() || c == '#')
        .unwrap_or(lower.len());
    let (number, tail) = lower.split_at(tail_at);
    let extension = if tail.is_empty() {
        None
    } else {
        Some(extension_of(tail)?)
    };
    let number = number.trim();
    let number = match number.strip_prefix('+') {
        // Only the country code 1 is NANP.
        Some(rest) if rest.trim_start().starts_with('1') => rest,
        Some(_) => return None,
        None => number,
    };
    let mut digits = String::with_capacity(11);
    for c in number.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '(' | ')' | '-' | '.' | '/' => {}
            _ => return None,
        }
    }
    Some((digits, extension))
}

/// The digits after an extension marker; `None` when `tail` is not one.
fn extension_of(tail: &str) -> Option<String> {
    let rest = ["extension", "ext.", "ext", "x", "#"]
        .iter()
        .find_map(|marker| tail.strip_prefix(marker))?;
    let digits = rest.trim_start_matches([' ', '.', ':']).trim_end();
    is_extension(digits).then(|| digits.to_owned())
}

fn is_extension(text: &str) -> bool {
    (1..=8).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(number: &str) -> Option<String> {
        Nanp::parse(number, None).map(|n| n.formatted())
    }

    #[test]
    fn nanp_numbers_in_any_common_format() {
        for raw in [
            "6085550147",
            "608-555-0147",
            "608.555.0147",
            "(608) 555-0147",
            "(608)555-0147",
            " ( 608 ) 555 - 0147 ",
            "1-608-555-0147",
            "+1 608 555 0147",
            "+1 (608) 555-0147",
            "608/555-0147",
        ] {
            assert_eq!(fmt(raw).as_deref(), Some("(608)555-0147"), "{raw:?}");
        }
    }

    #[test]
    fn parts_fill_the_xtn_components() {
        let n = Nanp::parse("608-555-0147", None).expect("nanp");
        assert_eq!((n.area(), n.local().as_str()), ("608", "5550147"));
        assert_eq!(n.extension(), None);
    }

    #[test]
    fn extensions_in_the_number_or_in_xtn_8() {
        for raw in [
            "608-555-0147 x22",
            "608-555-0147X22",
            "608 555 0147 ext. 22",
            "608 555 0147 Ext 22",
            "608 555 0147 extension: 22",
            "608-555-0147 #22",
        ] {
            assert_eq!(fmt(raw).as_deref(), Some("(608)555-0147X22"), "{raw:?}");
        }
        let n = Nanp::parse("6085550147", Some(" 22 ")).expect("nanp");
        assert_eq!(n.extension(), Some("22"));
        // The number's own extension wins over XTN-8; junk in XTN-8 is not an extension.
        let n = Nanp::parse("6085550147 x9", Some("22")).expect("nanp");
        assert_eq!(n.extension(), Some("9"));
        let n = Nanp::parse("6085550147", Some("front desk")).expect("nanp");
        assert_eq!(n.extension(), None);
    }

    #[test]
    fn everything_else_is_left_alone() {
        for raw in [
            "",
            "555-0147",         // no area code
            "+44 20 7946 0958", // not NANP
            "+33 1 23 45 67 89",
            "44 20 7946 0958", // 12 digits
            "078788788",       // too short
            "108-555-0147",    // area code starts with 1
            "608-155-0147",    // exchange starts with 1
            "2-608-555-0147",  // 11 digits, not country code 1
            "1-800-FLOWERS",   // vanity
            "jane@example.org",
            "608-555-0147 B123", // beeper suffix
            "608-555-0147 x",    // marker without digits
            "call after 5",
        ] {
            assert_eq!(fmt(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn formatting_is_idempotent() {
        let once = fmt("608.555.0147 ext 7").expect("nanp");
        assert_eq!(fmt(&once).as_deref(), Some(once.as_str()));
    }
}
