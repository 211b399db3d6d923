//! File plumbing: streaming copies, a private work directory beside the outputs, and moving
//! finished outputs into place so that they appear whole or not at all.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::checksums::BUFFER_SIZE;
use super::safedir::SafeDir;

/// Copies through one large buffer (std's copy uses 8 KiB, too small for 400 MB binaries).
pub fn copy_stream(reader: &mut impl Read, writer: &mut impl Write) -> io::Result<u64> {
    let mut buffer = vec![0u8; BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        super::interrupt::check_io()?;
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

/// Temporary files and directories we create are named `.alloy-sysext-tmp-...`, and each is
/// owned through an exclusive `flock` held while it is in use: a later run removes those whose
/// lock nobody holds (left by a killed build) and keeps the others, even when they belong to a
/// build in another PID namespace, where a pid says nothing.
const TEMP_PREFIX: &str = ".alloy-sysext-tmp-";

/// An exclusive `flock` on an open file or directory, released when the file is closed.
fn flock(file: &File, wait: bool) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let operation = libc::LOCK_EX | if wait { 0 } else { libc::LOCK_NB };
    loop {
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::Interrupted => continue,
            e if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            e => return Err(e),
        }
    }
}

/// Opens a file or directory for locking only: no link followed, a FIFO never waited on.
fn open_for_lock(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Holds `dir`'s lock while temporary entries in it are swept and a new one is created and
/// locked, so that no sweep can take a new entry for abandoned between the two.
fn lock_dir(dir: &Path) -> anyhow::Result<File> {
    let file = open_for_lock(dir).with_context(|| format!("opening {}", dir.display()))?;
    flock(&file, true).with_context(|| format!("locking {}", dir.display()))?;
    Ok(file)
}

/// Removes temporary files and directories in `dir` whose lock nobody holds. Call with `dir`
/// locked ([`lock_dir`]).
fn remove_abandoned(dir: &Path) {
    sweep_abandoned(dir, TEMP_PREFIX, None, super::interrupt::remove_path);
}

/// Hands each entry of `dir` named `prefix...` whose lock nobody holds to `remove`, with its
/// lock held by us meanwhile, so no one can take it up. With `min_age`, only entries unchanged
/// for that long: for directories created before they are locked, where `dir` is not locked
/// around the two (a shared TMPDIR).
pub fn sweep_abandoned(
    dir: &Path,
    prefix: &str,
    min_age: Option<std::time::Duration>,
    mut remove: impl FnMut(&Path),
) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        if let Some(min_age) = min_age {
            let age = path
                .symlink_metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok());
            if age.is_none_or(|age| age < min_age) {
                continue;
            }
        }
        match open_for_lock(&path) {
            Ok(file) => {
                if flock(&file, false).unwrap_or(false) {
                    remove(&path);
                }
            }
            // A link in our name: not a work dir of anyone's.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => remove(&path),
            // Not ours to judge (another user's, say): kept.
            Err(_) => {}
        }
    }
}

/// Locks a directory we just created, for as long as the returned file is open.
pub fn lock_new_dir(dir: &Path) -> anyhow::Result<File> {
    open_for_lock(dir)
        .and_then(|file| flock(&file, false).map(|_| file))
        .with_context(|| format!("locking {}", dir.display()))
}

/// A scratch directory inside the output directory (so finished files can be renamed into
/// place atomically), locked while it lives, removed when dropped or on Ctrl-C/SIGTERM.
pub struct WorkDir {
    // Fields drop in order: the directory is removed before the interrupt clean-up is
    // forgotten, so a signal in between cannot leave it behind.
    dir: tempfile::TempDir,
    _on_interrupt: super::interrupt::OnInterrupt,
    _lock: File,
}

