//! Terser-style paths: `SEG[occurrence]-field[repetition]-component-subcomponent`.
//!
//! Every number is 1-based; `[n]` parts default to 1 and `.` may be used instead of `-`.
//!
//! | path            | means                                                         |
//! |-----------------|---------------------------------------------------------------|
//! | `PID`           | the first PID segment                                         |
//! | `OBX[3]`        | the third OBX segment                                         |
//! | `PID-5-1`       | family name: PID, field 5, first repetition, component 1      |
//! | `PID-3[2]-4`    | assigning authority of the second patient identifier          |
//! | `OBX[3]-5`      | the value of the third observation                            |
//! | `PID-11[1]-1-2` | subcomponent 2 of the first address's street line             |
//! | `MSH-9-2`       | the trigger event; MSH-1 is the field separator itself        |
//!
//! Reading a path that stops above the leaf reads the first leaf below it, as HAPI's
//! terser does: `PID-5` reads `PID-5[1]-1-1`. Use [`crate::Message::get_raw`] for the
//! whole encoded field.

use std::fmt;
use std::str::FromStr;

use crate::error::PathError;

/// The largest index a path may use; bounds what an edit can create.
pub const MAX_INDEX: u32 = 9_999;

/// The longest path text accepted, surrounding whitespace aside. The longest valid path,
/// `PID[9999]-9999[9999]-9999-9999`, has 30 characters; anything much longer is a
/// mistake, or a plug-in trying to make the host copy megabytes into an error.
pub const MAX_PATH_LEN: usize = 64;

/// A parsed path. Build one with [`str::parse`] or [`Path::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    segment: [u8; 3],
    occurrence: u32,
    field: Option<u32>,
    repetition: Option<u32>,
    component: Option<u32>,
    subcomponent: Option<u32>,
}

/// `text` for an error message: whole if short, else its first [`MAX_PATH_LEN`] bytes
/// (cut on a character boundary) and a mark.
fn shown(text: &str) -> String {
    if text.len() <= MAX_PATH_LEN {
        return text.to_owned();
    }
    let mut end = MAX_PATH_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

impl Path {
    /// Parses a path such as `PID-3[2]-4`.
    pub fn parse(text: &str) -> Result<Path, PathError> {
        // The error names the text as given, cut: it may come from a plug-in.
        let err = |reason| PathError::Syntax {
            path: shown(text),
            reason,
        };
        let bytes = text.trim().as_bytes();
        if bytes.len() > MAX_PATH_LEN {
            return Err(err("a path is at most 64 characters long, e.g. PID-5-1"));
        }
        if bytes.len() < 3 {
            return Err(err(
                "a path starts with a three-character segment name, e.g. PID-5-1",
            ));
        }
        let mut segment = [0u8; 3];
        for (slot, &c) in segment.iter_mut().zip(&bytes[..3]) {
            if !c.is_ascii_alphanumeric() {
                return Err(err(
                    "a path starts with a three-character segment name, e.g. PID-5-1",
                ));
            }
            *slot = c.to_ascii_uppercase();
        }
        let mut rest = &bytes[3..];
        let occurrence = take_bracket(&mut rest).map_err(err)?.unwrap_or(1);

        let mut numbers = [None; 3];
        let mut repetition = None;
        for (depth, slot) in numbers.iter_mut().enumerate() {
            match rest.first() {
                None => break,
                Some(b'-' | b'.') => rest = &rest[1..],
                Some(_) => return Err(err("expected '-' between parts, e.g. PID-3[2]-4")),
            }
            *slot = Some(take_number(&mut rest).map_err(err)?);
            if depth == 0 {
                repetition = take_bracket(&mut rest).map_err(err)?;
            }
        }
        if !rest.is_empty() {
            return Err(err(
                "too many parts: a path has at most segment, field, component and subcomponent",
            ));
        }
        let [field, component, subcomponent] = numbers;
        Ok(Path {
            segment,
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }

    /// `SEG-field` without parsing, for the paths this crate itself uses.
    pub(crate) const fn fixed(segment: [u8; 3], field: u32) -> Path {
        Path {
            segment,
            occurrence: 1,
            field: Some(field),
            repetition: None,
            component: None,
            subcomponent: None,
        }
    }

    /// The segment name, e.g. `PID`.
    pub fn segment(&self) -> &str {
        // Only ASCII alphanumerics are ever stored.
        std::str::from_utf8(&self.segment).unwrap_or("???")
    }

    pub(crate) fn segment_bytes(&self) -> &[u8; 3] {
        &self.segment
    }

    /// 1-based segment occurrence.
    pub fn occurrence(&self) -> u32 {
        self.occurrence
    }

    /// 1-based field number, if the path names a field.
    pub fn field(&self) -> Option<u32> {
        self.field
    }

    /// 1-based repetition, if written explicitly.
    pub fn repetition(&self) -> Option<u32> {
        self.repetition
    }

    /// 1-based component, if the path names one.
    pub fn component(&self) -> Option<u32> {
        self.component
    }

    /// 1-based subcomponent, if the path names one.
    pub fn subcomponent(&self) -> Option<u32> {
        self.subcomponent
    }
}

fn take_number(rest: &mut &[u8]) -> Result<u32, &'static str> {
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return Err("expected a number, e.g. PID-5-1");
    }
    let (num, tail) = rest.split_at(digits);
    *rest = tail;
    let n = std::str::from_utf8(num)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or("number too large")?;
    match n {
        0 => Err("positions are 1-based; 0 is not a position"),
        n if n > MAX_INDEX => Err("position larger than 9999"),
        n => Ok(n),
    }
}

fn take_bracket(rest: &mut &[u8]) -> Result<Option<u32>, &'static str> {
    if rest.first() != Some(&b'[') {
        return Ok(None);
    }
    *rest = &rest[1..];
    let n = take_number(rest)?;
    if rest.first() != Some(&b']') {
        return Err("expected ']' after the index, e.g. OBX[2]-5");
    }
    *rest = &rest[1..];
    Ok(Some(n))
}

