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
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_ASSET_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_ASSET_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_ASSET_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// How a source is shown in errors.
pub(crate) fn describe(source: &Source) -> String {
    match source {
        Source::Path(path) => path.display().to_string(),
        Source::Builtin(name) => format!("builtin:{name}"),
    }
}
