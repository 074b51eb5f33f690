//! `plexus errors list|show|replay|resolve`: working the error queue.
//!
//! These open the site's journal directly, so they work whether or not the engine is
//! running; a running engine picks up replayed deliveries within a second.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use plexus_journal::{
    AuditEntry, ErrorEntry, ErrorFilter, ErrorKind, ErrorStats, Journal, MessageId, OutcomeKind,
};
use plexus_pipeline::error_groups::{GROUP_IDS, GROUP_SCAN, group_errors, open_errors_like};
use plexus_pipeline::{
    Engine, ReplayOutcome, masked_delivery_error, masked_reason, masked_stage_detail,
};
use serde_json::json;

use crate::site::{BuiltinAssets, SiteArgs, open_journal};

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    site: SiteArgs,
    /// Only this interface.
    #[arg(long, value_name = "NAME")]
    interface: Option<String>,
    /// Only this kind: parse, plugin-fail, trap, timeout, out-of-memory, destination, internal.
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    kind: Option<ErrorKind>,
    /// Include resolved errors.
    #[arg(long)]
    all: bool,
    /// Most entries shown, oldest first (with --group: most groups).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = positive)]
    limit: usize,
    /// One line per distinct problem instead of per message: errors with the same
    /// interface, kind, stage and reason (as shown without message content), largest
    /// group first, with their message ids for `plexus errors replay`. Open errors only.
    #[arg(long, conflicts_with = "all")]
    group: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// Message ids printed per group in the table (JSON has up to [`GROUP_IDS`]).
const GROUP_IDS_SHOWN: usize = 12;

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    site: SiteArgs,
    /// The message id (first column of `plexus errors list`).
    #[arg(value_name = "ID")]
    id: i64,
    /// Also print the message bytes, the edits' values and the plug-in's own words about
    /// a failure (patient data).
    #[arg(long)]
    unmasked: bool,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    site: SiteArgs,
    /// The messages to replay through their interface's current chain.
    #[command(flatten)]
    which: Selection,
    /// Note recorded when a replay succeeds and closes the error.
    #[arg(long, value_name = "TEXT", default_value = "replayed after a fix")]
    note: String,
}

#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    site: SiteArgs,
    /// The messages whose open errors to resolve, all with the same note.
    #[command(flatten)]
    which: Selection,
    /// What was done about it (required: the next person reads it).
    #[arg(long, value_name = "TEXT")]
    note: String,
}

/// The messages a replay or resolve acts on: ids, or every open error like one.
#[derive(Debug, clap::Args)]
pub struct Selection {
    /// Message ids (first column of `plexus errors list`).
    #[arg(
        value_name = "ID",
        required_unless_present = "like",
        conflicts_with = "like"
    )]
    ids: Vec<i64>,
    /// Every open error like this message's: same interface, kind, stage and reason
    /// (one line of `plexus errors list --group`), oldest first.
    #[arg(long, value_name = "ID")]
    like: Option<i64>,
}

impl Selection {
    fn ids(&self, journal: &dyn Journal) -> anyhow::Result<Vec<i64>> {
        match self.like {
            Some(like) => ids_like(journal, like),
            None => Ok(self.ids.clone()),
        }
    }
}

/// `--limit`: at least 1.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_kind(s: &str) -> Result<ErrorKind, String> {
    let kinds = ErrorKind::ALL;
    kinds
        .iter()
        .copied()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            format!("unknown kind; one of {}", names.join(", "))
        })
}

