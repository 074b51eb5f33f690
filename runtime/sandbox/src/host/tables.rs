//! Capability `tables`: read-only lookups in the site's crosswalk tables, limited to the
//! tables granted to the plug-in.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::bindings::plexus::transform::tables::{self as wit, TableError};
use crate::host::HostState;

/// A crosswalk table: keys to values, loaded from a two-column CSV.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    rows: HashMap<String, String>,
}

/// Why a CSV table could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table {table}, line {line}: {reason}")]
pub struct CsvError {
    /// The table's name.
    pub table: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

impl Table {
    /// Parses CSV text whose first line is the header `key,value`, then two columns per
    /// row. Fields may be quoted (`"a, b"`, with `""` for a quote). A UTF-8 byte order
    /// mark (spreadsheets write one) is skipped. The header is required, so a file saved
    /// without it is refused rather than losing its first row. Later duplicates are
    /// refused, so a table never maps one key two ways.
    pub fn from_csv(name: &str, text: &str) -> Result<Table, CsvError> {
        let err = |line, reason| CsvError {
            table: name.to_owned(),
            line,
            reason,
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let header = text
            .lines()
            .next()
            .map(|l| split_csv(l.trim_end_matches('\r')));
        let is_header = |fields: &[String]| matches!(fields, [k, v] if k.eq_ignore_ascii_case("key") && v.eq_ignore_ascii_case("value"));
        if !header.flatten().is_some_and(|fields| is_header(&fields)) {
            return Err(err(1, "the first line must be the header `key,value`"));
        }
        let mut rows = HashMap::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let fields = split_csv(line).ok_or_else(|| err(i + 1, "unbalanced quotes"))?;
            let [key, value] = <[String; 2]>::try_from(fields)
                .map_err(|_| err(i + 1, "expected two columns: key,value"))?;
            if rows.insert(key, value).is_some() {
                return Err(err(i + 1, "duplicate key"));
            }
        }
        Ok(Table { rows })
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.rows.get(key).map(String::as_str)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if field.is_empty() => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return None;
    }
    fields.push(field);
    Some(fields.into_iter().map(|f| f.trim().to_owned()).collect())
}

/// The tables a site has, by name.
pub type TableSet = HashMap<String, Arc<Table>>;

/// What one run may read: the site's tables filtered to the grants.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableAccess {
    pub(crate) tables: Arc<TableSet>,
    pub(crate) granted: Arc<BTreeSet<String>>,
}

impl wit::Host for HostState {
    fn lookup(
        &mut self,
        table: String,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, TableError>> {
        let access = &self.tables;
        let found = access
            .granted
            .contains(&table)
            .then(|| access.tables.get(&table))
            .flatten();
        Ok(match found {
            Some(t) => Ok(t.get(&key).map(str::to_owned)),
            // Table names are short; a long one is echoed cut, so a plug-in cannot make
            // the host copy megabytes into the error.
            None => Err(TableError::NotGranted(match super::log::cut(&table, 64) {
                name if name.len() == table.len() => format!(
                    "table {name:?} is not granted to this plug-in (add \"tables:{name}\" to its grants, and define the table)"
                ),
                name => format!(
                    "table {name:?}… ({} bytes) is not granted to this plug-in: table names are at most 64 characters",
                    table.len()
                ),
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_table_name_is_echoed_cut() {
        use wit::Host as _;
        let mut state = HostState::new(&crate::Limits::default(), TableAccess::default(), 0);
        let name = "\u{1}".repeat(8 << 20);
        let Ok(Err(TableError::NotGranted(text))) = state.lookup(name, "k".to_owned()) else {
            panic!("refused");
        };
        assert!(text.len() < 600, "{} bytes", text.len());
        assert!(text.contains("(8388608 bytes)"), "{text}");
        let Ok(Err(TableError::NotGranted(text))) =
            state.lookup("visit-status".to_owned(), "k".to_owned())
        else {
            panic!("refused");
        };
        assert!(text.contains("\"tables:visit-status\""), "{text}");
    }

    #[test]
    fn csv_with_quotes_and_header() {
        let t = Table::from_csv(
            "s",
            "key,value\nArrived,ARR\n\"Checked In\",CHK\n\"a, \"\"b\"\"\",x\n\n",
        )
        .expect("parses");
        assert_eq!(t.get("Arrived"), Some("ARR"));
        assert_eq!(t.get("Checked In"), Some("CHK"));
        assert_eq!(t.get("a, \"b\""), Some("x"));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn bad_csv_names_table_and_line() {
        let e = Table::from_csv("s", "key,value\na,b,c\n").expect_err("three columns");
        assert_eq!((e.line, e.table.as_str()), (2, "s"));
        assert!(Table::from_csv("s", "key,value\na,1\na,2\n").is_err());
        assert!(Table::from_csv("s", "key,value\n\"a,1\n").is_err());
    }

    #[test]
    fn a_file_without_the_header_is_refused_not_shortened() {
        // Saved without its header, the first mapping would otherwise be read as one.
        for text in [
            "nokey\n",
            "arrived,Started\nroomed,Started\n",
            "",
            "\n",
            "k,v\n",
        ] {
            let e = Table::from_csv("visit-status", text).expect_err(text);
            assert_eq!(e.line, 1, "{text:?}");
            assert!(e.to_string().contains("header `key,value`"), "{e}");
        }
        // A spreadsheet's byte order mark, CRLF and a capitalised header are fine.
        let t = Table::from_csv("s", "\u{feff}Key, Value\r\narrived,Started\r\n").expect("bom");
        assert_eq!((t.get("arrived"), t.len()), (Some("Started"), 1));
    }
}
