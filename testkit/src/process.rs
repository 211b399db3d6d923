//! Processes: who may run the root-only tests, finding what a run left running, signalling and
//! waiting with deadlines, and wrappers put first in PATH.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Whether this process may use loop devices and mount namespaces. Root-only tests call this:
/// outside CI they skip with a reason; in CI (CI=true) not being root is a failure.
pub fn require_root(test: &str) -> bool {
    let root = effective_uid() == 0;
    if !root {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test} needs root (loop devices, mount namespaces), and CI must run it");
        }
        eprintln!(
            "SKIPPED {test}: needs root for loop devices and mount namespaces (CI runs it as root)"
        );
    }
    root
}

fn effective_uid() -> u32 {
    // No libc dependency for one number: the owner of /proc/self is our effective uid.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// Living processes (zombies excluded) whose environment holds exactly `var` (`NAME=value`),
/// as (pid, command line); other users' processes cannot be read and are not ours.
pub fn processes_with_env(var: &str) -> Vec<(i32, String)> {
    processes_where(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == var.as_bytes()))
    })
}

/// Living processes whose command line mentions `text`, as (pid, command line).
pub fn processes_mentioning(text: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    processes_where(|pid| pid != me && command_line(pid).contains(text))
}

fn command_line(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

fn processes_where(wanted: impl Fn(i32) -> bool) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| Some(s.get(s.rfind(')')? + 2..)?.starts_with('Z')))
            .unwrap_or(true);
        if !zombie && wanted(pid) {
            found.push((pid, command_line(pid)));
        }
    }
    found
}

/// The environment of process `pid`, as `NAME=value` text separated by NULs.
pub fn environ(pid: i32) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    String::from_utf8_lossy(&environ).into_owned()
}

/// A variable every process of one run inherits, whoever its parent is by then: how a test
/// finds what the run left running.
pub struct Mark(String);

impl Mark {
    /// A mark unique to `dir` (a test's own temporary directory).
    pub fn new(dir: &Path) -> Mark {
        Mark(format!("ALLOY_SYSEXT_TEST_RUN={}", dir.display()))
    }

    /// Gives `command` the mark.
    pub fn on<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        let (name, value) = self.0.split_once('=').unwrap();
        command.env(name, value)
    }

    /// Living processes with the mark.
    pub fn processes(&self) -> Vec<(i32, String)> {
        processes_with_env(&self.0)
    }
}

/// Sends `signal` (e.g. "TERM") to `pid`, or to its whole process group when `pid` is negative.
pub fn send_signal(signal: &str, pid: i32) {
    assert!(try_signal(signal, pid), "kill -{signal} {pid}");
}

/// [`send_signal`], saying whether anything received it (a process may have just exited).
pub fn try_signal(signal: &str, pid: i32) -> bool {
    // The shell's own kill: /usr/bin/kill (procps) is not on every minimal system.
    Command::new("sh")
        .arg("-c")
        .arg("kill -s \"$0\" -- \"$1\" 2>/dev/null")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .expect("running sh")
        .success()
}

/// Waits until `done` holds, failing the test after `seconds`, saying `what` did not happen.
pub fn wait_for(seconds: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {seconds} s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `path` exists, failing the test after `seconds`.
pub fn wait_for_file(path: &Path, seconds: u64, what: &str) {
    wait_for(seconds, what, || path.exists());
}

/// A child in a process group of its own, which goes with all its group when dropped: a
/// failing test leaves nothing running. Its stdout is discarded, its stderr kept in a log.
pub struct Group {
    pub child: Child,
    pub pid: i32,
    log: tempfile::NamedTempFile,
}

impl Group {
    pub fn spawn(command: &mut Command) -> Group {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = command
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
        let pid = child.id() as i32;
        Group { child, pid, log }
    }

    /// What the child printed on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    /// Waits until `path` exists (a wrapper the child runs touches it when `what` starts),
    /// failing the test after `seconds`, or with the child's log if it ends first.
    pub fn until_file(&mut self, path: &Path, seconds: u64, what: &str) {
        let mut ended = None;
        wait_for(seconds, what, || {
            ended = self.child.try_wait().unwrap();
            ended.is_some() || path.exists()
        });
        if let (Some(status), false) = (ended, path.exists()) {
            panic!(
                "the process ended ({status}) before {what}:\n{}",
                self.log()
            );
        }
    }

    /// Sends `signal` to the child alone, or to its whole group as a terminal's Ctrl-C does.
    pub fn signal(&self, signal: &str, whole_group: bool) {
        send_signal(signal, if whole_group { -self.pid } else { self.pid });
    }

    /// [`Group::signal`], saying whether anything received it: the child may have exited.
    pub fn try_signal(&self, signal: &str, whole_group: bool) -> bool {
        try_signal(signal, if whole_group { -self.pid } else { self.pid })
    }

    /// Waits for the child to exit, killing it and failing the test after `seconds`, or if it
    /// panicked.
    pub fn wait(&mut self, seconds: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                crate::assert_no_panic("", &self.log());
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the process did not exit within {seconds} s of the signal");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg("kill -s KILL -- \"-$0\"")
            .arg(self.pid.to_string())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// An executable script `name` in `dir` (a wrapper put first in PATH).
pub fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A wrapper for `tool` in `dir`, to be put first in PATH: it touches `started`, sleeps a
/// minute (long enough for a test to signal the run that started it), then runs the real tool.
pub fn slow_wrapper(dir: &Path, tool: &str, started: &Path) -> PathBuf {
    let script = format!(
        "#!/bin/sh\ntouch '{}'\nsleep 60\nexec '{}' \"$@\"\n",
        started.display(),
        crate::tool(tool).display()
    );
    write_script(dir, tool, &script)
}

/// `dir` first, then the inherited PATH.
pub fn path_with_first(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}