pub fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let config = args.site.load()?;
    let journal = open_journal(&config)?;
    let filter = ErrorFilter {
        interface: args.interface.clone(),
        kind: args.kind,
        include_resolved: args.all,
    };
    // One more than asked, to say whether the list (or the groups' scan) was cut.
    let wanted = if args.group { GROUP_SCAN } else { args.limit };
    let mut entries = journal.list_errors(&filter, wanted.saturating_add(1))?;
    check_interface(&config, args.interface.as_deref(), entries.is_empty())?;
    let stats = journal.error_stats(args.interface.as_deref())?;
    if args.group {
        print_groups(args, &entries, &stats);
        return Ok(ExitCode::SUCCESS);
    }
    let cut = entries.len() > args.limit;
    entries.truncate(args.limit);
    if args.json {
        for e in &entries {
            println!("{}", entry_json(e, false));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("no {}errors", if args.all { "" } else { "open " });
    } else {
        println!(
            "{:>8}  {:<16}  {:<13}  {:<30}  {:>7}  {:>5}  REASON",
            "ID", "INTERFACE", "KIND", "STAGE", "AGE", "SEEN"
        );
        let now = SystemTime::now();
        for e in &entries {
            let state = if e.resolution.is_some() {
                " (resolved)"
            } else {
                ""
            };
            println!(
                "{:>8}  {:<16}  {:<13}  {:<30}  {:>7}  {:>5}  {}{state}",
                e.message.0,
                e.interface,
                e.kind.as_str(),
                e.stage,
                age(now, e.first_seen),
                e.occurrences,
                one_line(masked_reason(e.kind, &e.reason), 100),
            );
        }
    }
    if cut {
        println!(
            "\nthe first {} shown; more match (raise --limit, or filter by --interface or --kind)",
            args.limit
        );
    } else if entries.len() > 1 {
        // What to work first: the listed errors by kind, most first.
        let mut kinds: Vec<(&str, usize)> = Vec::new();
        for e in &entries {
            match kinds.iter_mut().find(|(k, _)| *k == e.kind.as_str()) {
                Some((_, n)) => *n += 1,
                None => kinds.push((e.kind.as_str(), 1)),
            }
        }
        kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let by_kind: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("\nlisted by kind: {}", by_kind.join(", "));
    }
    print_totals(args, &stats);
    Ok(ExitCode::SUCCESS)
}

/// A typo in `--interface` would otherwise read as an empty queue. An interface since
/// removed from the config still lists the errors it left.
fn check_interface(
    config: &plexus_config::Config,
    interface: Option<&str>,
    none_found: bool,
) -> anyhow::Result<()> {
    if let Some(name) = interface
        && none_found
        && !config.interfaces.keys().any(|k| k.as_str() == name)
    {
        let names: Vec<&str> = config.interfaces.keys().map(|k| k.as_str()).collect();
        anyhow::bail!(
            "no interface `{name}` in this config and no errors from one; interfaces: {}",
            names.join(", ")
        );
    }
    Ok(())
}

/// The queue's totals, under every list.
fn print_totals(args: &ListArgs, stats: &ErrorStats) {
    let oldest = stats
        .oldest_open
        .map(|t| format!(", oldest {} old", age(SystemTime::now(), t)))
        .unwrap_or_default();
    let scope = match (&args.interface, args.kind) {
        (_, Some(_)) => " (all kinds)",
        _ => "",
    };
    println!(
        "\n{} open{oldest}; {} resolved ({} corrected by replay){scope}",
        stats.open, stats.resolved, stats.corrected
    );
}

/// The open errors in the same group as message `like`'s, oldest first; says what it
/// matched on stderr.
fn ids_like(journal: &dyn Journal, like: i64) -> anyhow::Result<Vec<i64>> {
    let (model, ids) = open_errors_like(journal, MessageId(like))?;
    let reason = one_line(masked_reason(model.kind, &model.reason), 100);
    eprintln!(
        "{} open error(s) like message {like}: {}, {}, {}: {reason}",
        ids.len(),
        model.interface,
        model.kind.as_str(),
        model.stage,
    );
    Ok(ids.into_iter().map(|id| id.0).collect())
}

fn print_groups(args: &ListArgs, entries: &[ErrorEntry], stats: &ErrorStats) {
    let scanned = entries.len().min(GROUP_SCAN);
    let groups = group_errors(&entries[..scanned]);
    if args.json {
        for g in groups.iter().take(args.limit) {
            println!("{}", g.to_json());
        }
        return;
    }
    if groups.is_empty() {
        println!("no {}errors", if args.all { "" } else { "open " });
    } else {
        let now = SystemTime::now();
        let rows: Vec<GroupRow<'_>> = groups
            .iter()
            .take(args.limit)
            .map(|g| GroupRow {
                count: g.ids.len() as u64,
                interface: &g.interface,
                kind: g.kind.as_str(),
                stage: &g.stage,
                age_s: now.duration_since(g.oldest).map_or(0, |d| d.as_secs()),
                reason: &g.reason,
                ids: &g.ids,
            })
            .collect();
        print_group_table(&rows, &format!("--json lists up to {GROUP_IDS}"));
    }
    if groups.iter().any(|g| g.ids.len() > 1) {
        println!(
            "\nreplay or resolve a whole group with `plexus errors replay --like ID` or \
             `plexus errors resolve --like ID --note TEXT` (ID: any id of the group)"
        );
    }
    if groups.len() > args.limit {
        println!(
            "\nthe largest {} of {} groups shown (raise --limit)",
            args.limit,
            groups.len()
        );
    }
    if entries.len() > GROUP_SCAN {
        println!(
            "\ngrouped the oldest {GROUP_SCAN} errors; more match (filter by --interface or --kind)"
        );
    }
    print_totals(args, stats);
}

