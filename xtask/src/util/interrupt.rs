//! Ctrl-C, SIGTERM and SIGHUP: nothing is installed any more ([`while_installing`]), every
//! process we started is stopped and the main thread's work with it (long loops ask [`check`]),
//! then the registered clean-ups run (work directories, private GNUPGHOMEs and their agents),
//! and the process exits 128 + the signal (130 for Ctrl-C, 143 for SIGTERM). Stopping first
//! means no step still reads a file the clean-up removes: a packer that found its tree gone
//! could otherwise finish "successfully" with empty files.
//!
//! signal-hook's handler only writes to a pipe; a thread of ours reads it and cleans up there,
//! where it may allocate, spawn `gpgconf` and remove trees (none of which a handler may do).
//! Children are found in /proc rather than spawned in process groups of their own: every
//! `cmd!` stays as it is, Ctrl-C in a terminal still reaches them directly, and a SIGTERM sent
//! to us alone stops them too.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;

/// The signals that end a command early.
const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

type Action = Box<dyn FnOnce() + Send>;

static CLEANUPS: Mutex<Vec<(u64, Action)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
/// The signal received, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// Held while finished outputs are moved into place; `true` once the clean-up has begun, after
/// which nothing is installed.
static INSTALLS: Mutex<bool> = Mutex::new(false);
/// Set when the main thread has stopped its work after a signal (it is parked for good).
static MAIN_STOPPED: AtomicBool = AtomicBool::new(false);
/// Set while the main thread waits on the network (or a backoff), which touches no work
/// file: the clean-up need not wait for it to notice the signal.
static MAIN_WAITING: AtomicBool = AtomicBool::new(false);
/// How long the clean-up waits for the main thread to stop before removing files anyway (it may
/// be blocked in a network read, which touches no work file).
const MAIN_GRACE: Duration = Duration::from_secs(10);

