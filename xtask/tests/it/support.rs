//! What xtask's own tests share: the binary under test, the fixture release's version and the
//! names of its image, and every image format.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use xtask_testkit::fixture::Release;
use xtask_testkit::mirror::Mirror;
use xtask_testkit::{checked_output, checked_output_with_input, Workspace};

/// The `xtask` binary: cargo tells xtask's own tests where it built it.
pub const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// The fixture release most tests build.
pub const VERSION: &str = "1.10.2";
pub const IMAGE: &str = "alloy-1.10.2-amd64.raw";
pub const CHECKSUM: &str = "alloy-1.10.2-amd64.raw.sha256";

/// Where every image holds its extension-release (no leading slash), and how that begins for
/// amd64 (later lines may follow, e.g. EXTENSION_RELOAD_MANAGER=1).
pub const RELEASE_FILE: &str = "usr/lib/extension-release.d/extension-release.alloy";
pub const EXTENSION_RELEASE: &str = "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n";

/// Every image format `xtask build --format` makes; tests that hold for all loop over these.
pub const FORMATS: [&str; 3] = ["ext4", "squashfs", "erofs"];

/// Pseudo-random numbers (xorshift64*), from a seed that a failure names: a test that draws
/// from it is replayed with `ALLOY_SYSEXT_TEST_SEED=<seed>`, else seeded from the clock.
pub struct Random(u64);

impl Random {
    pub fn seeded() -> (Random, u64) {
        let seed = std::env::var("ALLOY_SYSEXT_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                now.map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
            });
        // xorshift stays at 0 once there.
        (Random(seed.max(1)), seed)
    }

    /// A number below `bound` (which must not be 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

/// A private place for [`XTASK`] to build in.
pub fn workspace() -> Workspace {
    Workspace::new(XTASK)
}

/// The fixture release of [`VERSION`], served by a mirror of its own and built with
/// `xtask build VERSION ARGS...` in a new workspace.
pub fn built(args: &[&str]) -> Workspace {
    let mirror = Mirror::with_release(&Release::new(VERSION));
    let ws = workspace();
    ws.build(&mirror.base_url, VERSION, args).assert_ok();
    ws
}

/// `sha256sum -c` accepts the workspace's [`CHECKSUM`] in its output directory.
pub fn assert_sha256sum_accepts(ws: &Workspace) {
    checked_output(
        Command::new("sha256sum")
            .arg("-c")
            .arg(CHECKSUM)
            .current_dir(&ws.out),
    );
}

/// YAML -> JSON with PyYAML (python3-yaml, installed by install-deps.sh --test).
pub fn parse_yaml(text: &str) -> serde_json::Value {
    let to_json = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)";
    let mut python = Command::new("/usr/bin/python3");
    let json = checked_output_with_input(python.args(["-c", to_json]), text.as_bytes());
    serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{e}: not YAML?\n{text}"))
}

/// Every file (not directory) under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// The real systemd-sysupdate of systemd `series`, from scripts/build-sysupdate.sh: cached, so
/// this is quick after `scripts/install-deps.sh --test`; built here otherwise (several minutes).
pub fn sysupdate_build(series: u32) -> PathBuf {
    // One at a time: two builds of the same series would race for the same cache entry.
    static BUILD: Mutex<()> = Mutex::new(());
    let _build = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-sysupdate.sh");
    let stdout = checked_output(
        Command::new("bash")
            .arg(&script)
            .env("SYSUPDATE_SERIES", series.to_string()),
    );
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default());
    assert!(
        dir.join("systemd-sysupdate").is_file() && dir.join("systemd-pull").is_file(),
        "{} printed {stdout:?}, which holds no systemd-sysupdate",
        script.display()
    );
    dir
}