/// One group as the group tables print it.
pub(crate) struct GroupRow<'a> {
    /// Errors in the group (`ids` may hold fewer).
    pub count: u64,
    pub interface: &'a str,
    pub kind: &'a str,
    pub stage: &'a str,
    /// Age of its oldest error, in seconds.
    pub age_s: u64,
    pub reason: &'a str,
    pub ids: &'a [i64],
}

/// The table of `errors list --group` and `admin errors --group`: a line per group, then
/// its first [`GROUP_IDS_SHOWN`] ids; `hint` says where the rest are listed, if anywhere.
pub(crate) fn print_group_table(rows: &[GroupRow<'_>], hint: &str) {
    println!(
        "{:>6}  {:<16}  {:<13}  {:<30}  {:>7}  REASON",
        "COUNT", "INTERFACE", "KIND", "STAGE", "OLDEST"
    );
    for g in rows {
        println!(
            "{:>6}  {:<16}  {:<13}  {:<30}  {:>7}  {}",
            g.count,
            g.interface,
            g.kind,
            g.stage,
            age_text(g.age_s),
            one_line(g.reason, 100),
        );
        let shown: Vec<String> = g
            .ids
            .iter()
            .take(GROUP_IDS_SHOWN)
            .map(i64::to_string)
            .collect();
        let more = g.count.saturating_sub(shown.len() as u64);
        let more = match (more, hint) {
            (0, _) => String::new(),
            (n, "") => format!(" (and {n} more)"),
            (n, hint) => format!(" (and {n} more: {hint})"),
        };
        println!("{:>8}ids {}{more}", "", shown.join(" "));
    }
}

pub fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let config = args.site.load()?;
    let journal = open_journal(&config)?;
    let record = journal.show(MessageId(args.id))?;
    if args.unmasked {
        // Every view of message content is on the record.
        journal.audit(AuditEntry {
            actor: actor(),
            action: "unmasked-view".to_owned(),
            subject: format!("message:{}", args.id),
            detail: "plexus errors show --unmasked".to_owned(),
        })?;
    }
    let m = &record.inbound;
    if args.json {
        let value = json!({
            "id": record.id.0,
            "interface": m.interface,
            "source": m.source_kind.as_str(),
            "peer": m.source_peer,
            "received_at_ms": ms(m.received_at),
            "control_id": m.control_id,
            "message_type": m.message_type,
            "duplicate_of": record.duplicate_of.map(|d| d.0),
            "processed": record.processed,
            "replays": record.replays,
            "raw": args.unmasked.then(|| String::from_utf8_lossy(&m.raw).into_owned()),
            "stages": record.stages.iter().zip(plexus_pipeline::stage_runs(&record.stages)).map(|(s, run)| json!({
                "run": run,
                "index": s.record.stage_index,
                "plugin": s.record.plugin,
                "sha256": s.record.plugin_sha256,
                "outcome": s.record.outcome.as_str(),
                "detail": s.record.detail.as_deref().map(|d| stage_detail(s.record.outcome, d, args.unmasked)),
                "edits": s.record.edits.iter().map(|e| if args.unmasked {
                    json!({"path": e.path, "old": e.old, "new": e.new})
                } else {
                    json!({"path": e.path})
                }).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "deliveries": record.deliveries.iter().map(|d| json!({
                "destination": d.destination,
                "status": d.status.as_str(),
                "attempts": d.attempts,
                "last_error": d.last_error.as_deref().map(|t| if args.unmasked { t } else { masked_delivery_error(t) }),
                "possible_resend": d.possible_resend,
            })).collect::<Vec<_>>(),
            "errors": record.errors.iter().map(|e| entry_json(e, args.unmasked)).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = SystemTime::now();
    println!("message {}", record.id);
    println!("  interface    {} (via {})", m.interface, m.source_kind);
    if let Some(peer) = &m.source_peer {
        println!("  from         {peer}");
    }
    println!("  received     {} ago", age(now, m.received_at));
    println!(
        "  MSH-10       {}",
        m.control_id.as_deref().unwrap_or("(none)")
    );
    println!(
        "  MSH-9        {}",
        m.message_type.as_deref().unwrap_or("(unknown)")
    );
    println!("  bytes        {}", m.raw.len());
    if let Some(first) = record.duplicate_of {
        println!("  duplicate of message {first} (same MSH-10 on this interface)");
    }
    println!(
        "  processed    {}{}",
        if record.processed { "yes" } else { "no" },
        if record.replays > 0 {
            format!(", replayed {} time(s)", record.replays)
        } else {
            String::new()
        }
    );
    for e in &record.errors {
        let state = match &e.resolution {
            Some(r) => format!("resolved {} ago: {}", age(now, r.at), r.note),
            None => "OPEN".to_owned(),
        };
        println!("\nerror [{state}]");
        println!("  kind         {}", e.kind);
        println!("  stage        {}", e.stage);
        if let Some(path) = &e.path {
            println!("  path         {path}");
        }
        println!("  reason       {}", reason(e, args.unmasked));
        println!(
            "  first seen   {} ago; seen {} time(s); replayed {} time(s)",
            age(now, e.first_seen),
            e.occurrences,
            e.replays
        );
    }
    if !record.stages.is_empty() {
        println!("\nstages");
        let runs = plexus_pipeline::stage_runs(&record.stages);
        let replayed = runs.last().is_some_and(|&n| n > 1);
        for (s, run) in record.stages.iter().zip(runs) {
            let r = &s.record;
            // Each replay runs the chain again from stage 0: one heading per run.
            if replayed && r.stage_index == 0 {
                match run {
                    1 => println!("  on arrival"),
                    n => println!("  replay {} ({} ago)", n - 1, age(now, s.recorded_at)),
                }
            }
            println!(
                "  {}. {} ({}): {}{}",
                r.stage_index,
                r.plugin,
                r.plugin_sha256.get(..12).unwrap_or(&r.plugin_sha256),
                r.outcome,
                r.detail
                    .as_deref()
                    .map(|d| format!(" ({})", stage_detail(r.outcome, d, args.unmasked)))
                    .unwrap_or_default()
            );
            for e in &r.edits {
                if args.unmasked {
                    println!(
                        "       {}: {:?} -> {:?}",
                        e.path,
                        e.old.as_deref().unwrap_or(""),
                        e.new.as_deref().unwrap_or("")
                    );
                } else {
                    println!("       {}", e.path);
                }
            }
        }
    }
    if !record.deliveries.is_empty() {
        println!("\ndeliveries");
        for d in &record.deliveries {
            println!(
                "  {:<16} {:<10} {} attempt(s){}",
                d.destination,
                d.status.as_str(),
                d.attempts,
                d.last_error
                    .as_deref()
                    .map(|e| format!(
                        "; last error: {}",
                        if args.unmasked {
                            e
                        } else {
                            masked_delivery_error(e)
                        }
                    ))
                    .unwrap_or_default()
            );
            if d.possible_resend {
                println!(
                    "  {:<16} possible resend: an attempt may have reached the receiver without \
                     an answer saying so (no ACK in time, a connection lost, or an engine \
                     stopped uncleanly mid-send); it may have this twice (same MSH-10)",
                    ""
                );
            }
        }
    }
    if args.unmasked {
        println!("\nmessage (as received)");
        for segment in String::from_utf8_lossy(&m.raw).split(['\r', '\n']) {
            if !segment.is_empty() {
                println!("  {segment}");
            }
        }
    } else {
        println!("\n(message content and plug-in failure details hidden; --unmasked shows them)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether an engine holds the data folder's lock now (a shared lock cannot be had).
fn engine_running(data_dir: &std::path::Path) -> bool {
    std::fs::File::open(data_dir.join("engine.lock"))
        .is_ok_and(|f| matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)))
}

pub fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let config = args.site.load()?;
    anyhow::ensure!(
        plexus_pipeline::journal_path(&config).exists(),
        "no journal at {} (has the engine run with this config, from this folder?)",
        plexus_pipeline::journal_path(&config).display()
    );
    let journal = open_journal(&config)?;
    let ids = args.which.ids(&journal)?;
    let running = engine_running(&config.engine.data_dir);
    let data_dir = config.engine.data_dir.clone();
    let engine = Engine::build(config, &BuiltinAssets).context("loading the site's plug-ins")?;
    if running {
        // This replay maps with the config, plug-ins and tables on disk now; the engine
        // with what it loaded at its start (tables again at SIGHUP) and what was activated
        // since. Said before anything runs, with the chains this replay will use.
        eprintln!(
            "note: an engine is running on {}; this replay maps with the config, plug-ins and tables on disk now, which is what the engine runs only if none of them changed since it started (tables: since its last SIGHUP). `plexus admin replay` replays inside the running engine, with exactly what it runs.",
            data_dir.display()
        );
        let mut interfaces: Vec<String> = ids
            .iter()
            .filter_map(|id| journal.show(MessageId(*id)).ok())
            .map(|record| record.inbound.interface)
            .collect();
        interfaces.sort();
        interfaces.dedup();
        for interface in interfaces {
            if let Ok(chain) = engine.active_chain(&interface) {
                let stages: Vec<String> = chain
                    .digests()
                    .iter()
                    .map(|(name, sha)| format!("{name}@{}", plexus_sandbox::inspect::short(sha)))
                    .collect();
                eprintln!(
                    "  interface {interface}: this replay runs [{}]",
                    stages.join(", ")
                );
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut failed = 0;
    for id in &ids {
        match runtime.block_on(engine.replay(MessageId(*id), &args.note, &actor())) {
            Ok(ReplayOutcome::Requeued {
                destinations,
                already_delivered,
            }) => {
                let mut done = Vec::new();
                if !destinations.is_empty() {
                    done.push(format!("queued for {}", destinations.join(", ")));
                }
                if !already_delivered.is_empty() {
                    done.push(format!(
                        "already delivered to {} (not sent again)",
                        already_delivered.join(", ")
                    ));
                }
                if done.is_empty() {
                    done.push("the interface has no destination".to_owned());
                }
                println!(
                    "message {id}: passed the chain; {}; error resolved{}",
                    done.join("; "),
                    if destinations.is_empty() {
                        ""
                    } else {
                        " (it reopens, with its age, if the delivery fails again)"
                    }
                );
            }
            Ok(ReplayOutcome::Filtered { reason }) => {
                println!("message {id}: filtered by the chain ({reason}); error resolved")
            }
            Ok(ReplayOutcome::FailedAgain(f)) => {
                failed += 1;
                println!("message {id}: failed again at {}: {}", f.stage, f.reason);
            }
            Err(err) => {
                failed += 1;
                println!("message {id}: cannot replay: {err}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn resolve(args: &ResolveArgs) -> anyhow::Result<ExitCode> {
    let config = args.site.load()?;
    let journal = open_journal(&config)?;
    let ids = args.which.ids(&journal)?;
    let mut failed = 0;
    for &id in &ids {
        let (id, audit) = (
            MessageId(id),
            AuditEntry::resolve(&actor(), MessageId(id), &args.note),
        );
        match journal.resolve_audited(id, &args.note, audit) {
            Ok(_) => println!("message {id}: error resolved"),
            Err(e) => {
                failed += 1;
                println!("message {id}: not resolved: {e}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Who is acting, for the audit log: the operating-system user running the command.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.trim().is_empty())
        .or_else(login_of_this_process)
        .unwrap_or_else(|| "unknown".to_owned());
    format!("cli:{user}")
}

/// The login name of this process's real user, from `/proc` and `/etc/passwd` (for
/// shells, cron and services that set no `USER`); `uid N` when it has none.
fn login_of_this_process() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|line| {
        let mut parts = line.split(':');
        let name = parts.next()?;
        (parts.nth(1)? == uid).then(|| name.to_owned())
    });
    Some(name.unwrap_or_else(|| format!("uid {uid}")))
}

/// The error's reason; without `unmasked`, as views without message content show it.
fn reason(e: &ErrorEntry, unmasked: bool) -> &str {
    if unmasked {
        &e.reason
    } else {
        masked_reason(e.kind, &e.reason)
    }
}

/// A stage's detail; without `unmasked`, a failed stage's kind and path only (the
/// plug-in's own words may quote field values).
fn stage_detail(outcome: OutcomeKind, detail: &str, unmasked: bool) -> &str {
    if unmasked {
        detail
    } else {
        masked_stage_detail(outcome, detail)
    }
}

fn entry_json(e: &ErrorEntry, unmasked: bool) -> serde_json::Value {
    json!({
        "id": e.message.0,
        "interface": e.interface,
        "control_id": e.control_id,
        "message_type": e.message_type,
        "kind": e.kind.as_str(),
        "stage": e.stage,
        "path": e.path,
        "reason": reason(e, unmasked),
        "first_seen_ms": ms(e.first_seen),
        "last_seen_ms": ms(e.last_seen),
        "occurrences": e.occurrences,
        "replays": e.replays,
        "resolved": e.resolution.as_ref().map(|r| json!({"at_ms": ms(r.at), "note": r.note})),
    })
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `42s`, `7m`, `3h`, `2d`.
fn age(now: SystemTime, then: SystemTime) -> String {
    age_text(now.duration_since(then).unwrap_or(Duration::ZERO).as_secs())
}

/// An age in seconds as the error lists show it: `42s`, `5m`, `3h`, `2d`.
pub fn age_text(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max - 1).collect();
        format!("{cut}…")
    } else {
        flat
    }
}
