//! `plexus`: the Plexus integration engine's command line.
//!
//! Errors end here as `anyhow` chains; the exit code says what kind of failure it was
//! (1: nothing found, 2: error), so scripts can tell them apart.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: every message allocates in many small
/// pieces (parse index, journal rows, a wasmtime store per plug-in run), and with glibc's
/// malloc the fresh-instance plug-in run took about 6% more instructions (callgrind,
/// `runtime/sandbox/examples/phases.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin_cmd;
mod api;
mod audit_cmd;
mod bench_cmd;
mod check_cmd;
mod errors_cmd;
mod hl7_cmd;
mod init_cmd;
mod plugin_cmd;
mod review_cmd;
mod run;
mod send_cmd;
mod shadow_cmd;
mod site;
mod token_cmd;

/// Plexus moves HL7 v2 between clinic systems, with per-site mappings as sandboxed plug-ins.
#[derive(Debug, Parser)]
#[command(name = "plexus", version, propagate_version = true)]
struct Cli {
    /// Log filter (e.g. `info`, `plexus=debug`); `RUST_LOG` also works. Default: `info`
    /// for `run` and `bench`, `warn` for the other commands.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine on a site config (the bundled demo without --config): sources,
    /// plug-in chains, journal, delivery with retries, error queue. Ctrl-C or SIGTERM
    /// stops it after in-flight messages are answered.
    #[command(after_help = "Examples:\n  \
        plexus run                      # the demo: MLLP 127.0.0.1:2575, HTTP 127.0.0.1:8480\n  \
        plexus run --config site.toml")]
    Run(run::RunArgs),
    /// Validate a site config (TOML) without running it: every problem with file:line:col
    /// and the fix, then load the tables and plug-ins it names as `run` would. Exit
    /// status 1 when there are problems.
    Check(check_cmd::CheckArgs),
    /// Write the bundled demo site out as a site of your own: its config, crosswalk table
    /// and plug-ins (pinned by sha256), ready to edit, check and run.
    #[command(after_help = "Example:\n  \
        plexus init my-site && plexus run --config my-site/site.toml")]
    Init(init_cmd::InitArgs),
    /// Send message files over MLLP and print each ACK (code, MSA-2, ERR reason).
    /// Exit status 1 when any was not accepted.
    #[command(after_help = "Example:\n  \
        plexus send ../shared/corpus/hl7v2/SIU-S12-01.hl7 --to 127.0.0.1:2575")]
    Send(send_cmd::SendArgs),
    /// Work the error queue: list, show, replay after a fix, resolve with a note.
    #[command(subcommand)]
    Errors(ErrorsCommand),
    /// The audit log of operator actions: list it, or verify its hash chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The security reviewer's sheet for a site's plug-in: imports, capabilities
    /// requested vs granted, limits, and what a candidate version would change. Exit
    /// status 1 when the configured version, or the candidate, would not load with the
    /// current grants (so it can gate a release).
    #[command(after_help = "Examples:\n  \
        plexus review visit-status-map\n  \
        plexus review visit-status-map new/visit_status_map.wasm --config site.toml\n  \
        plexus review visit-status-map@5467663bbd62   # an uploaded version (8+ digits of its sha256)")]
    Review(review_cmd::ReviewArgs),
    /// Admin API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The admin API of a running engine (--url, token in PLEXUS_TOKEN): interfaces,
    /// plug-in versions, upload, activate, roll back, trial, errors, audit log.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  \
        export PLEXUS_TOKEN=...   # from `plexus token new`\n  \
        plexus admin interfaces\n  \
        plexus admin upload target/wasm32-wasip2/guest/visit_status_map.wasm\n  \
        plexus admin activate scheduling demographics-normalize@f2c9111b78d1 visit-status-map@5467663bbd62\n\
        (activate names the whole chain, every stage in order: a stage left out is removed;\n\
        a version is its sha256 or its first 8+ digits, as `plexus admin plugins` lists them)")]
    Admin(admin_cmd::AdminCommand),
    /// Shadow runs: a candidate chain beside an interface's active one on live traffic,
    /// journaled, never delivered; report what it changes, then promote or stop it.
    #[command(subcommand)]
    Shadow(shadow_cmd::ShadowCommand),
    /// Look at HL7 v2 messages.
    #[command(subcommand)]
    Hl7(Hl7Command),
    /// Review and test mapping plug-ins (WebAssembly components).
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Measure end-to-end throughput and latency: an MLLP sink, the engine (one-field
    /// mapping, journal on) and K connections sending synthetic messages, all in this
    /// process. Exit status 1 if any message was not accepted (AA), mapped and delivered.
    #[command(after_help = "Examples:\n  \
        plexus bench                                # 50000 messages over 8 connections\n  \
        plexus bench --messages 200000 --connections 64 --json\n  \
        plexus bench --target 127.0.0.1:2575        # only load an MLLP server that ACKs")]
    Bench(bench_cmd::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// The security reviewer's sheet: sha256, world, imports classified as capabilities,
    /// exports, size, producers. Exit status 1 when the component could never load.
    Inspect(plugin_cmd::InspectArgs),
    /// Run a plug-in's golden cases on the production engine settings, with fuel, time
    /// and memory per case and a diff on failure. Exit status 1 when any case fails.
    #[command(after_help = "Example:\n  \
        plexus plugin test target/wasm32-wasip2/guest/visit_status_map.wasm --cases plugins/visit-status-map/cases")]
    Test(plugin_cmd::TestArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a token: prints it once, and the `[admin] tokens` line holding its sha256.
    #[command(after_help = "Example:\n  plexus token new ops-desk --role operator")]
    New(token_cmd::NewArgs),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Entries oldest first: id, time, actor, action, subject, detail.
    List(audit_cmd::ListArgs),
    /// Recompute the hash chain; exit status 1 and the first broken entry if it fails.
    Verify(audit_cmd::VerifyArgs),
}

#[derive(Debug, Subcommand)]
enum ErrorsCommand {
    /// Open errors, oldest first: id, interface, kind, stage, age, reason.
    List(errors_cmd::ListArgs),
    /// Everything about one message: errors, stages and edits, deliveries. Message
    /// content only with --unmasked.
    Show(errors_cmd::ShowArgs),
    /// Run messages through their interface's current chain again; on success they are
    /// queued for delivery and their error is resolved. Exit status 1 if any failed again.
    Replay(errors_cmd::ReplayArgs),
    /// Close an error without replaying it; the note says what was done.
    Resolve(errors_cmd::ResolveArgs),
}

#[derive(Debug, Subcommand)]
enum Hl7Command {
    /// Parse a message file and print its tree as JSON (values decoded: escapes resolved,
    /// converted to UTF-8), or one value with --path.
    ///
    /// Exit status: 0 printed, 1 the path holds no value, 2 the message could not be
    /// parsed or read.
    #[command(after_help = "Examples:\n  \
        plexus hl7 parse adt.hl7\n  \
        plexus hl7 parse adt.hl7 --path PID-5-1\n  \
        plexus hl7 parse adt.hl7 --path 'PID-3[2]-4'\n  \
        cat adt.hl7 | plexus hl7 parse -")]
    Parse(hl7_cmd::ParseArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The engine and the bench report progress at info; a one-shot command's output is
    // its answer, so it logs only warnings unless asked.
    // Only for commands that read and print: a vectored socket write (`writev`) raises
    // SIGPIPE too, so a client must keep it ignored to report a closed connection, and a
    // command that changes the journal must never stop half way for a closed stderr.
    if matches!(
        cli.command,
        Command::Hl7(_)
            | Command::Plugin(_)
            | Command::Check(_)
            | Command::Review(_)
            | Command::Audit(_)
            | Command::Errors(ErrorsCommand::List(_) | ErrorsCommand::Show(_))
    ) {
        default_sigpipe();
    }
    if matches!(cli.command, Command::Run(_) | Command::Bench(_)) {
        no_transparent_huge_pages();
    }
    let default_level = match cli.command {
        Command::Run(_) | Command::Bench(_) => "info",
        _ => "warn",
    };
    init_tracing(cli.log.as_deref(), default_level);
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Check(args) => check_cmd::check(&args),
        Command::Init(args) => init_cmd::init(&args),
        Command::Send(args) => send_cmd::send(&args),
        Command::Review(args) => review_cmd::review(&args),
        Command::Audit(AuditCommand::List(args)) => audit_cmd::list(&args),
        Command::Token(TokenCommand::New(args)) => token_cmd::new(&args),
        Command::Audit(AuditCommand::Verify(args)) => audit_cmd::verify(&args),
        Command::Errors(ErrorsCommand::List(args)) => errors_cmd::list(&args),
        Command::Errors(ErrorsCommand::Show(args)) => errors_cmd::show(&args),
        Command::Errors(ErrorsCommand::Replay(args)) => errors_cmd::replay(&args),
        Command::Errors(ErrorsCommand::Resolve(args)) => errors_cmd::resolve(&args),
        Command::Hl7(Hl7Command::Parse(args)) => hl7_cmd::parse(&args),
        Command::Plugin(PluginCommand::Inspect(args)) => plugin_cmd::inspect(&args),
        Command::Plugin(PluginCommand::Test(args)) => plugin_cmd::test(&args),
        Command::Bench(args) => bench_cmd::bench(&args),
        Command::Admin(command) => admin_cmd::run(&command),
        Command::Shadow(command) => shadow_cmd::run(&command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// A command that only reads and prints (`plexus errors list | head`) ends quietly when
/// its output pipe closes early, as other Unix tools do, instead of panicking in
/// `println!`. Rust starts programs with SIGPIPE ignored; every other command keeps it
/// so: those that open sockets (a vectored socket write raises it too) and those that
/// change the journal.
#[cfg(unix)]
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: `signal` with `SIG_DFL` only restores the default disposition of one
    // signal; it runs before this process starts any thread or installs any handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_sigpipe() {}

/// The engine runs without transparent huge pages. mimalloc advises them on its arenas,
/// and memory it has handed back to the kernel and then reuses faults in again as a
/// whole 2 MiB page the kernel must zero first. Under load that happened in bursts: in
/// a third of `plexus bench` runs the kernel's page clearing took 30% of the CPU and
/// throughput halved (8-9k msg/s against 17-21k). The engine's heap is a few MiB, so
/// huge pages save it little. Only faults from here on are affected; nothing is unmapped.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE sets a flag on this process's memory map that the kernel
    // reads at page-fault time; it touches no memory of ours. Failure (an old kernel)
    // leaves things as they were, which is harmless.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(not(target_os = "linux"))]
fn no_transparent_huge_pages() {}

fn init_tracing(filter: Option<&str>, default_level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = filter
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, not in a log file or a journal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Where a command reads its input from: a path, or `-` for stdin.
fn input_label(path: &std::path::Path) -> String {
    if path == std::path::Path::new("-") {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Largest input file the commands read (a message is rarely over a few MiB).
const MAX_INPUT: u64 = 64 * 1024 * 1024;

/// `--charset CODE`: an HL7 table 0211 code (or a common alias such as `latin1`).
fn parse_charset(code: &str) -> Result<plexus_hl7::Charset, String> {
    plexus_hl7::Charset::from_code(code).ok_or_else(|| {
        format!(
            "`{code}` is not a character set Plexus reads (ASCII, 8859/1, 8859/15, UNICODE UTF-8)"
        )
    })
}

fn read_input(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let label = input_label(path);
    let mut bytes = Vec::new();
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{label}: {e}"))?)
    };
    reader
        .take(MAX_INPUT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_INPUT,
        "{label}: larger than {MAX_INPUT} bytes"
    );
    Ok(bytes)
}