impl WorkDir {
    pub fn new(out_dir: &Path) -> anyhow::Result<WorkDir> {
        let _dir_lock = lock_dir(out_dir)?;
        remove_abandoned(out_dir);
        let dir = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir_in(out_dir)
            .with_context(|| format!("creating a work directory in {}", out_dir.display()))?;
        let on_interrupt = super::interrupt::remove_on_interrupt(dir.path());
        let lock = lock_new_dir(dir.path())?;
        Ok(WorkDir {
            dir,
            _on_interrupt: on_interrupt,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A file being written beside its final name in a [`SafeDir`] (a download in the cache),
/// locked while it lives like a [`WorkDir`], removed when dropped or on Ctrl-C/SIGTERM unless
/// persisted.
pub struct PartialFile {
    // Its descriptor holds the lock; the name is removed before the clean-up is forgotten.
    file: File,
    dir: SafeDir,
    name: String,
    persisted: bool,
    _on_interrupt: super::interrupt::OnInterrupt,
}

/// A name no other run picks: our pid, the time and a counter.
fn unique_name(suffix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{TEMP_PREFIX}{}-{nanos:x}-{count}{suffix}",
        std::process::id()
    )
}

impl PartialFile {
    /// A new empty file in `dir`, its name ending in `suffix`. Leftovers of killed runs (whose
    /// lock nobody holds) are removed first, with the directory locked meanwhile.
    pub fn new(dir: &SafeDir, suffix: &str) -> anyhow::Result<PartialFile> {
        let shown = dir.path().display();
        let dir_lock = dir.lock_handle()?;
        flock(&dir_lock, true).with_context(|| format!("locking {shown}"))?;
        for leftover in dir.names().unwrap_or_default() {
            let Some(name) = leftover.to_str().filter(|n| n.starts_with(TEMP_PREFIX)) else {
                continue;
            };
            if let Ok(super::safedir::Found::File(file)) = dir.open_file(name) {
                if flock(&file, false).unwrap_or(false) {
                    let _ = dir.remove(name);
                }
            }
        }
        let name = unique_name(suffix);
        let file = dir
            .create_new(&name)
            .with_context(|| format!("creating a file in {shown}"))?;
        flock(&file, false).with_context(|| format!("locking {shown}/{name}"))?;
        let on_interrupt = {
            let (dir, name) = (dir.try_clone()?, name.clone());
            super::interrupt::on_interrupt(move || {
                let _ = dir.remove(&name);
            })
        };
        Ok(PartialFile {
            file,
            dir: dir.try_clone()?,
            name,
            persisted: false,
            _on_interrupt: on_interrupt,
        })
    }

    /// Where it is, for messages.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }

    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// Renames the file to `dest` in its directory, unless a signal arrived (then it is
    /// removed, as on any other failure).
    pub fn persist(mut self, dest: &str) -> anyhow::Result<()> {
        super::interrupt::while_installing(|| Ok(self.dir.rename(&self.name, dest)?))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = self.dir.remove(&self.name);
        }
    }
}

/// Reads a small file we wrote earlier (a checksum beside an image) as text: `None` when it
/// is missing, an error when it is not a regular file of ours (a FIFO would hang us, a link to
/// /dev/zero fill our memory) or larger than `limit` bytes.
pub fn read_own_small_file(path: &Path, limit: u64) -> anyhow::Result<Option<String>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            anyhow::bail!("{} is a symbolic link; not read", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let ours = meta.uid() == unsafe { libc::geteuid() };
    if !meta.is_file() || !ours || meta.len() > limit {
        anyhow::bail!(
            "{} is not a small regular file of ours ({} bytes, uid {}); not read",
            path.display(),
            meta.len(),
            meta.uid()
        );
    }
    let mut text = String::new();
    file.take(limit)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(text))
}

/// Makes `path`'s content durable before it is renamed into place.
pub fn sync_file(path: &Path) -> anyhow::Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", path.display()))
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// One step of [`install_with_checksum`].
#[derive(Debug, PartialEq)]
enum InstallStep {
    /// Removes the named file from the output directory if it is there.
    Remove(String),
    /// Renames a finished file into the output directory.
    Rename(PathBuf, String),
    SyncDir,
}

/// The order that keeps a file and its checksum from ever disagreeing: the old checksum goes
/// first, durably, then the file, then its new checksum. Whenever the process dies, the
/// directory holds the old pair, the old or new file without a checksum (which `sha256sum -c`,
/// `publish` and the next `build` see as incomplete), or the new pair; never a mismatched pair.
fn install_steps(file: (PathBuf, &str), checksum: (PathBuf, &str)) -> Vec<InstallStep> {
    vec![
        InstallStep::Remove(checksum.1.to_string()),
        InstallStep::SyncDir,
        InstallStep::Rename(file.0, file.1.to_string()),
        InstallStep::Rename(checksum.0, checksum.1.to_string()),
        InstallStep::SyncDir,
    ]
}

fn run_install_steps(out_dir: &Path, steps: Vec<InstallStep>) -> anyhow::Result<()> {
    for step in steps {
        match step {
            InstallStep::Remove(name) => {
                let path = out_dir.join(name);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {}", path.display()))
                    }
                    _ => {}
                }
            }
            InstallStep::Rename(source, name) => {
                let dest = out_dir.join(name);
                fs::rename(&source, &dest).with_context(|| {
                    format!("moving {} to {}", source.display(), dest.display())
                })?;
            }
            InstallStep::SyncDir => sync_dir(out_dir)?,
        }
    }
    Ok(())
}