/// The error of a step stopped because a signal arrived.
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by signal {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// `Err` once a signal arrived: loops that read or write for long call this between chunks,
/// so the work stops before the clean-up removes what it reads.
pub fn check() -> Result<(), Interrupted> {
    match received() {
        Some(signal) => Err(Interrupted(signal)),
        None => Ok(()),
    }
}

/// [`check`] as an I/O error, for readers and writers.
pub fn check_io() -> std::io::Result<()> {
    check().map_err(std::io::Error::other)
}

/// Runs `wait` (a read from the network, a connection, a backoff: nothing that reads or writes
/// a file a clean-up removes), during which a signal's clean-up need not wait for the main
/// thread: a stalled download would otherwise hold Ctrl-C for [`MAIN_GRACE`].
pub fn while_waiting<T>(wait: impl FnOnce() -> T) -> T {
    let main = std::thread::current().name() == Some("main");
    if main {
        MAIN_WAITING.store(true, Ordering::SeqCst);
    }
    let result = wait();
    if main {
        MAIN_WAITING.store(false, Ordering::SeqCst);
    }
    result
}

/// Runs `install` (renaming finished outputs into place) unless a signal arrived: the clean-up
/// waits for an install under way to finish, and none starts after it began.
pub fn while_installing<T>(install: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let closed = INSTALLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *closed {
        return Err(Interrupted(received().unwrap_or(0)).into());
    }
    check()?;
    install()
}

/// The registry, even after a panic elsewhere while it was held: it is only ever pushed to and
/// filtered, so it stays consistent.
fn cleanups() -> std::sync::MutexGuard<'static, Vec<(u64, Action)>> {
    CLEANUPS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts listening for [`SIGNALS`]. Call once, early in `main`.
pub fn install() -> anyhow::Result<()> {
    let mut signals =
        signal_hook::iterator::Signals::new(SIGNALS).context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            let mut received = signals.forever();
            let Some(signal) = received.next() else {
                return;
            };
            RECEIVED.store(signal, Ordering::SeqCst);
            // Not eprintln!: a closed stderr must not panic this thread before it cleans up.
            let _ = writeln!(
                std::io::stderr(),
                "\ninterrupted: stopping child processes and removing work files (again to quit at once)"
            );
            let cleaner = std::thread::Builder::new()
                .name("clean-up".into())
                .spawn(move || {
                    clean_up();
                    std::process::exit(128 + signal);
                });
            if cleaner.is_err() {
                clean_up();
                std::process::exit(128 + signal);
            }
            // A second signal: the user will not wait for the clean-up.
            if let Some(again) = received.next() {
                std::process::exit(128 + again);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// The signal that interrupts this process, if one arrived.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// `code` for `main` to return, after `report` prints the error, if any; unless a signal
/// arrived: then the failures it caused (a killed packer, a removed work directory) are not
/// worth printing, and this waits for the clean-up thread to exit with 128 + signal.
pub fn exit_unless_interrupted(
    code: std::process::ExitCode,
    report: impl FnOnce(),
) -> std::process::ExitCode {
    if received().is_none() {
        report();
        return code;
    }
    MAIN_STOPPED.store(true, Ordering::SeqCst);
    loop {
        std::thread::park();
    }
}

/// A clean-up to run if a signal ends the process; dropping this forgets it (the owner cleaned
/// up in the ordinary way).
#[must_use = "the clean-up is forgotten when this is dropped"]
pub struct OnInterrupt {
    id: u64,
}

impl Drop for OnInterrupt {
    fn drop(&mut self) {
        cleanups().retain(|(id, _)| *id != self.id);
    }
}

/// Runs `action` if a signal ends the process while the returned guard lives.
pub fn on_interrupt(action: impl FnOnce() + Send + 'static) -> OnInterrupt {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    cleanups().push((id, Box::new(action)));
    OnInterrupt { id }
}

/// Removes `path` (a file or a whole directory) if a signal ends the process.
pub fn remove_on_interrupt(path: &Path) -> OnInterrupt {
    let path = path.to_path_buf();
    on_interrupt(move || remove_path(&path))
}

/// A value (a temporary directory) that is removed on drop and, while it lives, on a signal.
pub struct Guarded<T> {
    // Fields drop in order: the value is gone before the clean-up is forgotten, so a signal
    // in between cannot leave it behind.
    value: T,
    _on_interrupt: OnInterrupt,
}

impl<T> std::ops::Deref for Guarded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// A private temporary directory (in `$TMPDIR`) that a signal removes too.
pub fn temp_dir() -> std::io::Result<Guarded<tempfile::TempDir>> {
    let dir = tempfile::tempdir()?;
    let on_interrupt = remove_on_interrupt(dir.path());
    Ok(Guarded {
        value: dir,
        _on_interrupt: on_interrupt,
    })
}

/// Removes a file or a directory tree, whichever `path` is, never following a link.
pub fn remove_path(path: &Path) {
    let _ = match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
}

/// Closes installing, stops our children and waits (a while) for the main thread to stop its
/// own work (not while it only waits on the network), then runs every registered clean-up, newest first. The registry's lock is kept to
/// the end: an owner that finishes meanwhile waits instead of racing the removal.
fn clean_up() {
    *INSTALLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
    // Again and again: the main thread may start one more child before it notices.
    let deadline = Instant::now() + MAIN_GRACE;
    loop {
        stop_descendants();
        let main_idle = MAIN_STOPPED.load(Ordering::SeqCst) || MAIN_WAITING.load(Ordering::SeqCst);
        if main_idle || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut cleanups = cleanups();
    while let Some((_, action)) = cleanups.pop() {
        action();
    }
    // Anything the main thread started in between (it learns of the signal only from failures).
    stop_descendants();
}

/// One process in /proc: its parent and whether it is a zombie (exited, not yet reaped).
fn stat_of(pid: i32) -> Option<(i32, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// `(ppid, zombie)` from a /proc/<pid>/stat line; the command name may hold spaces and parens.
fn parse_stat(stat: &str) -> Option<(i32, bool)> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state == "Z"))
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every living process below `root` in the process tree.
fn descendants_of(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for pid in all_pids() {
        if let Some((ppid, zombie)) = stat_of(pid) {
            if !zombie {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

/// SIGTERM to each of `pids`, SIGKILL to those still running after a grace period.
pub fn terminate(pids: impl Fn() -> Vec<i32>) {
    let first = pids();
    if first.is_empty() {
        return;
    }
    for &pid in &first {
        // SAFETY: kill(2) has no memory effects; a pid that has gone meanwhile gives ESRCH.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = pids();
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for pid in left {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops every process we started (packers, gpg, tools they started), and theirs.
fn stop_descendants() {
    let me = std::process::id() as i32;
    terminate(|| descendants_of(me));
}

/// Living processes (of any parent: gpg-agent detaches itself) whose environment holds
/// `name=value` exactly. Processes of other users cannot be read, and are not ours.
pub fn processes_with_env(name: &str, value: &Path) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt;
    let mut wanted = format!("{name}=").into_bytes();
    wanted.extend_from_slice(value.as_os_str().as_bytes());
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| stat_of(pid).is_some_and(|(_, zombie)| !zombie))
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == wanted))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_lines_whose_name_has_spaces_and_parens() {
        assert_eq!(
            parse_stat("123 (my (odd) prog) S 45 123 123 0 -1 4194560 0"),
            Some((45, false))
        );
        assert_eq!(parse_stat("7 (sh) Z 1 7 7"), Some((1, true)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn finds_and_stops_descendants_and_processes_by_environment() {
        let marker = tempfile::tempdir().unwrap();
        // A child whose own child outlives it would, if only direct children were stopped.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("sleep 60 & wait")
            .env("ALLOY_SYSEXT_TEST_MARK", marker.path())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while descendants_of(pid).is_empty() {
            assert!(Instant::now() < deadline, "sleep did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let marked = processes_with_env("ALLOY_SYSEXT_TEST_MARK", marker.path());
        assert_eq!(marked.len(), 2, "{marked:?}");
        assert!(marked.contains(&pid));

        terminate(|| processes_with_env("ALLOY_SYSEXT_TEST_MARK", marker.path()));
        let _ = child.wait();
        assert!(processes_with_env("ALLOY_SYSEXT_TEST_MARK", marker.path()).is_empty());
    }

    #[test]
    fn registered_cleanups_are_forgotten_when_dropped() {
        let registered = |id| cleanups().iter().any(|(i, _)| *i == id);
        let guard = remove_on_interrupt(Path::new("/nonexistent/alloy-sysext"));
        let id = guard.id;
        assert!(registered(id));
        drop(guard);
        assert!(!registered(id));
    }
}
