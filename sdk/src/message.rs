//! Path access that names the path in its errors, and keeps empty apart from null.

use crate::prelude::*;
use crate::{Message, Result, TransformError, path};

/// What a path holds, with the HL7 explicit null kept apart from an empty field.
///
/// HL7 gives the two a different meaning: an empty field says nothing ("no change"), while
/// `""` tells the receiver to delete the value it holds. A mapping must keep `""` as `""`
/// and never turn either into a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Nothing there: the segment, field or part is absent, or empty.
    Empty,
    /// The explicit null `""`.
    Null,
    /// A value, decoded (escapes resolved), exactly as the host returned it: not trimmed.
    Text(String),
}

impl Value {
    /// The text of a [`Value::Text`]; `None` for empty and null.
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(text) => Some(text),
            Value::Empty | Value::Null => None,
        }
    }

    /// Is this [`Value::Empty`]?
    pub fn is_empty(&self) -> bool {
        matches!(self, Value::Empty)
    }

    /// Is this the explicit null `""`?
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Classifies what the host's `get` returned.
    pub fn from_host(value: Option<String>) -> Value {
        match value {
            None => Value::Empty,
            Some(text) if text == "\"\"" => Value::Null,
            Some(text) => Value::Text(text),
        }
    }
}

impl Message {
    /// Reads `path` (first leaf below it, as [`Message::get`] does).
    pub fn read(&self, path: &str) -> Result<Value> {
        self.get(path)
            .map(Value::from_host)
            .map_err(|e| TransformError::from_path_error(path, e))
    }

    /// Writes `value` at `path`, escaping delimiters and creating missing structure.
    pub fn write(&self, path: &str, value: &str) -> Result<()> {
        self.set(path, value)
            .map_err(|e| TransformError::from_path_error(path, e))
    }

    /// How many `segment`s there are (`0` when none).
    pub fn occurrences(&self, segment: &str) -> Result<u32> {
        self.count(segment)
            .map_err(|e| TransformError::from_path_error(segment, e))
    }

    /// The path of every occurrence of `segment`: `["PV1", "PV1[2]"]`.
    pub fn segment_paths(&self, segment: &str) -> Result<Vec<String>> {
        let n = self.occurrences(segment)?;
        Ok((1..=n).map(|occ| path::segment(segment, occ)).collect())
    }

    /// The path of every repetition of field `field` in every occurrence of `segment`:
    /// `["PV1-7", "PV1-7[2]", "PV1[2]-7"]`. Empty fields have none; a field holding only
    /// `""` has one.
    pub fn field_paths(&self, segment: &str, field: u32) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for seg in self.segment_paths(segment)? {
            let field_path = format!("{seg}-{field}");
            let reps = self
                .count(&field_path)
                .map_err(|e| TransformError::from_path_error(&field_path, e))?;
            out.extend((1..=reps).map(|rep| path::repetition(&seg, field, rep)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_is_kept_apart_from_empty_and_text() {
        assert_eq!(Value::from_host(None), Value::Empty);
        assert_eq!(Value::from_host(Some("\"\"".into())), Value::Null);
        assert_eq!(
            Value::from_host(Some(" \"\" ".into())),
            Value::Text(" \"\" ".into())
        );
        assert_eq!(Value::from_host(Some("F".into())).text(), Some("F"));
        assert!(Value::Null.is_null() && Value::Null.text().is_none());
        assert!(Value::Empty.is_empty());
    }
}
