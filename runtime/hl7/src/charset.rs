//! Character sets declared in MSH-18 and the conversion of values to and from UTF-8.

use std::borrow::Cow;

use crate::error::ParseError;

/// The character set a message is written in (the first repetition of MSH-18).
///
/// Values always come out of this crate as UTF-8 and go back in the message's own set.
/// A set we cannot convert exactly is refused when the message is parsed, so a value is
/// never silently garbled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// MSH-18 empty or `ASCII`. Read as UTF-8, which ASCII is a subset of: many senders
    /// leave MSH-18 empty and send UTF-8, and bytes that are not valid UTF-8 are refused.
    Ascii,
    /// `8859/1` (Latin-1): every byte is a character, converted to UTF-8 on read.
    Latin1,
    /// `8859/15` (Latin-9): Latin-1 with the euro sign and seven other changes.
    Latin9,
    /// `UNICODE UTF-8` (HL7 table 0211) or the common `UTF-8`.
    Utf8,
}

impl Charset {
    /// Maps an MSH-18 code to a charset; `None` for sets we do not convert.
    pub fn from_code(code: &str) -> Option<Self> {
        match code.trim().to_ascii_uppercase().as_str() {
            "" | "ASCII" | "US-ASCII" => Some(Charset::Ascii),
            "8859/1" | "ISO-8859-1" | "ISO8859-1" | "ISO_8859-1" | "LATIN1" => {
                Some(Charset::Latin1)
            }
            "8859/15" | "ISO-8859-15" | "LATIN9" => Some(Charset::Latin9),
            "UNICODE UTF-8" | "UTF-8" | "UTF8" | "UNICODE" => Some(Charset::Utf8),
            _ => None,
        }
    }

    /// The HL7 table 0211 code for this set.
    pub fn code(self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Latin1 => "8859/1",
            Charset::Latin9 => "8859/15",
            Charset::Utf8 => "UNICODE UTF-8",
        }
    }

    /// Checks that `bytes` are valid in this set; run once at parse time so that decoding
    /// a value later cannot fail.
    pub(crate) fn validate(self, bytes: &[u8]) -> Result<(), ParseError> {
        match self {
            Charset::Ascii | Charset::Utf8 => match std::str::from_utf8(bytes) {
                Ok(_) => Ok(()),
                Err(e) => Err(ParseError::InvalidText {
                    // What was checked: UTF-8, of which ASCII is a part.
                    charset: match self {
                        Charset::Ascii => "UTF-8",
                        _ => self.code(),
                    },
                    offset: e.valid_up_to(),
                }),
            },
            Charset::Latin1 | Charset::Latin9 => Ok(()),
        }
    }

    /// Converts raw bytes of this set to text.
    pub(crate) fn decode(self, bytes: &[u8]) -> Option<Cow<'_, str>> {
        match self {
            Charset::Ascii | Charset::Utf8 => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
            Charset::Latin1 | Charset::Latin9 => {
                if bytes.is_ascii() {
                    return std::str::from_utf8(bytes).ok().map(Cow::Borrowed);
                }
                Some(Cow::Owned(
                    bytes.iter().map(|&b| self.latin_char(b)).collect(),
                ))
            }
        }
    }

    fn latin_char(self, b: u8) -> char {
        if self == Charset::Latin9
            && let Some(&(_, c)) = LATIN9_DIFF.iter().find(|(byte, _)| *byte == b)
        {
            return c;
        }
        char::from(b)
    }

    /// Converts text to bytes of this set; `Err(c)` names the first character it cannot hold.
    pub(crate) fn encode_into(self, text: &str, out: &mut Vec<u8>) -> Result<(), char> {
        match self {
            Charset::Ascii | Charset::Utf8 => {
                out.extend_from_slice(text.as_bytes());
                Ok(())
            }
            Charset::Latin1 | Charset::Latin9 => {
                for c in text.chars() {
                    out.push(self.latin_byte(c).ok_or(c)?);
                }
                Ok(())
            }
        }
    }

    fn latin_byte(self, c: char) -> Option<u8> {
        if self == Charset::Latin9 {
            if let Some(&(b, _)) = LATIN9_DIFF.iter().find(|(_, ch)| *ch == c) {
                return Some(b);
            }
            // The eight Latin-1 characters Latin-9 replaced are not in Latin-9.
            if LATIN9_DIFF
                .iter()
                .any(|(b, _)| u32::from(*b) == u32::from(c))
            {
                return None;
            }
        }
        u8::try_from(u32::from(c)).ok()
    }
}

/// Where ISO 8859-15 differs from ISO 8859-1.
const LATIN9_DIFF: [(u8, char); 8] = [
    (0xA4, '\u{20AC}'),
    (0xA6, '\u{0160}'),
    (0xA8, '\u{0161}'),
    (0xB4, '\u{017D}'),
    (0xB8, '\u{017E}'),
    (0xBC, '\u{0152}'),
    (0xBD, '\u{0153}'),
    (0xBE, '\u{0178}'),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_round_trips_every_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = Charset::Latin1
            .decode(&bytes)
            .expect("latin-1 decodes any byte");
        let mut back = Vec::new();
        Charset::Latin1
            .encode_into(&text, &mut back)
            .expect("encodes");
        assert_eq!(back, bytes);
    }

    #[test]
    fn latin9_has_the_euro_and_refuses_the_currency_sign() {
        assert_eq!(Charset::Latin9.decode(&[0xA4]).as_deref(), Some("€"));
        let mut out = Vec::new();
        assert_eq!(Charset::Latin9.encode_into("¤", &mut out), Err('¤'));
        assert_eq!(Charset::Latin1.encode_into("€", &mut out), Err('€'));
    }

    #[test]
    fn codes_map_both_ways() {
        for cs in [
            Charset::Ascii,
            Charset::Latin1,
            Charset::Latin9,
            Charset::Utf8,
        ] {
            assert_eq!(Charset::from_code(cs.code()), Some(cs));
        }
        assert_eq!(Charset::from_code("ISO IR87"), None);
    }
}
