//! `plexus run`: the engine. Sources, plug-in chains, journal, delivery and error queue,
//! as the site config declares them (the bundled demo without `--config`).

use std::process::ExitCode;

use anyhow::Context;
use plexus_pipeline::Engine;
use tokio_util::sync::CancellationToken;

use crate::site::{BuiltinAssets, SiteArgs, label};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    site: SiteArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = args.site.load()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args, config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: RunArgs, config: plexus_config::Config) -> anyhow::Result<()> {
    let site = label(args.site.config.as_deref());
    let data_dir = config.engine.data_dir.clone();
    // Before the journal is opened: a second engine on the folder touches nothing.
    let mut lock = plexus_pipeline::lock_data_dir(&data_dir)
        .with_context(|| format!("cannot start {site}"))?;
    lock.check_journal(&plexus_pipeline::journal_path(&config))
        .with_context(|| format!("cannot start {site}"))?;
    let engine =
        Engine::build(config, &BuiltinAssets).with_context(|| format!("cannot start {site}"))?;
    lock.journal_opened()
        .with_context(|| format!("cannot start {site}"))?;
    let shutdown = CancellationToken::new();
    let running = engine
        .start_locked(lock, shutdown.clone())
        .await
        .with_context(|| format!("cannot start {site}"))?;
    say(format_args!(
        "plexus: running {site}; data in {}",
        data_dir.display()
    ));
    for (interface, addr) in &running.mllp {
        say(format_args!(
            "plexus: interface {interface}: MLLP on {addr}"
        ));
    }
    say(format_args!(
        "plexus: HTTP on {}://{} (/healthz, /readyz, /metrics, /admin/v1); Ctrl-C stops, SIGHUP reloads tables and tokens",
        if engine.config().http.tls.is_some() {
            "https"
        } else {
            "http"
        },
        running.http
    ));
    wait_for_signal(&engine, &args.site).await;
    tracing::info!("shutdown requested; finishing in-flight messages");
    shutdown.cancel();
    running.wait().await;
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM; on SIGHUP, re-reads the config and applies what can
/// change while running (see [`Engine::reload`]).
async fn wait_for_signal(engine: &Engine, site: &SiteArgs) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            // A reload (compiling the plug-ins the new config names) runs beside the
            // signals, so a stop is not kept waiting for it; one at a time.
            let mut reloading: Option<tokio::task::JoinHandle<()>> = None;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = term.recv() => return,
                    _ = hup.recv() => {
                        if reloading.as_ref().is_some_and(|r| !r.is_finished()) {
                            tracing::warn!("a reload is still running; this SIGHUP is ignored, send it again once it is done");
                            continue;
                        }
                        let (engine, site) = (engine.clone(), site.clone());
                        reloading = Some(tokio::spawn(async move { reload(&engine, &site).await }));
                    }
                }
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn reload(engine: &Engine, site: &SiteArgs) {
    let config = match site.load_for("nothing was changed") {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("config reload refused, still running the previous one: {e:#}");
            return;
        }
    };
    let engine = engine.clone();
    let done = tokio::task::spawn_blocking(move || {
        engine.reload(&config, &BuiltinAssets, "signal:SIGHUP")
    })
    .await;
    match done {
        Ok(Ok(report)) => {
            // `Engine::reload` logs it; this is for whoever watches the output.
            say(format_args!("plexus: config reloaded: {report}"));
        }
        Ok(Err(e)) => {
            tracing::error!("config reload refused, still running the previous one: {e}");
        }
        Err(e) => tracing::error!("config reload failed: {e}"),
    }
}

/// A line on standard output, best effort: whoever started the engine may have stopped
/// reading it (`println!` would panic on the closed pipe and take the engine down).
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}
