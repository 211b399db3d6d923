//! What the integration tests share: fixture releases, a loopback mirror, running `xtask`, and
//! looking inside images without mounting them.
#![allow(dead_code)] // each test crate uses a different part of this module

pub mod debian;
pub mod fixture;
pub mod host;
#[allow(unused_imports)] // each test crate uses a different part of this module
pub use xtask_testkit::{http, mirror};

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `xtask` binary: cargo names it for this package's tests; other packages' tests (publish)
/// find it beside their own binary, in the same target directory.
pub const XTASK: &str = match option_env!("CARGO_BIN_EXE_xtask") {
    Some(path) => path,
    None => concat!(env!("CARGO_TARGET_TMPDIR"), "/../debug/xtask"),
};

/// Every image format `xtask build --format` makes; tests that hold for all loop over these.
pub const FORMATS: [&str; 3] = ["ext4", "squashfs", "erofs"];

/// The outcome of one `xtask` run.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_command(command: &mut Command) -> Run {
        let output = command.output().expect("running xtask");
        Run {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn assert_ok(&self) -> &Run {
        assert!(
            self.success,
            "expected success\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts a failure whose error output contains every one of `needles`.
    pub fn assert_fails_with(&self, needles: &[&str]) -> &Run {
        assert!(
            !self.success,
            "expected failure\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr lacks {needle:?}\n--- stderr\n{}",
                self.stderr
            );
        }
        self
    }
}

/// A private place to build in: its own cache and output directory.
pub struct Workspace {
    pub tmp: tempfile::TempDir,
    pub cache: PathBuf,
    pub out: PathBuf,
}

impl Workspace {
    pub fn new() -> Workspace {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let out = tmp.path().join("out");
        Workspace { tmp, cache, out }
    }

    /// An `xtask` command with this workspace's cache, and nothing inherited that matters.
    pub fn command(&self, releases_url: &str) -> Command {
        let mut command = Command::new(XTASK);
        command
            .env("XDG_CACHE_HOME", &self.cache)
            .env("ALLOY_RELEASES_URL", releases_url)
            .env_remove("SOURCE_DATE_EPOCH");
        command
    }

    /// `xtask build VERSION --out-dir OUT ARGS...` against `releases_url`.
    pub fn build(&self, releases_url: &str, version: &str, args: &[&str]) -> Run {
        Run::from_command(
            self.command(releases_url)
                .arg("build")
                .arg(version)
                .arg("--out-dir")
                .arg(&self.out)
                .args(args),
        )
    }

    /// Every name in the output directory, hidden ones too, sorted.
    pub fn out_names(&self) -> Vec<String> {
        let mut names: Vec<String> = match std::fs::read_dir(&self.out) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    pub fn image(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }
}

/// One inode as debugfs lists it.
#[derive(Debug, Clone)]
pub struct Inode {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: Option<u64>,
}

fn debugfs(image: &Path, request: &str) -> Vec<u8> {
    let output = Command::new(tool("debugfs"))
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .expect("running debugfs");
    assert!(
        output.status.success(),
        "debugfs -R {request:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Finds a tool in PATH or in the sbin directories.
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!("{name} is not installed: run bash scripts/install-deps.sh --test");
}

/// Every inode in an ext4 image, recursively, as (path, mode, owner, size).
pub fn ext4_inodes(image: &Path) -> Vec<Inode> {
    let mut inodes = Vec::new();
    let mut dirs = vec!["/".to_string()];
    while let Some(dir) = dirs.pop() {
        let listing = String::from_utf8(debugfs(image, &format!("ls -p {dir}"))).unwrap();
        for line in listing.lines().filter(|l| l.starts_with('/')) {
            // /inode/mode/uid/gid/name/size/
            let fields: Vec<&str> = line.split('/').collect();
            let name = fields[5];
            // Inode 0 marks an unused directory slot (lost+found is made of them).
            if fields[1] == "0" || name == "." && dir != "/" || name == ".." {
                continue;
            }
            let path = if name == "." {
                "/".to_string()
            } else {
                format!("{}/{name}", dir.trim_end_matches('/'))
            };
            let mode = u32::from_str_radix(fields[2], 8).unwrap();
            if mode & 0o170000 == 0o040000 && name != "." {
                dirs.push(path.clone());
            }
            inodes.push(Inode {
                path,
                mode,
                uid: fields[3].parse().unwrap(),
                gid: fields[4].parse().unwrap(),
                size: fields[6].parse().ok(),
            });
        }
    }
    inodes.sort_by(|a, b| a.path.cmp(&b.path));
    inodes
}

/// A file's bytes from inside an ext4 image.
pub fn ext4_cat(image: &Path, path: &str) -> Vec<u8> {
    debugfs(image, &format!("cat {path}"))
}

/// `debugfs stat` of a path in an ext4 image.
pub fn ext4_stat(image: &Path, path: &str) -> String {
    String::from_utf8_lossy(&debugfs(image, &format!("stat {path}"))).into_owned()
}

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

/// Sends `signal` (e.g. "TERM") to `pid`, or to its whole process group when `pid` is negative.
pub fn send_signal(signal: &str, pid: i32) {
    // The shell's own kill: /usr/bin/kill (procps) is not on every minimal system.
    let status = Command::new("sh")
        .arg("-c")
        .arg("kill -s \"$0\" -- \"$1\"")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .expect("running sh");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Waits until `path` exists, failing the test after `seconds`.
pub fn wait_for_file(path: &Path, seconds: u64, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen within {seconds} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits for `child` to exit, killing it and failing the test after `seconds`.
pub fn wait_with_deadline(
    child: &mut std::process::Child,
    seconds: u64,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {seconds} s of the signal");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
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

/// `dir` first, then the inherited PATH.
pub fn path_with_first(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// Kills a process group on drop, so a failing test leaves nothing running.
pub struct KillGroupOnDrop(pub i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg("kill -s KILL -- \"-$0\"")
            .arg(self.0.to_string())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
