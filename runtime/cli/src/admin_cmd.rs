//! `plexus admin ...`: the admin API from the command line, against a running engine
//! (`--url`, default `http://127.0.0.1:8480`; token in `PLEXUS_TOKEN`). Every action is
//! checked against the token's role and audited by the engine, as over HTTP.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::api::{ApiArgs, Body, chain, expect};

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Interfaces and their active chains.
    Interfaces(Plain),
    /// Plug-in versions uploaded or running, and where they run.
    Plugins(Plain),
    /// One version's inspection: imports classified as capabilities, exports, producers.
    Inspect(Inspect),
    /// Upload a plug-in version (stored by sha256; activating it is a separate step).
    Upload(Upload),
    /// Activate uploaded versions on an interface, through the gate (grants, golden
    /// cases): the whole chain, every stage in order (a stage left out is removed);
    /// prints stages removed or added and the capability changes.
    Activate(Stages),
    /// Put back the interface's previous chain.
    Rollback(Interface),
    /// Run stored messages through a candidate chain without journaling or delivering.
    Trial(Trial),
    /// Open errors (all with --all).
    Errors(Errors),
    /// One message; content only with --unmasked (needs the operator role; audited).
    Show(Show),
    /// Replay a message through its interface's current chain.
    Replay(Noted),
    /// Close a message's error with a note.
    Resolve(Noted),
    /// A plug-in's grants; with --set, change them (reviewer or admin role): the
    /// running versions are relinked at once, and the change is audited.
    #[command(after_help = "Example:\n  \
        plexus admin grants visit-status-map --set tables:visit-status,log")]
    Grants(GrantsArgs),
    /// The audit log (reviewer or admin role).
    Audit(Audit),
    /// Verify the audit log's hash chain (reviewer or admin role).
    Verify(Plain),
}

