//! `demographics-normalize`: makes patient names, phone numbers and administrative sex in
//! `PID` consistent, in every `PID` segment and every repetition.
//!
//! * **Names** (`PID-5`): whitespace trimmed and collapsed, letters uppercased; see
//!   [`name`].
//! * **Phones** (`PID-13`, `PID-14`): North American numbers written as `(AAA)EEE-NNNN`
//!   in XTN-1, with XTN-6 and XTN-7 filled; anything else left alone; see [`phone`].
//! * **Sex** (`PID-8`): common spellings mapped to HL7 table 0001; anything unknown fails
//!   the message with `invalid-input`; see [`sex`].
//!
//! Empty values are left empty, and the explicit null `""` is kept as `""`: it tells the
//! receiver to delete what it holds, so it is never turned into a value (nor a value into
//! it). A value that is only whitespace is no value, and is cleared to empty.
//!
//! Grants: none. The plug-in uses no capability.
//!
//! It is `no_std` on wasm32 (see `plexus_sdk::no_std_runtime!`): it links no WASI, so a
//! fresh instance per message is cheap.

#![cfg_attr(target_arch = "wasm32", no_std)]
extern crate alloc;

use alloc::format;
use alloc::string::String;
use plexus_sdk::path::child;
use plexus_sdk::text::quoted;
use plexus_sdk::{Context, Message, Outcome, Plugin, Result, TransformError, Value};

pub mod name;
pub mod phone;
pub mod sex;

struct DemographicsNormalize;

impl Plugin for DemographicsNormalize {
    fn transform(msg: &Message, _ctx: Context) -> Result<Outcome> {
        for xpn in msg.field_paths("PID", 5)? {
            normalize_name(msg, &xpn)?;
        }
        for field in [13, 14] {
            for xtn in msg.field_paths("PID", field)? {
                normalize_phone(msg, &xtn)?;
            }
        }
        for pid in msg.segment_paths("PID")? {
            normalize_sex(msg, &format!("{pid}-8"))?;
        }
        Ok(Outcome::Forward)
    }
}

plexus_sdk::export!(DemographicsNormalize);

plexus_sdk::no_std_runtime!();

/// Rewrites `path` when `fix` changes its text; empty and `""` are never touched.
fn rewrite(msg: &Message, path: &str, fix: impl FnOnce(&str) -> String) -> Result<()> {
    if let Value::Text(text) = msg.read(path)? {
        let fixed = fix(&text);
        if fixed != text {
            msg.write(path, &fixed)?;
        }
    }
    Ok(())
}

/// One XPN repetition: the family name's subcomponents (surname, prefixes, partner's
/// surname), then given name, middle names, suffix, prefix and degree. The name type
/// code (XPN-7) and later components are codes and dates, and are left alone.
fn normalize_name(msg: &Message, xpn: &str) -> Result<()> {
    let family = child(xpn, 1);
    for sub in 1..=5 {
        rewrite(msg, &child(&family, sub), name::normalize)?;
    }
    for component in 2..=6 {
        rewrite(msg, &child(xpn, component), name::normalize)?;
    }
    Ok(())
}

/// One XTN repetition. The number comes from XTN-1, or when that is empty from XTN-6 and
/// XTN-7 (with XTN-8 as the extension); XTN-1 wins when both are there. A number that is
/// not North American is left exactly as it is.
fn normalize_phone(msg: &Message, xtn: &str) -> Result<()> {
    let at = |component| child(xtn, component);
    let number = match msg.read(&at(1))? {
        Value::Null => return Ok(()),
        Value::Text(text) => text,
        Value::Empty => match (msg.read(&at(6))?, msg.read(&at(7))?) {
            (Value::Text(area), Value::Text(local)) => format!("({area}){local}"),
            _ => return Ok(()),
        },
    };
    let extension = msg.read(&at(8))?;
    let Some(nanp) = phone::Nanp::parse(&number, extension.text()) else {
        return Ok(());
    };
    fill(msg, &at(1), &nanp.formatted())?;
    fill(msg, &at(6), nanp.area())?;
    fill(msg, &at(7), &nanp.local())?;
    if let Some(ext) = nanp.extension() {
        fill(msg, &at(8), ext)?;
    }
    Ok(())
}

/// Writes `value` at `path` unless it is there already, or the path holds `""`.
fn fill(msg: &Message, path: &str, value: &str) -> Result<()> {
    match msg.read(path)? {
        Value::Null => Ok(()),
        Value::Text(text) if text == value => Ok(()),
        Value::Text(_) | Value::Empty => msg.write(path, value),
    }
}

/// `PID-8`: a code from table 0001, or `invalid-input`.
fn normalize_sex(msg: &Message, path: &str) -> Result<()> {
    let Value::Text(text) = msg.read(path)? else {
        return Ok(());
    };
    let code = match sex::code(&text) {
        Ok(code) => code,
        Err(sex::Unknown) => {
            return Err(TransformError::invalid_input(
                path,
                format!(
                    "administrative sex {} is not a code of HL7 table 0001 (F, M, O, U, A, N) nor a known spelling of one",
                    quoted(text.trim())
                ),
            ));
        }
    };
    if code != text {
        msg.write(path, code)?;
    }
    Ok(())
}
