//! Crash-safe writes: a file is replaced through a synced temporary file and a rename; a
//! directory is built under a temporary name beside its target and renamed into place.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{parent_of, Error, Result};

/// Syncs a directory so that a rename inside it survives a crash (best effort: some file
/// systems refuse to sync directories).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Files and directories are readable by everyone, as `File::create` and `create_dir` make
/// them under the usual umask (temporary files would otherwise keep their private modes).
#[cfg(unix)]
fn public(mode: u32) -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(mode)
}

/// A temporary file beside `path` (its directory created if needed), to be renamed onto it.
fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = parent_of(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let prefix = format!(".{}.", name_of(path));
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    b.permissions(public(0o644));
    b.tempfile_in(dir).map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one
/// (creating the parent directory if needed).
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = temp_beside(path)?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    sync_dir(parent_of(path));
    Ok(())
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned())
}

/// A file written progressively (a stream of rows) that appears at its path only when
/// [`Writer::commit`] is called; dropped uncommitted, it leaves nothing behind.
#[derive(Debug)]
pub struct Writer {
    file: std::io::BufWriter<tempfile::NamedTempFile>,
    path: PathBuf,
}

impl Writer {
    pub fn create(path: &Path) -> Result<Self> {
        Ok(Writer {
            file: std::io::BufWriter::new(temp_beside(path)?),
            path: path.to_owned(),
        })
    }

    /// Syncs the file and renames it to its path.
    pub fn commit(self) -> Result<()> {
        let path = self.path;
        let tmp = self
            .file
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        tmp.as_file().sync_all().map_err(|e| Error::io(&path, e))?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        sync_dir(parent_of(&path));
        Ok(())
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The marker in the names of staging directories, so that leftovers of a killed process can
/// be recognised and removed ([`clean`]).
const STAGING: &str = ".partial-";

/// A directory being built beside its target; [`Staging::publish`] renames it into place.
/// Dropped unpublished (an error on the way), it is removed.
#[derive(Debug)]
pub struct Staging {
    dir: Option<tempfile::TempDir>,
    target: PathBuf,
}

/// What [`Staging::publish`] does when the target exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Remove it first (a checkpoint or cache rebuilt from scratch).
    Replace,
    /// Refuse: the caller asked for a new directory.
    Refuse,
}

impl Staging {
    /// Starts building `target` (in a new empty directory in the same parent).
    pub fn new(target: &Path) -> Result<Self> {
        let parent = parent_of(target);
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let prefix = format!(".{}{STAGING}", name_of(target));
        let mut b = tempfile::Builder::new();
        b.prefix(&prefix);
        #[cfg(unix)]
        b.permissions(public(0o755));
        let dir = b.tempdir_in(parent).map_err(|e| Error::io(parent, e))?;
        Ok(Staging {
            dir: Some(dir),
            target: target.to_owned(),
        })
    }

    /// Where to write the directory's contents.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("not yet published").path()
    }

    /// Renames the directory to its target.
    pub fn publish(mut self, existing: Existing) -> Result<PathBuf> {
        let target = self.target.clone();
        if target.exists() {
            match existing {
                Existing::Refuse => {
                    return Err(Error::io(
                        &target,
                        std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "already exists; choose a new directory",
                        ),
                    ))
                }
                Existing::Replace => {
                    std::fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?
                }
            }
        }
        let dir = self.dir.take().expect("published once").keep();
        if let Err(e) = std::fs::rename(&dir, &target) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Error::io(&target, e));
        }
        sync_dir(parent_of(&target));
        Ok(target)
    }
}

/// Copies the plain files of the directory `from` (an adapter: flat) into `to`, typically a
/// [`Staging`] directory, which makes the copy appear whole.
pub fn copy_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| Error::io(from, e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(from, e))?;
        if e.file_type().map_err(|x| Error::io(e.path(), x))?.is_file() {
            let dest = to.join(e.file_name());
            std::fs::copy(e.path(), &dest).map_err(|x| Error::io(&dest, x))?;
        }
    }
    Ok(())
}

/// Removes the staging directories a killed process left in `dir` (those of any target).
pub fn clean(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(STAGING) && e.path().is_dir() {
            std::fs::remove_dir_all(e.path()).map_err(|err| Error::io(e.path(), err))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_replaced_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/a.txt");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        // Readable by others, as an ordinary file would be (not the temporary file's 0600).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o044, 0o044, "{mode:o}");
        }
        // Nothing but the file itself is left beside it.
        assert_eq!(std::fs::read_dir(d.path().join("sub")).unwrap().count(), 1);
    }

    #[test]
    fn streamed_files_appear_on_commit_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("rows.jsonl");
        {
            let mut w = Writer::create(&p).unwrap();
            w.write_all(b"a\n").unwrap();
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        let mut w = Writer::create(&p).unwrap();
        w.write_all(b"b\n").unwrap();
        assert!(!p.exists());
        w.commit().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"b\n");
    }

    #[test]
    fn directories_appear_whole_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("model");
        // Dropped before publishing: nothing remains.
        {
            let s = Staging::new(&target).unwrap();
            std::fs::write(s.path().join("x"), b"1").unwrap();
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        let s = Staging::new(&target).unwrap();
        std::fs::write(s.path().join("x"), b"1").unwrap();
        s.publish(Existing::Refuse).unwrap();
        assert_eq!(std::fs::read(target.join("x")).unwrap(), b"1");
        let s = Staging::new(&target).unwrap();
        let err = s.publish(Existing::Refuse).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        let s = Staging::new(&target).unwrap();
        std::fs::write(s.path().join("y"), b"2").unwrap();
        s.publish(Existing::Replace).unwrap();
        assert!(target.join("y").is_file() && !target.join("x").exists());
        // A leftover of a killed process is recognised and removed.
        let kept = Staging::new(&target).unwrap().dir.take().unwrap().keep();
        assert!(kept.is_dir());
        clean(d.path()).unwrap();
        assert!(!kept.exists() && target.is_dir());
    }
}
