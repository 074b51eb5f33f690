//! The `tables` capability: read-only lookups in the site's crosswalk tables.
//!
//! Calling any function here makes the plug-in import `plexus:transform/tables`, so the
//! site must grant `tables` and name each table the plug-in may read. A table is a CSV
//! file the site manages, with a `key,value` header line.
//!
//! [`map_through_table`] and [`Crosswalk`] do the usual job in one call: read a value, look
//! it up, write the mapped value back, and fail with `missing-mapping` (naming the value
//! and the path) when the table has no entry.

use crate::prelude::*;
use core::fmt::Write as _;

use crate::bindings::plexus::transform::tables as wit;
use crate::text::quoted;
use crate::{Message, Result, TransformError, Value};

pub use crate::text::fold_key;
pub use wit::TableError;

/// The value for `key` in `table`, or `None` when the table has no such key.
///
/// A table that is not granted to the plug-in (or does not exist) is an `internal` error
/// naming the table: the site config must grant it.
pub fn lookup(table: &str, key: &str) -> Result<Option<String>> {
    wit::lookup(table, key).map_err(|TableError::NotGranted(why)| {
        // The host's text names the table and the grant to add; keep a fallback anyway.
        TransformError::internal(if why.is_empty() {
            format!("table `{table}` is not granted to this plug-in")
        } else {
            why
        })
    })
}

/// Like [`lookup`], for optional tables such as settings: `None` both when the key is
/// absent and when the table is not granted.
pub fn lookup_if_granted(table: &str, key: &str) -> Option<String> {
    wit::lookup(table, key).ok().flatten()
}

/// How a value read from the message is matched against the keys of a table.
///
/// Every mode first looks the value up exactly as the message holds it, so a table whose
/// keys are spelled exactly like the messages always works; the modes differ in the
/// second try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keys {
    /// Only the value as the message holds it.
    #[default]
    Exact,
    /// Then the value with leading and trailing whitespace removed. A value that is only
    /// whitespace counts as empty: nothing is looked up or written.
    Trimmed,
    /// Then the value [folded](fold_key): trimmed, inner whitespace collapsed to one
    /// space, lowercased. Write the table's keys folded (`checked in`) to match every
    /// spelling (`Checked In`, ` CHECKED  IN `). A value that is only whitespace counts as
    /// empty.
    Folded,
}

/// What [`map_through_table`] found at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// Nothing there (or, with [`Keys::Trimmed`] and [`Keys::Folded`], only whitespace):
    /// nothing looked up, nothing written.
    Empty,
    /// The explicit null `""`: kept as it is, never looked up.
    Null,
    /// `from` (as the message held it) is in the table as `to`, and `to` is now at the
    /// path. Nothing is written when the two are equal.
    Found {
        /// The value the message held.
        from: String,
        /// The table's value, trimmed: what the path now holds.
        to: String,
    },
}

impl Mapped {
    /// Was the path rewritten (found, and different from before)?
    pub fn changed(&self) -> bool {
        matches!(self, Mapped::Found { from, to } if from != to)
    }
}

/// Maps the value at `path` through `table`, matching keys exactly: see [`Crosswalk`] for
/// other key matching.
///
/// * empty → [`Mapped::Empty`], `""` → [`Mapped::Null`]: unchanged, nothing looked up;
/// * found → the table's value is written at `path`;
/// * not found → a `missing-mapping` error at `path` naming the value and the table.
///
/// ```no_run
/// # fn demo(msg: &plexus_sdk::Message) -> plexus_sdk::Result<()> {
/// plexus_sdk::map_through_table(msg, "PV1-3-1", "locations")?;
/// # Ok(()) }
/// ```
pub fn map_through_table(msg: &Message, path: &str, table: &str) -> Result<Mapped> {
    Crosswalk::new(table).map(msg, path)
}

/// A table plus a way of matching keys: [`Crosswalk::map`] maps a path through it.
///
/// ```no_run
/// use plexus_sdk::tables::{Crosswalk, Keys};
///
/// const STATUS: Crosswalk<'static> = Crosswalk::new("visit-status").keys(Keys::Folded);
/// # fn demo(msg: &plexus_sdk::Message) -> plexus_sdk::Result<()> {
/// STATUS.map(msg, "SCH-25-1")?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crosswalk<'t> {
    table: &'t str,
    keys: Keys,
}

impl<'t> Crosswalk<'t> {
    /// A crosswalk through `table`, matching keys exactly.
    pub const fn new(table: &'t str) -> Self {
        Crosswalk {
            table,
            keys: Keys::Exact,
        }
    }

    /// The same crosswalk, matching keys as `keys` says.
    #[must_use]
    pub const fn keys(self, keys: Keys) -> Self {
        Crosswalk { keys, ..self }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        self.table
    }

    /// Maps the value at `path`, as [`map_through_table`] describes.
    pub fn map(&self, msg: &Message, path: &str) -> Result<Mapped> {
        let value = msg.read(path)?;
        let mapped = self.resolve(path, value, |key| lookup(self.table, key))?;
        if let Mapped::Found { from, to } = &mapped
            && from != to
        {
            msg.write(path, to)?;
        }
        Ok(mapped)
    }