#[derive(Debug, clap::Args)]
pub struct Plain {
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct Inspect {
    /// The version's sha256.
    sha256: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct Upload {
    /// The component (.wasm).
    file: PathBuf,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct Stages {
    /// The interface.
    interface: String,
    /// The chain, one `PLUGIN@SHA256` per stage, in order.
    #[arg(required = true, value_name = "PLUGIN@SHA256")]
    stages: Vec<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct Interface {
    /// The interface.
    interface: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct Trial {
    /// The interface.
    interface: String,
    /// The candidate chain, one `PLUGIN@SHA256` per stage.
    #[arg(required = true, value_name = "PLUGIN@SHA256")]
    stages: Vec<String>,
    /// The messages (journal ids), comma separated.
    #[arg(long, value_delimiter = ',', required = true, value_name = "ID,...")]
    messages: Vec<i64>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct Errors {
    /// Only this interface's.
    #[arg(long)]
    interface: Option<String>,
    /// Only this kind (`parse`, `plugin-fail`, `trap`, `timeout`, `out-of-memory`,
    /// `destination`, ...).
    #[arg(long)]
    kind: Option<String>,
    /// Resolved ones too.
    #[arg(long)]
    all: bool,
    /// One line per problem (interface, kind, stage and reason), largest first, with
    /// its message ids; open errors only.
    #[arg(long, conflicts_with = "all")]
    group: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct Show {
    /// The message (journal id).
    id: i64,
    /// Show message content (operator role; the view is audited).
    #[arg(long)]
    unmasked: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct Noted {
    /// The message (journal id).
    id: i64,
    /// What was done (required to resolve; recorded with a replay).
    #[arg(long)]
    note: Option<String>,
    /// Every open error like this message's: its line of `plexus admin errors --group`
    /// (same interface, kind, stage and reason), in message order, up to 1000 a call.
    #[arg(long)]
    like: bool,
    /// With --like: only messages after this id (the `next_after` an earlier call
    /// printed, to go on from there).
    #[arg(long, requires = "like", value_name = "ID")]
    after: Option<i64>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct GrantsArgs {
    /// The plug-in (its name in the site config).
    plugin: String,
    /// The new grants, comma separated (`log`, `tables:NAME`, `reuse-instance`); an
    /// empty value grants nothing.
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    set: Option<Vec<String>>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct Audit {
    /// Only entries after this id.
    #[arg(long, default_value_t = 0)]
    after: i64,
    /// At most this many entries (the API takes up to 10000).
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    #[command(flatten)]
    api: ApiArgs,
}

fn print(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn stages_text(chain: &Value) -> String {
    chain
        .as_array()
        .map(|stages| {
            stages
                .iter()
                .map(|s| {
                    let sha = s["sha256"].as_str().unwrap_or("");
                    format!(
                        "{}@{}",
                        s["plugin"].as_str().unwrap_or("?"),
                        sha.get(..12).unwrap_or(sha)
                    )
                })
                .collect::<Vec<_>>()
                .join(" -> ")
        })
        .unwrap_or_default()
}

pub fn run(command: &AdminCommand) -> anyhow::Result<ExitCode> {
    match command {
        AdminCommand::Interfaces(a) => {
            let (status, v) = a.api.call("GET", "/admin/v1/interfaces", Body::None)?;
            expect(status, &v, &[200], "listing interfaces")?;
            for i in v["interfaces"].as_array().into_iter().flatten() {
                println!(
                    "{:<20} {}",
                    i["name"].as_str().unwrap_or("?"),
                    stages_text(&i["chain"])
                );
            }
        }
        AdminCommand::Plugins(a) => {
            let (status, v) = a.api.call("GET", "/admin/v1/plugins", Body::None)?;
            expect(status, &v, &[200], "listing plug-ins")?;
            println!(
                "{:<64}  {:>9}  {:<16} active on",
                "sha256", "bytes", "capabilities"
            );
            for p in v["plugins"].as_array().into_iter().flatten() {
                let list = |v: &Value| {
                    v.as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default()
                };
                println!(
                    "{:<64}  {:>9}  {:<16} {}",
                    p["sha256"].as_str().unwrap_or("?"),
                    p["size"],
                    list(&p["capabilities"]),
                    list(&p["active_on"])
                );
            }
        }
        AdminCommand::Inspect(a) => {
            let (status, v) = a.api.call(
                "GET",
                &format!("/admin/v1/plugins/{}", a.sha256),
                Body::None,
            )?;
            expect(status, &v, &[200], "inspecting")?;
            print(&v)?;
        }
        AdminCommand::Upload(a) => {
            let bytes =
                std::fs::read(&a.file).map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
            let (status, v) = a.api.call("POST", "/admin/v1/plugins", Body::Wasm(bytes))?;
            expect(status, &v, &[201], "uploading")?;
            println!(
                "uploaded {} ({} bytes), capabilities {}",
                v["sha256"].as_str().unwrap_or("?"),
                v["size"],
                v["capabilities"]
            );
        }
        AdminCommand::Activate(a) => {
            let (status, v) = a.api.call(
                "POST",
                &format!("/admin/v1/interfaces/{}/activate", a.interface),
                Body::Json(chain(&a.stages)?),
            )?;
            expect(status, &v, &[200], "activation")?;
            println!("activated on {}", a.interface);
            print_stage_changes(&v);
            print_changes(&v["capability_changes"]);
        }
        AdminCommand::Rollback(a) => {
            let (status, v) = a.api.call(
                "POST",
                &format!("/admin/v1/interfaces/{}/rollback", a.interface),
                Body::None,
            )?;
            expect(status, &v, &[200], "rollback")?;
            println!("rolled back {}", a.interface);
        }
        AdminCommand::Trial(a) => {
            let mut body = chain(&a.stages)?;
            body["messages"] = json!(a.messages);
            let (status, v) = a.api.call(
                "POST",
                &format!("/admin/v1/interfaces/{}/trial", a.interface),
                Body::Json(body),
            )?;
            expect(status, &v, &[200], "trial")?;
            print(&v)?;
        }
        AdminCommand::Errors(a) => {
            let mut path = format!("/admin/v1/errors?all={}&group={}", a.all, a.group);
            if let Some(i) = &a.interface {
                path.push_str(&format!("&interface={i}"));
            }
            if let Some(k) = &a.kind {
                path.push_str(&format!("&kind={k}"));
            }
            let (status, v) = a.api.call("GET", &path, Body::None)?;
            expect(status, &v, &[200], "listing errors")?;
            if a.group {
                print_groups(&v)?;
                return Ok(ExitCode::SUCCESS);
            }
            let errors = v["errors"].as_array().cloned().unwrap_or_default();
            if errors.is_empty() {
                println!("no {}errors", if a.all { "" } else { "open " });
            } else {
                println!(
                    "{:>8}  {:<16} {:<14} {:<30} {:>7}  REASON",
                    "ID", "INTERFACE", "KIND", "STAGE", "AGE"
                );
            }
            for e in errors {
                println!(
                    "{:>8}  {:<16} {:<14} {:<30} {:>7}  {}",
                    e["id"].as_i64().unwrap_or(0),
                    e["interface"].as_str().unwrap_or("?"),
                    e["kind"].as_str().unwrap_or("?"),
                    e["stage"].as_str().unwrap_or("?"),
                    crate::errors_cmd::age_text(e["age_s"].as_u64().unwrap_or(0)),
                    e["reason"].as_str().unwrap_or("")
                );
            }
            println!(
                "\n{} open; {} resolved ({} corrected by replay){}",
                v["open"],
                v["resolved"],
                v["corrected"],
                if a.kind.is_some() { " (all kinds)" } else { "" }
            );
        }
        AdminCommand::Show(a) => {
            let (status, v) = a.api.call(
                "GET",
                &format!("/admin/v1/messages/{}?unmasked={}", a.id, a.unmasked),
                Body::None,
            )?;
            expect(status, &v, &[200], "showing the message")?;
            print(&v)?;
        }
        AdminCommand::Replay(a) | AdminCommand::Resolve(a) => {
            let action = if matches!(command, AdminCommand::Replay(_)) {
                "replay"
            } else {
                "resolve"
            };
            let body = match (&a.note, a.like) {
                (note, true) => Body::Json(json!({ "note": note, "like": true, "after": a.after })),
                (Some(note), false) => Body::Json(json!({ "note": note })),
                (None, false) => Body::None,
            };
            let (status, v) = a.api.call(
                "POST",
                &format!("/admin/v1/messages/{}/{action}", a.id),
                body,
            )?;
            if status == 503 && v.get("results").or(v.get("ids")).is_some() {
                // A group action that stopped part way: what was done, then why.
                print(&v)?;
            }
            expect(status, &v, &[200], action)?;
            print(&v)?;
            if let Some(after) = v["next_after"].as_i64() {
                eprintln!(
                    "{} more in the group: go on with --like --after {after}",
                    v["remaining"]
                );
            }
            // As `plexus errors replay`: a replay that failed again is a failure.
            let failed = v["result"] == "failed" || v["failed"].as_u64().is_some_and(|n| n > 0);
            if failed {
                return Ok(ExitCode::from(1));
            }
        }
        AdminCommand::Grants(a) => {
            let path = format!("/admin/v1/grants/{}", a.plugin);
            match &a.set {
                None => {
                    let (status, v) = a.api.call("GET", &path, Body::None)?;
                    expect(status, &v, &[200], "reading grants")?;
                    println!("{}: {}", a.plugin, v["grants"]);
                    if v["overridden"] == json!(true) {
                        println!(
                            "  (changed through the admin API; the config says {})",
                            v["config"]
                        );
                    }
                }
                Some(grants) => {
                    let grants: Vec<&String> = grants.iter().filter(|g| !g.is_empty()).collect();
                    let (status, v) =
                        a.api
                            .call("PUT", &path, Body::Json(json!({ "grants": grants })))?;
                    expect(status, &v, &[200], "changing grants")?;
                    println!(
                        "{}: grants {} -> {}; relinked on {}",
                        a.plugin, v["before"], v["after"], v["relinked"]
                    );
                }
            }
        }
        AdminCommand::Audit(a) => {
            let (status, v) = a.api.call(
                "GET",
                &format!("/admin/v1/audit?after={}&limit={}", a.after, a.limit),
                Body::None,
            )?;
            expect(status, &v, &[200], "reading the audit log")?;
            let entries = v["entries"].as_array().cloned().unwrap_or_default();
            for e in &entries {
                println!(
                    "{:>6}  {}  {:<16} {:<14} {:<24} {}",
                    e["id"].as_i64().unwrap_or(0),
                    e["at"].as_str().unwrap_or("?"),
                    e["actor"].as_str().unwrap_or("?"),
                    e["action"].as_str().unwrap_or("?"),
                    e["subject"].as_str().unwrap_or("?"),
                    e["detail"].as_str().unwrap_or("")
                );
            }
            if entries.len() >= a.limit as usize {
                let last = entries.last().and_then(|e| e["id"].as_i64()).unwrap_or(0);
                println!("(the first {} entries; more with --after {last})", a.limit);
            }
        }
        AdminCommand::Verify(a) => {
            let (status, v) = a.api.call("GET", "/admin/v1/audit/verify", Body::None)?;
            expect(status, &v, &[200], "verifying the audit log")?;
            print(&v)?;
            if v["intact"] != json!(true) {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The stages an activation or a promotion removed from the chain or added to it.
pub fn print_stage_changes(v: &Value) {
    for (key, what) in [
        ("stages_removed", "removed from the chain"),
        ("stages_added", "added to the chain"),
    ] {
        let names: Vec<&str> = v[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !names.is_empty() {
            println!("  {what}: {}", names.join(", "));
        }
    }
}

/// Prints an activation's capability changes, one line per stage that changed.
pub fn print_changes(changes: &Value) {
    for c in changes.as_array().into_iter().flatten() {
        let (added, removed) = (&c["added"], &c["removed"]);
        let empty = |v: &Value| v.as_array().is_none_or(Vec::is_empty);
        if empty(added) && empty(removed) {
            continue;
        }
        println!(
            "  {}: capabilities added {added}, removed {removed}",
            c["plugin"].as_str().unwrap_or("?")
        );
    }
}

/// The groups of `GET /admin/v1/errors?group=true`, in the table `plexus errors list
/// --group` prints.
fn print_groups(v: &Value) -> anyhow::Result<()> {
    use crate::errors_cmd::{GroupRow, print_group_table};
    use anyhow::Context;
    // An engine older than `group=true` ignores it and lists the errors instead.
    let groups = v["groups"]
        .as_array()
        .context("the engine did not group the errors (it may be older than this CLI)")?;
    let ids: Vec<Vec<i64>> = groups
        .iter()
        .map(|g| {
            g["ids"]
                .as_array()
                .map(|ids| ids.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default()
        })
        .collect();
    let rows: Vec<GroupRow<'_>> = groups
        .iter()
        .zip(&ids)
        .map(|(g, ids)| GroupRow {
            count: g["count"].as_u64().unwrap_or(0),
            interface: g["interface"].as_str().unwrap_or("?"),
            kind: g["kind"].as_str().unwrap_or("?"),
            stage: g["stage"].as_str().unwrap_or("?"),
            age_s: g["age_s"].as_u64().unwrap_or(0),
            reason: g["reason"].as_str().unwrap_or(""),
            ids,
        })
        .collect();
    if rows.is_empty() {
        println!("no open errors");
    } else {
        print_group_table(&rows, "");
    }
    let total = v["groups_total"].as_u64().unwrap_or(0);
    if total > groups.len() as u64 {
        println!("\nthe largest {} of {total} groups shown", groups.len());
    }
    if v["all_grouped"].as_bool() == Some(false) {
        println!(
            "\ngrouped the oldest {} errors; more match (filter by --interface or --kind)",
            v["errors_grouped"]
        );
    }
    println!(
        "\n{} open; {} resolved ({} corrected by replay)",
        v["open"], v["resolved"], v["corrected"]
    );
    Ok(())
}
