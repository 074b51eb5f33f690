//! A drop folder feeding an interface. Each file matching the pattern is one message, or
//! a batch of them (`FHS`/`BHS` envelope, or several messages one after another), each
//! journaled and processed on its own; then the file moves to `processed/` beside it. A file is taken only
//! once it has not changed for one poll interval, so a producer still writing it is not
//! read half-way (producers should still write elsewhere and rename in).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use plexus_config::FileSource;
use plexus_journal::SourceKind;
use tokio_util::sync::CancellationToken;

use crate::engine::{Iface, Shared};
use crate::ingest;

/// Largest file taken as a message; larger ones are moved to `rejected/`.
const MAX_FILE: u64 = plexus_mllp::DEFAULT_MAX_FRAME as u64;

pub(crate) async fn run(
    shared: Arc<Shared>,
    iface: Arc<Iface>,
    source: FileSource,
    shutdown: CancellationToken,
) {
    tracing::info!(interface = %iface.name, dir = %source.dir.display(), pattern = %source.pattern, "file source watching");
    let mut progress = Progress::new();
    // Entries already reported as unreadable (a dangling link, say): said once each.
    let mut reported = std::collections::HashSet::new();
    let mut moved = std::collections::VecDeque::new();
    let watch = WATCH_MOVED.max(source.poll.saturating_mul(10));
    while !shutdown.is_cancelled() {
        if !moved.is_empty() {
            let (watched, interface) = (std::mem::take(&mut moved), iface.name.clone());
            moved = tokio::task::spawn_blocking(move || {
                let mut watched = watched;
                check_moved(&interface, &mut watched, watch);
                watched
            })
            .await
            .unwrap_or_default();
        }
        let dir = source.dir.clone();
        let pattern = source.pattern.clone();
        let settle = source.poll;
        let ready = tokio::task::spawn_blocking(move || ready_files(&dir, &pattern, settle)).await;
        match ready {
            Ok(Ok((files, unreadable))) => {
                for (entry, err) in &unreadable {
                    if reported.insert(entry.clone()) {
                        tracing::warn!(interface = %iface.name, file = %entry.display(), "a file matching the pattern cannot be read, so it is not taken ({err}): a link to nowhere?");
                    }
                }
                reported.retain(|entry| unreadable.iter().any(|(e, _)| e == entry));
                for path in files {
                    if shutdown.is_cancelled() {
                        break;
                    }
                    if let Some(file) =
                        take(&shared, &iface, &source.dir, path, &mut progress).await
                    {
                        if moved.len() >= WATCH_MOVED_MAX {
                            moved.pop_front();
                        }
                        moved.push_back(file);
                    }
                }
            }
            Ok(Err(err)) => {
                tracing::warn!(interface = %iface.name, dir = %source.dir.display(), "cannot list the drop folder: {err}")
            }
            Err(err) => tracing::error!("file source task failed: {err}"),
        }
        tokio::select! {
            () = tokio::time::sleep(source.poll) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// Files not yet moved away: how many of their messages are in the journal, for the file
/// as it was then (length and modification time), and how many times moving it failed.
/// The next try starts after the stored messages, so a journal that fails half-way
/// through a batch does not get its first messages twice, and a file whose move keeps
/// failing (a read-only folder, `processed` taken by a file) is not journaled and
/// delivered again at every poll: only the move is tried again. (Kept in memory: after a
/// restart such a file starts over, and what was stored already is flagged as a
/// duplicate by its MSH-10.)
type Progress = std::collections::HashMap<PathBuf, (Version, usize, u32)>;

/// A file's length and modification time, as read.
type Version = (u64, Option<SystemTime>);

/// What reading a drop file gave.
enum Read {
    /// Its bytes, and its version while they were read.
    Whole(Vec<u8>, Version),
    /// It changed while it was read.
    Changed,
    /// Over [`MAX_FILE`]: its version and first message header.
    TooLarge { version: Version, head: Vec<u8> },
}

/// What is kept of a file too large to take, as an MLLP source keeps the first segment of
/// an oversize frame: its first MSH segment (past a batch's FHS and BHS, so the error
/// carries an MSH-10), or else its first line; at most
/// [`plexus_mllp::codec::OVERSIZE_HEAD_LIMIT`] bytes.
fn head_of(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut start = Vec::with_capacity(plexus_mllp::codec::OVERSIZE_HEAD_LIMIT);
    std::fs::File::open(path)?
        .take(plexus_mllp::codec::OVERSIZE_HEAD_LIMIT as u64)
        .read_to_end(&mut start)?;
    let mut first = None;
    for line in start.split(|&b| b == b'\r' || b == b'\n') {
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        if line.starts_with(b"MSH") {
            return Ok(line.to_vec());
        }
        if first.is_none() && !line.is_empty() {
            first = Some(line.to_vec());
        }
    }
    Ok(first.unwrap_or_default())
}

/// A file moved to `processed/`, watched for a while in case its producer writes on.
struct Moved {
    to: PathBuf,
    version: Version,
    name: String,
    at: std::time::Instant,
}

/// How long a moved file is watched (at least; ten polls when that is longer).
const WATCH_MOVED: std::time::Duration = std::time::Duration::from_secs(10);
/// The most moved files watched at once; past it the oldest go first.
const WATCH_MOVED_MAX: usize = 10_000;

/// Says (ERROR) which recently moved files changed since they were read: a producer that
/// paused longer than the settle time and then wrote on, into the file now in
/// `processed/`, so what was journaled from it is cut short. Forgets files watched long
/// enough, and those that changed or went away.
fn check_moved(
    interface: &str,
    moved: &mut std::collections::VecDeque<Moved>,
    watch: std::time::Duration,
) {
    moved.retain(|m| {
        let now = version_of(&m.to).ok();
        if now.is_some_and(|now| now != m.version) {
            tracing::error!(
                interface,
                file = %m.name,
                read = m.version.0,
                now = now.map_or(0, |v| v.0),
                "the file was written to after it was read and moved to processed/: the message(s) journaled from it may be cut short; check them (the source names the file) and have the producer write elsewhere and rename the file in"
            );
            return false;
        }
        now.is_some() && m.at.elapsed() < watch
    });
}

/// Takes one ready file; `Some` when it was journaled and moved to `processed/`.
async fn take(
    shared: &Arc<Shared>,
    iface: &Arc<Iface>,
    dir: &Path,
    path: PathBuf,
    progress: &mut Progress,
) -> Option<Moved> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<Read> {
            let version = version_of(&path)?;
            if version.0 > MAX_FILE {
                return Ok(Read::TooLarge {
                    version,
                    head: head_of(&path)?,
                });
            }
            let bytes = crate::assets::read_bounded(&path)?;
            // Written to while it was read: a producer still at work.
            if bytes.len() as u64 != version.0 || version_of(&path)? != version {
                return Ok(Read::Changed);
            }
            Ok(Read::Whole(bytes, version))
        })
        .await
    };
    let (bytes, version) = match read {
        Ok(Ok(Read::Whole(bytes, version))) => (bytes, version),
        Ok(Ok(Read::Changed)) => {
            tracing::info!(interface = %iface.name, file = %name, "the file changed while it was read; taken once it stops changing");
            return None;
        }
        Ok(Ok(Read::TooLarge { version, head })) => {
            // In the error queue first, as over MLLP, so whoever works the queue sees it;
            // a journal that will not take it leaves the file for the next poll. Filed
            // once: a move that fails is tried again alone.
            let filed = progress
                .get(&path)
                .is_some_and(|&(seen, _, _)| seen == version);
            if !filed {
                let reason = format!(
                    "file {name} of {} bytes is larger than a drop file may be ({MAX_FILE} bytes): moved to rejected/ and only its first segment is kept; split it into smaller files and drop them in",
                    version.0
                );
                if let Err(err) =
                    ingest::not_kept(shared, iface, SourceKind::File, name.clone(), &head, reason)
                        .await
                {
                    tracing::error!(interface = %iface.name, file = %name, "file too large, and the journal would not take its error ({err}); tried again at the next poll");
                    return None;
                }
            }
            match move_to(dir, "rejected", &path, &name).await {
                Ok(_) => {
                    progress.remove(&path);
                    tracing::warn!(interface = %iface.name, file = %name, limit = MAX_FILE, "file too large; moved to rejected/ and filed in the error queue")
                }
                Err(err) => {
                    let failures = progress.get(&path).map_or(0, |p| p.2).saturating_add(1);
                    if failures.is_power_of_two() {
                        tracing::error!(interface = %iface.name, file = %name, limit = MAX_FILE, failures, "file too large and filed in the error queue, but cannot move it to rejected/ ({err}); only the move is tried again at each poll");
                    }
                    progress.insert(path, (version, 1, failures));
                }
            }
            return None;
        }
        Ok(Err(err)) => {
            tracing::warn!(interface = %iface.name, file = %name, "cannot read: {err}");
            return None;
        }
        Err(err) => {
            tracing::error!("file source task failed: {err}");
            return None;
        }
    };
    if let Some(shortfall) = batch_shortfall(&bytes) {
        // Each message is whole and is taken; what is missing never arrived.
        tracing::warn!(interface = %iface.name, file = %name, "{shortfall}: the file may have been cut off in transfer; its messages are taken, and the producer should send what is missing");
    }
    let messages = split(&bytes).unwrap_or_else(|err| {
        // Taken whole, to the error queue; the log says what is wrong with the batch.
        tracing::warn!(interface = %iface.name, file = %name, "the file is not a well-formed batch ({err}); it is journaled whole and lands in the error queue: fix it and drop it in again");
        vec![Bytes::copy_from_slice(&bytes)]
    });
    let total = messages.len();
    if total == 0 {
        tracing::info!(interface = %iface.name, file = %name, "batch file holds no message");
    }
    let (mut stored, move_failures) = match progress.get(&path) {
        Some(&(seen, stored, failures)) if seen == version => (stored.min(total), failures),
        _ => (0, 0),
    };
    for (n, message) in messages.into_iter().enumerate().skip(stored) {
        // The file name, and the message's place in a batch file.
        let peer = if total > 1 {
            format!("{name}#{}", n + 1)
        } else {
            name.clone()
        };
        match ingest::accept(shared, iface, SourceKind::File, Some(peer), message).await {
            // Journaled (processed, or held in the error queue).
            Ok(_) => stored += 1,
            Err(err) => {
                // Stop here: the rest waits for the next poll, in order.
                tracing::error!(interface = %iface.name, file = %name, message = n + 1, of = total, "not accepted, will retry: {err}");
                break;
            }
        }
    }
    if stored == total {
        match move_to(dir, "processed", &path, &name).await {
            Ok(moved) => {
                progress.remove(&path);
                return Some(Moved {
                    to: moved,
                    version,
                    name,
                    at: std::time::Instant::now(),
                });
            }
            Err(err) => {
                let failures = move_failures.saturating_add(1);
                // Said at the first failure and then less and less often; the file is
                // never taken again meanwhile.
                if failures.is_power_of_two() {
                    tracing::error!(
                        interface = %iface.name,
                        file = %name,
                        failures,
                        "journaled, but cannot move the file to processed/ ({err}); only the move is tried again at each poll"
                    );
                }
                progress.insert(path, (version, stored, failures));
            }
        }
    } else {
        progress.insert(path, (version, stored, 0));
        tracing::error!(interface = %iface.name, file = %name, stored, of = total, "file left in place; the rest is taken at the next poll");
    }
    None
}

