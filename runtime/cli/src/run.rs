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
    let engine =
        Engine::build(config, &BuiltinAssets).with_context(|| format!("cannot start {site}"))?;
    let shutdown = CancellationToken::new();
    let running = engine
        .start(shutdown.clone())
        .await
        .with_context(|| format!("cannot start {site}"))?;
    println!("plexus: running {site}; data in {}", data_dir.display());
    for (interface, addr) in &running.mllp {
        println!("plexus: interface {interface}: MLLP on {addr}");
    }
    println!(
        "plexus: HTTP on http://{} (/healthz, /readyz, /metrics); Ctrl-C stops",
        running.http
    );
    wait_for_signal().await;
    tracing::info!("shutdown requested; finishing in-flight messages");
    shutdown.cancel();
    running.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
