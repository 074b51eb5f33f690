//! `visit-status-map`: maps site-local appointment and visit status values to the
//! receiving system's codes through the site's `visit-status` table.
//!
//! * `SCH-25-1` (filler status code) of every `SCH` segment is mapped.
//! * So is one local status field the site names in the optional `visit-status-settings`
//!   table, under the key `extra-path` (e.g. `PV1-41` or `ZVS-1`).
//!
//! Keys match case- and whitespace-insensitively: the value is looked up as the message
//! holds it, then folded (trimmed, inner whitespace collapsed, lowercased), so a table
//! whose keys are written folded (`checked in`) matches `Checked In` and ` CHECKED  in `.
//! An unknown value fails the message with `missing-mapping`, naming the value and the
//! path. An empty field, a missing segment and the explicit null `""` pass unchanged.
//!
//! Grants: `tables` with `visit-status` (and `visit-status-settings` if used).
//!
//! It is `no_std` on wasm32 (see `plexus_sdk::no_std_runtime!`): it links no WASI, so a
//! fresh instance per message is cheap.

#![cfg_attr(target_arch = "wasm32", no_std)]
extern crate alloc;

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use plexus_sdk::tables::{self, Crosswalk, Keys};
use plexus_sdk::{Context, ErrorKind, Message, Outcome, Plugin, Result};

/// The crosswalk from local status values to the receiver's codes.
const STATUS: Crosswalk<'static> = Crosswalk::new("visit-status").keys(Keys::Folded);

/// Optional settings; a site that does not grant it gets no extra path.
const SETTINGS: &str = "visit-status-settings";

struct VisitStatusMap;

impl Plugin for VisitStatusMap {
    fn transform(msg: &Message, _ctx: Context) -> Result<Outcome> {
        for sch in msg.segment_paths("SCH")? {
            STATUS.map(msg, &format!("{sch}-25-1"))?;
        }
        if let Some(extra) = extra_path() {
            STATUS.map(msg, &extra).map_err(|mut e| {
                if e.kind == ErrorKind::Internal {
                    e.detail = format!("{} (from `extra-path` in table `{SETTINGS}`)", e.detail);
                }
                e
            })?;
        }
        Ok(Outcome::Forward)
    }
}

plexus_sdk::export!(VisitStatusMap);
// `visit-status-settings` is optional: a site that does not grant it gets no extra path.
plexus_sdk::reads_tables!("visit-status");

// The mapping keeps nothing between messages, so it may run on a reused instance when
// the site grants `reuse-instance`; without the grant it still gets a fresh one.
plexus_sdk::request_instance_reuse!();

plexus_sdk::no_std_runtime!();

/// The site's extra status path, unless it is not set or is `SCH-25-1` itself (already
/// mapped: mapping a code a second time would fail).
fn extra_path() -> Option<String> {
    let setting = tables::lookup_if_granted(SETTINGS, "extra-path")?;
    usable_extra_path(&setting)
}

fn usable_extra_path(setting: &str) -> Option<String> {
    let path = setting.trim();
    let canonical = path
        .to_ascii_uppercase()
        .replace('.', "-")
        .replace("[1]", "");
    if path.is_empty() || canonical == "SCH-25-1" || canonical == "SCH-25" {
        return None;
    }
    Some(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_path_is_trimmed_and_skips_what_is_mapped_anyway() {
        assert_eq!(usable_extra_path(" ZVS-1 ").as_deref(), Some("ZVS-1"));
        assert_eq!(usable_extra_path("PV1-41").as_deref(), Some("PV1-41"));
        for same in ["", "  ", "SCH-25-1", "sch.25.1", "SCH[1]-25-1", "SCH-25"] {
            assert_eq!(usable_extra_path(same), None, "{same:?}");
        }
    }
}