/// The messages a file holds. A batch file (`FHS`/`BHS` envelope, or several messages one
/// after another) gives one message per `MSH`, envelope left out; a file holding one
/// message, or one that is not a well-formed batch, is taken whole (a bad one then lands
/// in the error queue as received). An envelope with no message gives nothing. `Err`
/// says why a file that starts as a batch (FHS or BHS) is not a well-formed one.
fn split(bytes: &[u8]) -> Result<Vec<Bytes>, plexus_hl7::BatchError> {
    match plexus_hl7::Batch::parse(bytes) {
        Ok(batch) if batch.len() == 1 && starts_with(bytes, b"MSH") && is_all(&batch, bytes) => {
            Ok(vec![Bytes::copy_from_slice(bytes)])
        }
        Ok(batch) => Ok(batch.raw_messages().map(Bytes::copy_from_slice).collect()),
        Err(err) if starts_with(bytes, b"FHS") || starts_with(bytes, b"BHS") => Err(err),
        Err(_) => Ok(vec![Bytes::copy_from_slice(bytes)]),
    }
}

/// What a well-formed batch file's trailers say is missing, if anything: a batch (BHS)
/// with no BTS, a file (FHS) with no FTS, or a count in BTS-1 or FTS-1 that does not
/// match what the file holds.
fn batch_shortfall(bytes: &[u8]) -> Option<String> {
    let batch = plexus_hl7::Batch::parse(bytes).ok()?;
    let flat = batch.flat();
    let field = |name: &str, nth: usize| {
        flat.get(format!("{name}[{nth}]-1"))
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    let (mut fhs, mut fts, mut bhs, mut bts) = (false, false, 0, 0);
    let (mut open, mut in_batch, mut batches) = (false, 0, 0);
    for seg in flat.segments() {
        match seg.name() {
            "FHS" => fhs = true,
            "FTS" => {
                fts = true;
                if let Some(said) = field("FTS", 1).filter(|&n| n != batches) {
                    return Some(format!(
                        "FTS-1 says {said} batch(es), the file holds {batches}"
                    ));
                }
            }
            "BHS" => {
                bhs += 1;
                (open, in_batch) = (true, 0);
            }
            "BTS" => {
                bts += 1;
                batches += 1;
                open = false;
                if let Some(said) = field("BTS", bts).filter(|&n| n != in_batch) {
                    return Some(format!(
                        "BTS-1 says batch {bts} holds {said} message(s), it holds {in_batch}"
                    ));
                }
            }
            "MSH" => in_batch += 1,
            _ => {}
        }
    }
    if open {
        return Some(format!("batch {bhs} (BHS) has no BTS trailer"));
    }
    if fhs && !fts {
        return Some("the file header (FHS) has no FTS trailer".to_owned());
    }
    None
}

/// Whether the batch's one message runs to the end of the file (but for blank lines):
/// not followed by BTS/FTS trailers, which would otherwise go downstream inside it.
fn is_all(batch: &plexus_hl7::Batch<'_>, bytes: &[u8]) -> bool {
    batch.raw_messages().next().is_some_and(|raw| {
        let end = raw.as_ptr().addr() - bytes.as_ptr().addr() + raw.len();
        bytes
            .get(end..)
            .is_some_and(|rest| rest.iter().all(u8::is_ascii_whitespace))
    })
}

/// Whether the first segment (after a byte-order mark or blank lines) is `name`.
fn starts_with(bytes: &[u8], name: &[u8]) -> bool {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    bytes
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .is_some_and(|at| bytes[at..].starts_with(name))
}

/// Moves `path` into `dir/sub/` under its own name, or `NAME.1`, `NAME.2`, ... when a file
/// of that name is there already (producers often reuse one name), then syncs both
/// folders so the move survives a power cut: otherwise the file could come back and be
/// taken again. Returns where the file went.
async fn move_to(dir: &Path, sub: &str, path: &Path, name: &str) -> std::io::Result<PathBuf> {
    let target_dir = dir.join(sub);
    let (from, dir, name, sub) = (
        path.to_path_buf(),
        dir.to_path_buf(),
        name.to_owned(),
        sub.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&target_dir)?;
        // The name as the file system has it (`name` is for messages: a name that is not
        // UTF-8 keeps its bytes).
        let own = from.file_name().map(ToOwned::to_owned).unwrap_or_default();
        let target = (0..10_000)
            .map(|n| match n {
                0 => target_dir.join(&own),
                n => {
                    let mut numbered = own.clone();
                    numbered.push(format!(".{n}"));
                    target_dir.join(numbered)
                }
            })
            .find(|t| !t.exists())
            .ok_or_else(|| {
                std::io::Error::other(format!("{sub}/ already holds 10,000 files named {name}"))
            })?;
        std::fs::rename(&from, &target)?;
        // Moved: a failed sync is worth a warning (after a power cut the file could come
        // back, to be flagged as a duplicate), not a retry of the move.
        for folder in [&target_dir, &dir] {
            if let Err(e) = std::fs::File::open(folder).and_then(|f| f.sync_all()) {
                tracing::warn!(folder = %folder.display(), "moved a drop file, but cannot sync the folder: {e}");
            }
        }
        Ok(target)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A file's length and modification time now.
fn version_of(path: &Path) -> std::io::Result<Version> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.len(), meta.modified().ok()))
}

