//! `plexus audit list|verify`: the append-only, hash-chained record of operator actions
//! (activations, rollbacks, replays, resolves, unmasked views).

use std::process::ExitCode;
use std::time::SystemTime;

use plexus_journal::Journal;
use serde_json::json;

use crate::site::{SiteArgs, open_journal};

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    site: SiteArgs,
    /// Only entries after this id.
    #[arg(long, value_name = "ID", default_value_t = 0)]
    after: i64,
    /// Most entries shown.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    site: SiteArgs,
}

pub fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let config = args.site.load()?;
    let journal = open_journal(&config)?;
    let entries = journal.audit_log(args.after, args.limit as usize)?;
    if entries.is_empty() && !args.json {
        println!("no audit entries");
    }
    for r in &entries {
        let at_ms =
            r.at.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
        if args.json {
            println!(
                "{}",
                json!({
                    "id": r.id, "at_ms": at_ms as u64, "actor": r.entry.actor,
                    "action": r.entry.action, "subject": r.entry.subject,
                    "detail": r.entry.detail, "prev_hash": r.prev_hash, "hash": r.hash,
                })
            );
        } else {
            println!(
                "{:>6}  {}  {:<16} {:<14} {:<24} {}",
                r.id,
                plexus_hl7::ack::timestamp(r.at),
                r.entry.actor,
                r.entry.action,
                r.entry.subject,
                r.entry.detail
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let config = args.site.load()?;
    let journal = open_journal(&config)?;
    let result = journal.verify_audit()?;
    match result.first_broken {
        None => {
            println!(
                "audit log intact: {} entries, hash chain verified",
                result.entries
            );
            Ok(ExitCode::SUCCESS)
        }
        Some((id, why)) => {
            println!(
                "audit log BROKEN at entry {id}: {why} ({} entries before it are intact)",
                result.entries
            );
            Ok(ExitCode::from(1))
        }
    }
}