/// Moves a finished file and its checksum file from the work directory into `out_dir`, so
/// that the two never disagree whenever the process dies (see [`install_steps`]), nor when
/// another build installs into the same directory (its lock is held across all the steps).
/// Nothing is installed after a signal. Returns the file's new path.
pub fn install_with_checksum(
    out_dir: &Path,
    file: (PathBuf, &str),
    checksum: (PathBuf, &str),
) -> anyhow::Result<PathBuf> {
    sync_file(&file.0)?;
    sync_file(&checksum.0)?;
    let installed = out_dir.join(file.1);
    let _dir_lock = lock_dir(out_dir)?;
    super::interrupt::while_installing(|| {
        run_install_steps(out_dir, install_steps(file, checksum))
    })?;
    Ok(installed)
}

/// Why the image `name` in `out_dir` is not a finished build, judged by its checksum file
/// alone (hashing the old image costs seconds, and it is being replaced anyway): no checksum,
/// or one that names another file. `None` when there is no image, or it looks whole.
pub fn incomplete_pair(out_dir: &Path, name: &str, checksum_name: &str) -> Option<String> {
    if out_dir.join(name).symlink_metadata().is_err() {
        return None;
    }
    match read_own_small_file(&out_dir.join(checksum_name), CHECKSUM_FILE_LIMIT) {
        Ok(None) => Some(format!(
            "it has no {checksum_name} (a build was interrupted)"
        )),
        Err(e) => Some(format!("{e:#}")),
        Ok(Some(text)) if text.split_whitespace().nth(1) != Some(name) => {
            Some(format!("{checksum_name} does not describe it"))
        }
        Ok(Some(_)) => None,
    }
}