/// Files in `dir` matching `pattern` (a link to a file counts), unchanged for `settle`,
/// oldest name first; and the entries that match but cannot be looked at (a link to
/// nowhere), with why.
#[allow(clippy::type_complexity)]
fn ready_files(
    dir: &Path,
    pattern: &str,
    settle: std::time::Duration,
) -> std::io::Result<(Vec<PathBuf>, Vec<(PathBuf, std::io::Error)>)> {
    let now = SystemTime::now();
    let (mut files, mut unreadable) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !glob_match(pattern, &name) {
            continue;
        }
        // Through a link, to what it points at.
        let meta = match std::fs::metadata(entry.path()) {
            Ok(meta) => meta,
            Err(err) => {
                unreadable.push((entry.path(), err));
                continue;
            }
        };
        if !meta.is_file() {
            continue;
        }
        let settled = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= settle);
        if settled {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok((files, unreadable))
}

/// `*` matches any run of characters, `?` one character; everything else is literal, but
/// for ASCII case (`*.hl7` takes `ADT.HL7`, as producers on Windows often name them).
fn glob_match(pattern: &str, name: &str) -> bool {
    let lower = |s: &str| -> Vec<char> { s.chars().map(|c| c.to_ascii_lowercase()).collect() };
    let (p, n) = (lower(pattern), lower(name));
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            pi += 1;
            mark = ni;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::{Moved, batch_shortfall, check_moved, glob_match, version_of};
    use std::collections::VecDeque;

    #[test]
    fn a_batch_whose_trailers_say_more_than_it_holds_is_called_short() {
        let msh = |id: &str| format!("MSH|^~\\&|A|B|C|D|2026||ADT^A08|{id}|P|2.5\rPID|1||X\r");
        let whole = format!(
            "FHS|^~\\&\rBHS|^~\\&\r{}{}BTS|2\rFTS|1\r",
            msh("1"),
            msh("2")
        );
        assert_eq!(batch_shortfall(whole.as_bytes()), None);
        let short = format!("BHS|^~\\&\r{}{}BTS|5\r", msh("1"), msh("2"));
        assert_eq!(
            batch_shortfall(short.as_bytes()).as_deref(),
            Some("BTS-1 says batch 1 holds 5 message(s), it holds 2")
        );
        let open = format!("BHS|^~\\&\r{}", msh("1"));
        assert_eq!(
            batch_shortfall(open.as_bytes()).as_deref(),
            Some("batch 1 (BHS) has no BTS trailer")
        );
        let no_fts = format!("FHS|^~\\&\rBHS|^~\\&\r{}BTS|1\r", msh("1"));
        assert_eq!(
            batch_shortfall(no_fts.as_bytes()).as_deref(),
            Some("the file header (FHS) has no FTS trailer")
        );
        // No envelope, no trailer to expect; an empty count says nothing.
        assert_eq!(
            batch_shortfall(format!("{}{}", msh("1"), msh("2")).as_bytes()),
            None
        );
        let blank = format!("BHS|^~\\&\r{}BTS|\r", msh("1"));
        assert_eq!(batch_shortfall(blank.as_bytes()), None);
    }

    #[test]
    fn a_moved_file_is_watched_until_it_changes_goes_or_has_been_watched_long_enough() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watched = |name: &str| {
            let to = dir.path().join(name);
            std::fs::write(&to, b"MSH|^~\\&|A\r").expect("write");
            Moved {
                version: version_of(&to).expect("version"),
                to,
                name: name.to_owned(),
                at: std::time::Instant::now(),
            }
        };
        let mut moved: VecDeque<Moved> = ["same", "grows", "goes"].map(watched).into();
        let watch = std::time::Duration::from_secs(60);
        check_moved("drop", &mut moved, watch);
        assert_eq!(moved.len(), 3, "nothing changed yet");
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("grows"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"PID|1||X\r"))
            .expect("append");
        std::fs::remove_file(dir.path().join("goes")).expect("remove");
        check_moved("drop", &mut moved, watch);
        let left: Vec<&str> = moved.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(left, ["same"], "the one that grew is reported and dropped");
        check_moved("drop", &mut moved, std::time::Duration::ZERO);
        assert!(moved.is_empty(), "watched long enough");
    }

    #[test]
    fn glob() {
        assert!(glob_match("*.hl7", "a.hl7"));
        assert!(glob_match("*.hl7", ".hl7"));
        assert!(!glob_match("*.hl7", "a.hl7.tmp"));
        assert!(glob_match("adt-??.*", "adt-01.txt"));
        assert!(!glob_match("adt-??.*", "adt-1.txt"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("*.hl7", "ADT.HL7"));
        assert!(glob_match("ADT-*", "adt-1.hl7"));
    }
}
