//! `plexus plugin inspect` and `plexus plugin test`: the reviewer's sheet and the golden
//! case runner.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use plexus_sandbox::cases::{self, CaseResult};
use plexus_sandbox::inspect::{self, Class};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The plug-in component (`.wasm`).
    #[arg(value_name = "FILE.wasm")]
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The plug-in component (`.wasm`).
    #[arg(value_name = "PLUGIN.wasm")]
    file: PathBuf,
    /// The folder of golden cases (`NAME.hl7` with `NAME.expected.hl7` or
    /// `NAME.expected.json`; tables in `tables/NAME.csv`).
    #[arg(long, value_name = "DIR")]
    cases: PathBuf,
    /// Record the expected files from what the plug-in does now (review the diff!).
    #[arg(long, env = "BLESS", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    bless: bool,
}

/// Largest component accepted (a mapping plug-in is a few MiB at most).
const MAX_COMPONENT: u64 = 64 * 1024 * 1024;

fn read_component(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_COMPONENT + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_COMPONENT,
        "{}: larger than {MAX_COMPONENT} bytes",
        path.display()
    );
    Ok(bytes)
}

pub fn inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let bytes = read_component(&args.file)?;
    let sheet =
        inspect::inspect(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let refused = sheet.refused_imports();
    let loadable = sheet.loadable();
    if args.json {
        let out = json!({
            "file": args.file.display().to_string(),
            "loadable": loadable,
            "refused_imports": refused,
            "sha256": sheet.sha256,
            "size": sheet.size,
            "world": if sheet.implements_contract() { Some("plexus:transform/hl7-transform@0.1.0") } else { None },
            "exports": sheet.exports,
            "capabilities": sheet.capabilities(),
            "imports": sheet.imports_json(),
            "producers": sheet.producers,
            "requests_instance_reuse": sheet.requests_reuse,
            "reads_tables": sheet.reads_tables,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(if loadable {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    println!("file          {}", args.file.display());
    println!("sha256        {}", sheet.sha256);
    println!("size          {} bytes", sheet.size);
    let world = if sheet.implements_contract() {
        "plexus:transform/hl7-transform@0.1.0 (exports transform)"
    } else {
        "none: exports no `transform`, so it cannot load"
    };
    println!("world         {world}");
    let caps = sheet.capabilities();
    println!(
        "capabilities  {}",
        if !refused.is_empty() {
            format!(
                "REFUSED: imports what no site can grant ({}); it cannot load",
                refused.join(", ")
            )
        } else if caps.is_empty() {
            "none (reads and edits the message only)".to_owned()
        } else {
            caps.join(", ")
        }
    );
    let reuse = if sheet.requests_reuse {
        "REQUESTED (state may carry between messages if the site grants \"reuse-instance\")"
    } else {
        "no (a fresh instance per message)"
    };
    println!("reuse         {reuse}");
    if caps.contains(&"tables") {
        let tables = if sheet.reads_tables.is_empty() {
            "not declared (plexus_sdk::reads_tables! names them)".to_owned()
        } else {
            sheet
                .reads_tables
                .iter()
                .map(|t| format!("{t} (grant \"tables:{t}\")"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("tables        {tables}");
    }
    println!("\nimports");
    for (name, class) in &sheet.imports {
        let note = match class {
            Class::Contract => "contract: always provided".to_owned(),
            Class::Capability { grant, .. } => format!("CAPABILITY: needs grant \"{grant}\""),
            Class::Inert { effect } => format!("inert: {effect}"),
            Class::Unavailable { why } => format!("REFUSED: {why}"),
        };
        println!("  {name:<44} {note}");
    }
    println!("\nexports");
    for name in &sheet.exports {
        println!("  {name}");
    }
    if !sheet.producers.is_empty() {
        println!("\nproducers");
        for p in &sheet.producers {
            println!("  {p}");
        }
    }
    Ok(if loadable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let bytes = read_component(&args.file)?;
    let name = args
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().replace('_', "-"))
        .unwrap_or_else(|| "plugin".to_owned());
    let results = cases::run_cases(
        &name,
        &bytes,
        &args.cases,
        plexus_sandbox::Limits::default(),
        args.bless,
    )
    .with_context(|| format!("running the cases in {}", args.cases.display()))?;
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    for r in &results {
        print_case(r);
    }
    let verb = if args.bless { "recorded" } else { "passed" };
    println!(
        "\n{} case{}: {} {verb}, {failed} failed ({})",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        results.len() - failed,
        name
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_case(r: &CaseResult) {
    let status = if r.failure.is_some() { "FAIL" } else { "ok  " };
    let fuel = r.fuel.map_or_else(|| "-".to_owned(), |f| f.to_string());
    println!(
        "{status} {:<40} fuel {:>10}  time {:>8.1} us  memory {:>6} KiB",
        r.name,
        fuel,
        r.time.as_secs_f64() * 1e6,
        r.memory / 1024
    );
    if let Some(why) = &r.failure {
        for line in why.lines() {
            println!("       {line}");
        }
    }
}
