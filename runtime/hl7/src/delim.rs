//! The delimiters a message declares in MSH-1 and MSH-2.

use crate::error::ParseError;

/// The separators and escape character of one message, read from MSH-1 and MSH-2.
///
/// HL7 lets every sender pick its own; `|^~\&` is only the usual choice. A message
/// written with `MSH#$~\&#` is just as valid, and every accessor honours what the
/// message declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// MSH-1, separates fields (usually `|`).
    pub field: u8,
    /// Separates components (usually `^`).
    pub component: u8,
    /// Separates repetitions of a field (usually `~`).
    pub repetition: u8,
    /// Starts and ends an escape sequence (usually `\`); a few senders declare none.
    pub escape: Option<u8>,
    /// Separates subcomponents (usually `&`); absent when MSH-2 has only two or three characters.
    pub subcomponent: Option<u8>,
    /// The v2.7 truncation character (usually `#`), when MSH-2 declares a fifth character.
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: Some(b'\\'),
            subcomponent: Some(b'&'),
            truncation: None,
        }
    }
}

impl Delimiters {
    /// Reads the delimiters from the start of a header segment (`MSH`, `BHS` or `FHS`).
    ///
    /// `header` starts at the segment name; `encoding` is the raw MSH-2 text.
    pub(crate) fn from_header(field: u8, encoding: &[u8]) -> Result<Self, ParseError> {
        if !is_delimiter_candidate(field) {
            return Err(ParseError::BadDelimiters {
                reason: "MSH-1 (the field separator) must be a printable, non-alphanumeric character",
            });
        }
        if encoding.len() < 2 || encoding.len() > 5 {
            return Err(ParseError::BadDelimiters {
                reason: "MSH-2 must hold 2 to 5 encoding characters (component, repetition, escape, subcomponent, truncation)",
            });
        }
        for (i, &c) in encoding.iter().enumerate() {
            if !is_delimiter_candidate(c) {
                return Err(ParseError::BadDelimiters {
                    reason: "MSH-2 holds a character that cannot be a delimiter (letters, digits, spaces and control characters cannot)",
                });
            }
            if c == field || encoding[..i].contains(&c) {
                return Err(ParseError::BadDelimiters {
                    reason: "MSH-1 and MSH-2 declare the same delimiter twice",
                });
            }
        }
        Ok(Delimiters {
            field,
            component: encoding[0],
            repetition: encoding[1],
            escape: encoding.get(2).copied(),
            subcomponent: encoding.get(3).copied(),
            truncation: encoding.get(4).copied(),
        })
    }

    /// The escape-sequence letter that stands for `c` when `c` is one of our delimiters.
    pub(crate) fn escape_letter(&self, c: u8) -> Option<u8> {
        if c == self.field {
            Some(b'F')
        } else if c == self.component {
            Some(b'S')
        } else if c == self.repetition {
            Some(b'R')
        } else if Some(c) == self.escape {
            Some(b'E')
        } else if Some(c) == self.subcomponent {
            Some(b'T')
        } else if Some(c) == self.truncation {
            Some(b'P')
        } else {
            None
        }
    }

    /// The delimiter an escape-sequence letter stands for, if this message declares it.
    pub(crate) fn delimiter_for_letter(&self, letter: u8) -> Option<u8> {
        match letter {
            b'F' => Some(self.field),
            b'S' => Some(self.component),
            b'R' => Some(self.repetition),
            b'E' => self.escape,
            b'T' => self.subcomponent,
            b'P' => self.truncation,
            _ => None,
        }
    }

    /// MSH-2 as this message would write it.
    pub fn encoding_characters(&self) -> Vec<u8> {
        let mut out = vec![self.component, self.repetition];
        out.extend(self.escape);
        out.extend(self.subcomponent);
        out.extend(self.truncation);
        out
    }
}

fn is_delimiter_candidate(c: u8) -> bool {
    c.is_ascii_graphic() && !c.is_ascii_alphanumeric()
}