/// A checksum file is one line: anything longer is not one of ours.
pub const CHECKSUM_FILE_LIMIT: u64 = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds `path`'s lock in another process (as a build in another PID namespace would),
    /// until the returned child is killed.
    fn hold_lock_elsewhere(path: &Path) -> std::process::Child {
        let ready = path.with_extension("ready");
        // One process (sh, then sleep) holds the lock; killing it releases the lock.
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec 9<\"$0\" && flock --exclusive 9 && touch \"$1\" && exec sleep 60")
            .arg(path)
            .arg(&ready)
            .spawn()
            .expect("flock (util-linux) runs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !ready.exists() {
            assert!(std::time::Instant::now() < deadline, "flock did not start");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        fs::remove_file(&ready).unwrap();
        child
    }

    #[test]
    fn leftovers_whose_lock_nobody_holds_are_removed_and_locked_ones_kept_whatever_their_pid() {
        let out = tempfile::tempdir().unwrap();
        // Named after a pid that runs here (1), but nobody holds its lock: a killed build's.
        let dead = out.path().join(format!("{TEMP_PREFIX}1-abc"));
        let dead_file = out.path().join(format!("{TEMP_PREFIX}1-x.zip.partial"));
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("image.raw"), "half").unwrap();
        fs::write(&dead_file, "half").unwrap();
        // Named after a pid that does not run here, but locked: a live build in another PID
        // namespace.
        let live = out
            .path()
            .join(format!("{TEMP_PREFIX}{}-abc", u32::MAX - 1));
        let live_file = out
            .path()
            .join(format!("{TEMP_PREFIX}{}-y.partial", u32::MAX - 1));
        fs::create_dir(&live).unwrap();
        fs::write(&live_file, "downloading").unwrap();
        let mut holders = [hold_lock_elsewhere(&live), hold_lock_elsewhere(&live_file)];
        let unrelated = out.path().join("alloy-1.10.2-amd64.raw");
        fs::write(&unrelated, "image").unwrap();

        let work = WorkDir::new(out.path()).unwrap();
        assert!(!dead.exists());
        assert!(!dead_file.exists());
        assert!(live.exists());
        assert!(live_file.exists());
        assert!(unrelated.exists());

        // Our own work dir is live to every other build, and a partial download too.
        let other = WorkDir::new(out.path()).unwrap();
        let out_name = out.path().file_name().unwrap().to_str().unwrap();
        let safe = SafeDir::open(out.path().parent().unwrap(), out_name).unwrap();
        let partial = PartialFile::new(&safe, "-z.partial").unwrap();
        assert!(work.path().is_dir());
        assert!(partial.path().is_file());

        // Once the other process is gone, its leftovers are a dead build's.
        for holder in &mut holders {
            holder.kill().unwrap();
            holder.wait().unwrap();
        }
        let path = work.path().to_path_buf();
        drop(WorkDir::new(out.path()).unwrap());
        assert!(!live.exists());
        assert!(!live_file.exists());
        assert!(path.is_dir());
        assert!(other.path().is_dir());
        drop(work);
        assert!(!path.exists());
        let partial_path = partial.path().to_path_buf();
        partial.persist("z").unwrap();
        assert!(!partial_path.exists());
        assert!(out.path().join("z").is_file());
    }

    /// A partial download left by a killed run (nobody holds its lock) is removed by the next
    /// one, a live one is kept, and a partial file that is not persisted is gone when dropped.
    #[test]
    fn partial_files_sweep_the_abandoned_and_vanish_unless_persisted() {
        let home = tempfile::tempdir().unwrap();
        let dir = SafeDir::open(home.path(), "cache").unwrap();
        let abandoned = dir.path().join(format!("{TEMP_PREFIX}1-old.partial"));
        fs::write(&abandoned, "half").unwrap();
        let live = dir.path().join(format!("{TEMP_PREFIX}2-live.partial"));
        fs::write(&live, "downloading").unwrap();
        let mut holder = hold_lock_elsewhere(&live);
        let partial = PartialFile::new(&dir, "-x.partial").unwrap();
        assert!(!abandoned.exists());
        assert!(live.exists());
        let path = partial.path();
        assert!(path.is_file());
        drop(partial);
        assert!(!path.exists());
        holder.kill().unwrap();
        holder.wait().unwrap();
    }

    /// Reading the old checksum beside an image never hangs on a FIFO, never follows a link
    /// (to /dev/zero, which would fill memory), and stops at the limit.
    #[test]
    fn small_files_are_read_only_when_regular_ours_and_small() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        xtask_testkit::mkfifo(&fifo);
        let zero = dir.path().join("zero");
        xtask_testkit::link_to_dev_zero(&zero);
        let big = dir.path().join("big");
        fs::write(&big, vec![b'x'; 5000]).unwrap();
        let good = dir.path().join("good");
        fs::write(&good, "abc  x.raw\n").unwrap();
        for refused in [&fifo, &zero, &big] {
            assert!(
                read_own_small_file(refused, CHECKSUM_FILE_LIMIT).is_err(),
                "{}",
                refused.display()
            );
        }
        assert_eq!(
            read_own_small_file(&good, CHECKSUM_FILE_LIMIT)
                .unwrap()
                .as_deref(),
            Some("abc  x.raw\n")
        );
        assert_eq!(
            read_own_small_file(&dir.path().join("absent"), 10).unwrap(),
            None
        );
        std::fs::write(dir.path().join("x.raw"), "image").unwrap();
        let why = incomplete_pair(dir.path(), "x.raw", "fifo").unwrap();
        assert!(why.contains("not a small regular file"), "{why}");
    }

    /// The checksum file in `out` either is missing or describes the file beside it.
    fn pair_agrees(out: &Path) -> bool {
        match fs::read_to_string(out.join("x.raw.sha256")) {
            Err(_) => true,
            Ok(sum) => fs::read_to_string(out.join("x.raw"))
                .is_ok_and(|raw| sum == format!("sum of {raw}")),
        }
    }

    #[test]
    fn a_file_and_its_checksum_never_disagree_wherever_the_install_stops() {
        let out = tempfile::tempdir().unwrap();
        let steps_total =
            install_steps((PathBuf::new(), "x.raw"), (PathBuf::new(), "x.raw.sha256")).len();
        // Dying after each step: the old pair in place, the new one in the work dir.
        for done in 0..=steps_total {
            fs::write(out.path().join("x.raw"), "old").unwrap();
            fs::write(out.path().join("x.raw.sha256"), "sum of old").unwrap();
            let work = WorkDir::new(out.path()).unwrap();
            let (raw, sum) = (work.path().join("raw"), work.path().join("sum"));
            fs::write(&raw, "new").unwrap();
            fs::write(&sum, "sum of new").unwrap();
            let steps = install_steps((raw, "x.raw"), (sum, "x.raw.sha256"));
            run_install_steps(out.path(), steps.into_iter().take(done).collect()).unwrap();
            assert!(
                pair_agrees(out.path()),
                "after {done} of {steps_total} steps"
            );
        }
        // All of them: the new pair.
        let work = WorkDir::new(out.path()).unwrap();
        let (raw, sum) = (work.path().join("raw"), work.path().join("sum"));
        fs::write(&raw, "newer").unwrap();
        fs::write(&sum, "sum of newer").unwrap();
        let installed =
            install_with_checksum(out.path(), (raw, "x.raw"), (sum, "x.raw.sha256")).unwrap();
        assert_eq!(installed, out.path().join("x.raw"));
        assert_eq!(
            fs::read_to_string(out.path().join("x.raw.sha256")).unwrap(),
            "sum of newer"
        );
        assert_eq!(fs::read_to_string(&installed).unwrap(), "newer");
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
