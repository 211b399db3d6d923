//! File plumbing: streaming copies, a private work directory beside the outputs, and moving
//! finished outputs into place so that they appear whole or not at all.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::checksums::BUFFER_SIZE;

/// Copies through one large buffer (std's copy uses 8 KiB, too small for 400 MB binaries).
pub fn copy_stream(reader: &mut impl Read, writer: &mut impl Write) -> io::Result<u64> {
    let mut buffer = vec![0u8; BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buffer[..n])?;
        total += n as u64;
    }
}

/// Temporary files and directories we create are named `.alloy-sysext-tmp-<pid>-...`, so that a
/// later run can tell the leftovers of a killed build from the work of one still running.
const TEMP_PREFIX: &str = ".alloy-sysext-tmp-";

/// The name prefix for this process's temporary files (for `tempfile::Builder::prefix`).
pub fn temp_prefix() -> String {
    format!("{TEMP_PREFIX}{}-", std::process::id())
}

/// Removes temporary files and directories in `dir` left by processes that no longer run.
pub fn remove_abandoned(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

/// A scratch directory inside the output directory (so finished files can be renamed into
/// place atomically), removed when dropped.
pub struct WorkDir {
    dir: tempfile::TempDir,
}

impl WorkDir {
    pub fn new(out_dir: &Path) -> anyhow::Result<WorkDir> {
        remove_abandoned(out_dir);
        let dir = tempfile::Builder::new()
            .prefix(&temp_prefix())
            .tempdir_in(out_dir)
            .with_context(|| format!("creating a work directory in {}", out_dir.display()))?;
        Ok(WorkDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Makes `path`'s content durable before it is renamed into place.
pub fn sync_file(path: &Path) -> anyhow::Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", path.display()))
}

/// Renames finished files from the work directory into `out_dir`, in order, then syncs the
/// directory. Each rename is atomic: a reader sees the old file or the new one, never a part.
/// Give the checksum last, so it never appears before the file it describes.
pub fn install(out_dir: &Path, files: &[(PathBuf, &str)]) -> anyhow::Result<Vec<PathBuf>> {
    let mut installed = Vec::new();
    for (source, name) in files {
        sync_file(source)?;
        let dest = out_dir.join(name);
        fs::rename(source, &dest)
            .with_context(|| format!("moving {} to {}", source.display(), dest.display()))?;
        installed.push(dest);
    }
    File::open(out_dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", out_dir.display()))?;
    Ok(installed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_dead_builds_are_removed_and_live_ones_kept() {
        let out = tempfile::tempdir().unwrap();
        let dead = out
            .path()
            .join(format!("{TEMP_PREFIX}{}-abc", u32::MAX - 1));
        let dead_file = out
            .path()
            .join(format!("{TEMP_PREFIX}{}-x.zip.partial", u32::MAX - 1));
        fs::write(&dead_file, "half").unwrap();
        let live = out.path().join(format!("{TEMP_PREFIX}1-abc")); // pid 1 always runs
        let unrelated = out.path().join("alloy-1.10.2-amd64.raw");
        fs::create_dir(&dead).unwrap();
        fs::create_dir(&live).unwrap();
        fs::write(&unrelated, "image").unwrap();
        let work = WorkDir::new(out.path()).unwrap();
        assert!(!dead.exists());
        assert!(!dead_file.exists());
        assert!(live.exists());
        assert!(unrelated.exists());
        let path = work.path().to_path_buf();
        assert!(path.is_dir());
        drop(work);
        assert!(!path.exists());
    }

    #[test]
    fn install_moves_files_in_order() {
        let out = tempfile::tempdir().unwrap();
        let work = WorkDir::new(out.path()).unwrap();
        let a = work.path().join("a");
        let b = work.path().join("b");
        fs::write(&a, "A").unwrap();
        fs::write(&b, "B").unwrap();
        let installed = install(out.path(), &[(a, "x.raw"), (b, "x.raw.sha256")]).unwrap();
        assert_eq!(
            installed,
            [out.path().join("x.raw"), out.path().join("x.raw.sha256")]
        );
        assert_eq!(fs::read_to_string(&installed[1]).unwrap(), "B");
    }

    #[test]
    fn copy_stream_copies_everything() {
        let data: Vec<u8> = (0..3 * BUFFER_SIZE + 17).map(|i| i as u8).collect();
        let mut out = Vec::new();
        assert_eq!(
            copy_stream(&mut &data[..], &mut out).unwrap(),
            data.len() as u64
        );
        assert_eq!(out, data);
    }
}
