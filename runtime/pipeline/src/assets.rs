//! Where the files a config names come from.

use std::io::Read;

use plexus_config::Source;

/// Largest table or plug-in file read (a mapping plug-in is a few hundred KiB).
pub const MAX_ASSET_BYTES: u64 = 64 << 20;

/// Reads the files a config names. [`FsAssets`] reads paths; the `plexus` binary adds its
/// built-in files (`builtin:NAME`) on top.
pub trait Assets {
    /// The bytes of `source`.
    fn read(&self, source: &Source) -> std::io::Result<Vec<u8>>;
}

/// Reads `Source::Path` files (bounded by [`MAX_ASSET_BYTES`]); refuses `builtin:`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsAssets;

impl Assets for FsAssets {
    fn read(&self, source: &Source) -> std::io::Result<Vec<u8>> {
        match source {
            Source::Path(path) => read_bounded(path),
            Source::Builtin(name) => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("`builtin:{name}` is only available to the plexus binary's demo"),
            )),
        }
    }
}

/// Reads a file, refusing one larger than [`MAX_ASSET_BYTES`].
pub fn read_bounded(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    read_at_most(path, MAX_ASSET_BYTES)
}

/// Reads a file, refusing one larger than `limit` bytes (without reading past it).
fn read_at_most(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// The most a state file the engine keeps in its data folder (`grants.json`,
/// `chains.json`) may hold: a few lists, far below this.
pub(crate) const MAX_STATE_FILE: u64 = 1 << 20;

/// Reads and parses a JSON state file from the data folder (`T::default()` when it does
/// not exist). The error names the file; `what` says what it should be.
pub(crate) fn read_state_file<T: serde::de::DeserializeOwned + Default>(
    path: &std::path::Path,
    what: &str,
) -> Result<T, String> {
    let bytes = match read_at_most(path, MAX_STATE_FILE) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: not {what} ({e})", path.display()))
}

/// How a source is shown in errors.
pub(crate) fn describe(source: &Source) -> String {
    match source {
        Source::Path(path) => path.display().to_string(),
        Source::Builtin(name) => format!("builtin:{name}"),
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one, never a
/// part: first to `tmp` beside it, synced, then renamed over `path`, and the folder synced
/// so that the rename itself is durable. Creates the folder if need be. An error means
/// `path` was not replaced.
pub(crate) fn write_durably(
    path: &std::path::Path,
    tmp: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = std::fs::File::create(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(tmp, path)?;
    // The new file is in place from here on: a folder that will not sync is reported, not
    // returned as a failure (the caller would say nothing changed when it had).
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(
            file = %path.display(),
            error = %e,
            "written, but its folder could not be synced: a power cut now could lose the change"
        );
    }
    Ok(())
}
