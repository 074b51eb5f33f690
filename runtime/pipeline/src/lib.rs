//! The durable pipeline: what `plexus run` runs.
//!
//! A message arrives on an interface's source (MLLP listener, HTTP POST or drop folder),
//! is parsed, runs through the interface's plug-in chain, and is committed to the journal
//! together with everything the chain produced (stages, edits, deliveries owed, or an
//! error-queue entry) in **one** transaction. Only then does the source acknowledge it.
//! Group commit in the journal lets many connections share each fsync.
//!
//! Delivery workers (one per interface and destination) drain the journal's queues in
//! arrival order, retrying with exponential backoff and jitter, and file permanent
//! failures in the error queue. After a crash, whatever was acknowledged is still owed
//! in the journal and is delivered on restart (at least once; MSH-10 stays the same).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use plexus_pipeline::{Engine, FsAssets};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = plexus_config::Config::load(std::path::Path::new("site.toml"))?;
//! let engine = Engine::build(config, &FsAssets)?;
//! let shutdown = CancellationToken::new();
//! let running = engine.start(shutdown.clone()).await?;
//! println!("MLLP on {:?}, HTTP on {}", running.mllp, running.http);
//! // ... later
//! shutdown.cancel();
//! running.wait().await;
//! # Ok(()) }
//! ```

mod admin;
mod assets;
mod chain;
mod chains;
mod deliver;
mod engine;
mod error;
pub mod error_groups;
mod feed;
mod file_source;
mod grants;
mod http;
mod ingest;
mod metrics;
mod mllp_source;
pub mod shadow;

pub use admin::ROUTES as ADMIN_ROUTES;
pub use assets::{Assets, FsAssets, MAX_ASSET_BYTES, read_bounded};
pub use chain::{
    Failure, Verdict, masked_delivery_error, masked_reason, masked_stage_detail, stage_runs,
};
pub use chains::{MIN_DIGEST_PREFIX, resolve_digest};
pub use engine::{
    ActiveChain, CapabilityChange, DataDirLock, Engine, ReloadReport, ReplayOutcome, Running,
    Verified, journal_path, lock_data_dir, order_key, plugin_store_path, verify,
};
pub use error::{ActivatedChain, BuildError, OpError};
pub use grants::{GrantChange, effective as effective_grants};
pub use http::HL7_MEDIA_TYPE;
/// sha256 of bytes, lowercase hex: plug-in digests and how admin tokens are stored.
pub use plexus_sandbox::inspect::sha256_hex;