impl FromStr for Path {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Path::parse(s)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.segment())?;
        if self.occurrence != 1 {
            write!(f, "[{}]", self.occurrence)?;
        }
        if let Some(field) = self.field {
            write!(f, "-{field}")?;
            if let Some(rep) = self.repetition {
                write!(f, "[{rep}]")?;
            }
        }
        if let Some(c) = self.component {
            write!(f, "-{c}")?;
        }
        if let Some(s) = self.subcomponent {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}

/// Anything that names a path: a `&str` (parsed on use) or a [`Path`] (parsed once).
pub trait AsPath {
    /// The parsed path.
    fn to_path(&self) -> Result<Path, PathError>;
}

impl AsPath for str {
    fn to_path(&self) -> Result<Path, PathError> {
        Path::parse(self)
    }
}

impl AsPath for String {
    fn to_path(&self) -> Result<Path, PathError> {
        Path::parse(self)
    }
}

impl AsPath for Path {
    fn to_path(&self) -> Result<Path, PathError> {
        Ok(*self)
    }
}

impl<T: AsPath + ?Sized> AsPath for &T {
    fn to_path(&self) -> Result<Path, PathError> {
        (**self).to_path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        for (text, canonical) in [
            ("PID", "PID"),
            ("OBX[3]", "OBX[3]"),
            ("PID-5-1", "PID-5-1"),
            ("PID-3[2]-4", "PID-3[2]-4"),
            ("OBX[3]-5", "OBX[3]-5"),
            ("PID-11[1]-1-2", "PID-11[1]-1-2"),
            ("pid.5.1", "PID-5-1"),
            ("ZPI-1", "ZPI-1"),
            ("PID[1]-3", "PID-3"),
        ] {
            let path: Path = text.parse().expect(text);
            assert_eq!(path.to_string(), canonical);
        }
    }

    #[test]
    fn bad_paths_are_errors_with_reasons() {
        for text in [
            "",
            "P",
            "PI",
            "P-D-1",
            "PID-",
            "PID-0",
            "PID-x",
            "PID-5-1-1-1",
            "PID[0]",
            "PID[2",
            "PID-3[]",
            "PID-99999",
            "PID--5",
            "PID 5",
            "PID-5[2][3]",
        ] {
            let err = Path::parse(text).expect_err(text);
            assert!(matches!(err, PathError::Syntax { .. }), "{text}: {err}");
            assert!(err.to_string().contains("invalid path"), "{err}");
        }
    }

    #[test]
    fn long_paths_are_refused_and_echoed_cut() {
        let longest = "PID[9999]-9999[9999]-9999-9999";
        assert!(Path::parse(longest).is_ok());
        assert!(Path::parse(&format!("  {longest}  ")).is_ok());
        // A plug-in can pass megabytes; the error must not copy (or escape) them all.
        for text in [
            "\u{1}".repeat(1 << 20),
            "é".repeat(1 << 20),
            "PID-".repeat(100),
        ] {
            let err = Path::parse(&text).expect_err("too long");
            let shown = err.to_string();
            assert!(shown.contains("at most 64 characters"), "{shown}");
            assert!(shown.len() < 600, "{} bytes", shown.len());
            assert!(
                shown.contains(&format!("({} bytes)", text.len())),
                "{shown}"
            );
        }
    }

    #[test]
    fn repetition_is_only_on_the_field() {
        assert!(Path::parse("PID-5-1[2]").is_err());
        let p = Path::parse("PID-3[2]-4").expect("valid");
        assert_eq!(
            (p.field(), p.repetition(), p.component()),
            (Some(3), Some(2), Some(4))
        );
    }
}
