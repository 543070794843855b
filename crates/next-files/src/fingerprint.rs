//! A cheap identity of files on disk: their total size and latest modification time, enough to
//! notice that a checkpoint read earlier was rewritten since.

use std::path::Path;

/// Total bytes and latest modification time (ns since the epoch) of `paths`; files that cannot
/// be read count as empty.
pub fn of<'a>(paths: impl IntoIterator<Item = &'a Path>) -> (u64, u128) {
    let mut bytes = 0;
    let mut mtime = 0;
    for p in paths {
        if let Ok(meta) = std::fs::metadata(p) {
            bytes += meta.len();
            let t = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            mtime = mtime.max(t);
        }
    }
    (bytes, mtime)
}
