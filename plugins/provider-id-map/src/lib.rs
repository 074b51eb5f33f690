//! `provider-id-map`: crosswalks local provider ids to NPIs through the site's
//! `provider-npi` table.
//!
//! Fields, in every occurrence of the segment and every repetition of the field:
//!
//! | field    | meaning              |
//! |----------|----------------------|
//! | `PV1-7`  | attending doctor     |
//! | `PV1-8`  | referring doctor     |
//! | `PV1-9`  | consulting doctor    |
//! | `ORC-12` | ordering provider    |
//! | `OBR-16` | ordering provider    |
//!
//! For each XCN whose XCN-1 holds an id:
//!
//! * XCN-1 becomes the NPI from the table (the id is matched as written, then trimmed);
//! * XCN-13, the identifier type code, becomes `NPI`;
//! * XCN-9, the assigning authority, becomes `NPI&2.16.840.1.113883.4.6&ISO`, the NPI
//!   registry's OID: the local authority that was there no longer describes the id. A
//!   message whose MSH-2 declares no subcomponent separator gets the namespace `NPI` only.
//!
//! Names and the other components are kept. An XCN whose XCN-13 already says `NPI` is
//! left alone, so running the plug-in twice (a replay) changes nothing more. An XCN with
//! no id (a name only), an empty field and the explicit null `""` are left as they are.
//!
//! An id with no entry fails the message with `missing-mapping`, naming the id and its
//! path. So does an entry whose value is not a valid NPI (10 digits with a correct check
//! digit): that is a typo in the table, and sending it on would be worse than stopping.
//!
//! Grants: `tables` with `provider-npi`; `log` (one `info` line with the count of ids
//! mapped; no ids or names).
//!
//! It is `no_std` on wasm32 (see `plexus_sdk::no_std_runtime!`): it links no WASI, so a
//! fresh instance per message is cheap.

#![cfg_attr(target_arch = "wasm32", no_std)]
extern crate alloc;

use alloc::format;
use plexus_sdk::path::child;
use plexus_sdk::tables::{self, Crosswalk, Keys, Mapped};
use plexus_sdk::text::quoted;
use plexus_sdk::{Context, Message, Outcome, Plugin, Result, TransformError, log};

pub mod npi;

const NPI: Crosswalk<'static> = Crosswalk::new("provider-npi").keys(Keys::Trimmed);

/// The fields that hold providers, as (segment, field).
const PROVIDER_FIELDS: [(&str, u32); 5] =
    [("PV1", 7), ("PV1", 8), ("PV1", 9), ("ORC", 12), ("OBR", 16)];

/// XCN-9 for an NPI: namespace, universal id (the NPI registry's OID), id type.
const AUTHORITY: [&str; 3] = ["NPI", "2.16.840.1.113883.4.6", "ISO"];

struct ProviderIdMap;

impl Plugin for ProviderIdMap {
    fn transform(msg: &Message, _ctx: Context) -> Result<Outcome> {
        let subcomponents = has_subcomponents(msg)?;
        let mut mapped = 0;
        for (segment, field) in PROVIDER_FIELDS {
            for xcn in msg.field_paths(segment, field)? {
                if map_provider(msg, &xcn, subcomponents)? {
                    mapped += 1;
                }
            }
        }
        if mapped > 0 {
            log::info(format_args!("mapped {mapped} provider id(s) to NPI"));
        }
        Ok(Outcome::Forward)
    }
}

plexus_sdk::export!(ProviderIdMap);
plexus_sdk::reads_tables!("provider-npi");

plexus_sdk::no_std_runtime!();

/// Does MSH-2 declare a subcomponent separator (its fourth character)?
fn has_subcomponents(msg: &Message) -> Result<bool> {
    Ok(msg
        .read("MSH-2")?
        .text()
        .is_some_and(|encoding| encoding.chars().count() >= 4))
}

/// Maps one XCN repetition; whether it was mapped.
fn map_provider(msg: &Message, xcn: &str, subcomponents: bool) -> Result<bool> {
    let type_code = msg.read(&child(xcn, 13))?;
    if type_code
        .text()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("NPI"))
    {
        return Ok(false);
    }
    let id_path = child(xcn, 1);
    let id = msg.read(&id_path)?;
    let mapped = NPI.resolve(&id_path, id, |key| tables::lookup(NPI.table(), key))?;
    let Mapped::Found { from, to } = mapped else {
        return Ok(false);
    };
    if !npi::is_valid(&to) {
        return Err(TransformError::missing_mapping(
            &id_path,
            format!(
                "{id_path} provider id {} maps to {} in table `{}`, which is not a valid NPI (10 digits with a check digit); fix the entry, then replay",
                quoted(from.trim()),
                quoted(&to),
                NPI.table()
            ),
        ));
    }
    if from != to {
        msg.write(&id_path, &to)?;
    }
    let authority = child(xcn, 9);
    let parts = if subcomponents {
        &AUTHORITY[..]
    } else {
        &AUTHORITY[..1]
    };
    for (sub, value) in (1..).zip(parts) {
        write_if_different(msg, &child(&authority, sub), value)?;
    }
    write_if_different(msg, &child(xcn, 13), "NPI")?;
    Ok(true)
}

fn write_if_different(msg: &Message, path: &str, value: &str) -> Result<()> {
    if msg.read(path)?.text() != Some(value) {
        msg.write(path, value)?;
    }
    Ok(())
}