    /// What `value`, read at `path`, maps to, with `lookup` standing in for the table; a
    /// value with no entry is a `missing-mapping` error. Writes nothing.
    pub fn resolve(
        &self,
        path: &str,
        value: Value,
        mut lookup: impl FnMut(&str) -> Result<Option<String>>,
    ) -> Result<Mapped> {
        let from = match value {
            Value::Empty => return Ok(Mapped::Empty),
            Value::Null => return Ok(Mapped::Null),
            Value::Text(text) => text,
        };
        let keys = candidates(&from, self.keys);
        if keys.is_empty() {
            return Ok(Mapped::Empty);
        }
        for key in &keys {
            match lookup(key)? {
                Some(to) if !to.trim().is_empty() => {
                    let to = to.trim().to_owned();
                    return Ok(Mapped::Found { from, to });
                }
                Some(_) => {
                    return Err(TransformError::missing_mapping(
                        path,
                        format!(
                            "{path} value {} maps to an empty value in table `{}`; fix the entry, then replay",
                            quoted(key),
                            self.table
                        ),
                    ));
                }
                None => {}
            }
        }
        let mut detail = format!(
            "{path} value {} has no entry in table `{}`",
            quoted(&keys[0]),
            self.table
        );
        if let Some(second) = keys.get(1) {
            let _ = write!(detail, " (also tried {})", quoted(second));
        }
        detail.push_str("; add it, then replay");
        Err(TransformError::missing_mapping(path, detail))
    }
}

/// The keys to try for `value`, in order, without repeats; none when the value counts as
/// empty.
fn candidates(value: &str, keys: Keys) -> Vec<String> {
    let second = match keys {
        Keys::Exact => return vec![value.to_owned()],
        Keys::Trimmed => value.trim().to_owned(),
        Keys::Folded => fold_key(value),
    };
    if second.is_empty() {
        return Vec::new();
    }
    if second == value {
        vec![second]
    } else {
        vec![value.to_owned(), second]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn table<'a>(
        rows: &'a [(&'a str, &'a str)],
    ) -> impl FnMut(&str) -> Result<Option<String>> + 'a {
        |key| {
            Ok(rows
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned()))
        }
    }

    const STATUS: Crosswalk<'static> = Crosswalk::new("visit-status").keys(Keys::Folded);
    const ROWS: &[(&str, &str)] = &[
        ("checked in", "Started"),
        ("Arrived", "Started"),
        ("blank", " "),
    ];

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    #[test]
    fn exact_spelling_is_tried_first_then_the_folded_key() {
        let found = |from: &str| Mapped::Found {
            from: from.to_owned(),
            to: "Started".to_owned(),
        };
        for v in ["checked in", "Checked In", " CHECKED   in "] {
            let got = STATUS.resolve("SCH-25-1", text(v), table(ROWS));
            assert_eq!(got, Ok(found(v)), "{v:?}");
        }
        // An exact-case key matches only its exact spelling.
        assert_eq!(
            STATUS.resolve("SCH-25-1", text("Arrived"), table(ROWS)),
            Ok(found("Arrived"))
        );
        let err = STATUS
            .resolve("SCH-25-1", text("ARRIVED"), table(ROWS))
            .expect_err("no folded key");
        assert!(err.detail.contains("`ARRIVED`") && err.detail.contains("`arrived`"));
    }

    #[test]
    fn empty_null_and_blank_are_left_alone() {
        for (value, want) in [
            (Value::Empty, Mapped::Empty),
            (Value::Null, Mapped::Null),
            (text("   "), Mapped::Empty),
        ] {
            let got = STATUS.resolve("SCH-25-1", value, |_| panic!("no lookup"));
            assert_eq!(got, Ok(want));
        }
        // Exact matching looks up exactly what is there, whitespace and all.
        let exact = Crosswalk::new("t");
        let got = exact.resolve("X-1", text(" "), table(&[(" ", "S")]));
        assert!(matches!(got, Ok(Mapped::Found { .. })));
    }

    #[test]
    fn unknown_values_are_missing_mappings_that_name_value_path_and_table() {
        let err = STATUS
            .resolve("SCH-25-1", text("Roomed"), table(ROWS))
            .expect_err("unmapped");
        assert_eq!(err.kind, ErrorKind::MissingMapping);
        assert_eq!(err.path.as_deref(), Some("SCH-25-1"));
        assert!(err.detail.contains("`Roomed`"), "{}", err.detail);
        assert!(err.detail.contains("`visit-status`"), "{}", err.detail);
        assert!(err.detail.contains("`roomed`"), "{}", err.detail);

        let err = STATUS
            .resolve("SCH-25-1", text("blank"), table(ROWS))
            .expect_err("empty entry");
        assert!(err.detail.contains("empty value"), "{}", err.detail);
    }

    #[test]
    fn table_values_are_trimmed_and_lookup_errors_pass_through() {
        let trimmed = Crosswalk::new("provider-npi").keys(Keys::Trimmed);
        let got = trimmed.resolve(
            "PV1-7-1",
            text(" 1234 "),
            table(&[("1234", " 1234567893 ")]),
        );
        assert_eq!(
            got,
            Ok(Mapped::Found {
                from: " 1234 ".into(),
                to: "1234567893".into()
            })
        );
        let err = trimmed
            .resolve("PV1-7-1", text("1"), |_| {
                Err(TransformError::internal("not granted"))
            })
            .expect_err("lookup failed");
        assert_eq!(err.kind, ErrorKind::Internal);
    }

    #[test]
    fn changed_means_found_and_different() {
        let same = Mapped::Found {
            from: "A".into(),
            to: "A".into(),
        };
        let other = Mapped::Found {
            from: "a".into(),
            to: "A".into(),
        };
        assert!(!same.changed() && other.changed() && !Mapped::Null.changed());
    }
}
