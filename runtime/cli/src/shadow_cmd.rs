//! `plexus shadow start|stop|promote|report`: run a candidate chain beside an interface's
//! active one on live traffic, see what it would change, then promote or stop it. Start,
//! stop and promote go to the running engine's admin API; `report` reads the journal.

use std::process::ExitCode;

use plexus_pipeline::shadow::{self, ReportOptions, ShadowReport};

use crate::api::{ApiArgs, Body, chain, expect};
use crate::site::{SiteArgs, open_journal};

#[derive(Debug, clap::Subcommand)]
pub enum ShadowCommand {
    /// Start shadowing: every message the interface journals from now on also runs
    /// through the candidate; nothing it outputs is delivered.
    #[command(after_help = "Example:\n  \
        plexus shadow start scheduling demographics-normalize@f2c9111b78d1 visit-status-map@5467663bbd62")]
    Start(Start),
    /// Stop the interface's shadow run (its results stay for the report).
    Stop(Target),
    /// Activate the candidate through the gate (grants, golden cases) and end the run.
    Promote(Target),
    /// Counts, the paths whose values differ (most frequent first), the candidate's
    /// failures and masked examples. Reads the site's journal.
    #[command(after_help = "Examples:\n  \
        plexus shadow report scheduling\n  \
        plexus shadow report scheduling --run 3 --json --config site.toml")]
    Report(Report),
}

#[derive(Debug, clap::Args)]
pub struct Start {
    /// The interface.
    interface: String,
    /// The candidate chain, one `PLUGIN@SHA256` per stage (uploaded versions).
    #[arg(required = true, value_name = "PLUGIN@SHA256")]
    stages: Vec<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct Target {
    /// The interface.
    interface: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct Report {
    /// The interface.
    interface: String,
    /// The run (default: the interface's latest).
    #[arg(long)]
    run: Option<i64>,
    /// Examples shown, one per path.
    #[arg(long, default_value_t = 5)]
    examples: usize,
    /// Show example values as they are (recorded in the audit log).
    #[arg(long)]
    unmasked: bool,
    /// The report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    site: SiteArgs,
}

pub fn run(command: &ShadowCommand) -> anyhow::Result<ExitCode> {
    match command {
        ShadowCommand::Start(a) => {
            let (status, v) = a.api.call(
                "POST",
                &format!("/admin/v1/interfaces/{}/shadow", a.interface),
                Body::Json(chain(&a.stages)?),
            )?;
            expect(status, &v, &[201], "starting the shadow run")?;
            println!(
                "shadow run {} started on {}; `plexus shadow report {}` shows what it changes",
                v["run"], a.interface, a.interface
            );
            crate::admin_cmd::print_changes(&v["capability_changes"]);
        }
        ShadowCommand::Stop(a) => {
            let (status, v) = a.api.call(
                "DELETE",
                &format!("/admin/v1/interfaces/{}/shadow", a.interface),
                Body::None,
            )?;
            expect(status, &v, &[200], "stopping the shadow run")?;
            println!("shadow run {} on {} stopped", v["run"], a.interface);
        }
        ShadowCommand::Promote(a) => {
            let (status, v) = a.api.call(
                "POST",
                &format!("/admin/v1/interfaces/{}/shadow/promote", a.interface),
                Body::None,
            )?;
            expect(status, &v, &[200], "promoting the candidate")?;
            println!(
                "shadow run {} promoted: the candidate is active on {}",
                v["run"], a.interface
            );
            crate::admin_cmd::print_stage_changes(&v);
            crate::admin_cmd::print_changes(&v["capability_changes"]);
        }
        ShadowCommand::Report(a) => return report(a),
    }
    Ok(ExitCode::SUCCESS)
}

fn report(args: &Report) -> anyhow::Result<ExitCode> {
    let config = args.site.load()?;
    let journal = open_journal(&config)?;
    let options = ReportOptions {
        unmasked: args.unmasked,
        examples: args.examples,
    };
    let report = shadow::report(&journal, &args.interface, args.run, options)?;
    if args.unmasked {
        plexus_journal::Journal::audit(
            &journal,
            plexus_journal::AuditEntry {
                actor: crate::errors_cmd::actor(),
                action: "unmasked-view".to_owned(),
                subject: format!("interface:{}", args.interface),
                detail: format!("plexus shadow report --unmasked, run {}", report.run),
            },
        )?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &ShadowReport) {
    println!(
        "shadow run {} on {} ({}), started by {}",
        r.run,
        r.interface,
        r.ended.as_deref().unwrap_or("running"),
        r.started_by
    );
    println!("candidate  {}", r.candidate.join(" -> "));
    let pct = |n: u64| {
        if r.messages == 0 {
            0.0
        } else {
            n as f64 * 100.0 / r.messages as f64
        }
    };
    println!("messages   {}", r.messages);
    println!("same       {} ({:.1}%)", r.same, pct(r.same));
    println!(
        "changed    {} ({:.1}%) with different output",
        r.changed_output,
        pct(r.changed_output)
    );
    for (active, candidate, n) in &r.changed_outcome {
        println!("outcome    {n} message(s): active {active}, candidate {candidate}");
    }
    if r.paths.is_empty() {
        println!("\nno path differs");
    } else {
        println!("\npaths that differ (messages):");
        for (path, n) in &r.paths {
            println!("  {path:<16} {n}");
        }
    }
    if !r.failures.is_empty() {
        println!("\ncandidate failures (messages):");
        for (detail, n) in &r.failures {
            println!("  {n:>6}  {detail}");
        }
    }
    if !r.examples.is_empty() {
        println!(
            "\nexamples ({}):",
            if r.unmasked {
                "unmasked"
            } else {
                "masked: letters x/X, digits 9; --unmasked shows values"
            }
        );
        for e in &r.examples {
            println!(
                "  {:<16} message {:<8} {:?} -> {:?}",
                e.path,
                e.message,
                e.active.as_deref().unwrap_or("(absent)"),
                e.candidate.as_deref().unwrap_or("(absent)")
            );
        }
    }
}
