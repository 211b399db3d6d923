//! A Flatcar-like host for the boot tests: a minimal Debian root (debootstrap, cached per suite)
//! that says it is Flatcar, booted by systemd-nspawn with systemd as PID 1. A report unit inside
//! runs a test's script once the system is up, writes KEY=VALUE lines and powers the host off.
//!
//! Two ways extensions get merged, as on the two generations of Flatcar:
//! - [`Merge::EnsureSysext`]: systemd-sysext.service in sysinit, then Flatcar's
//!   ensure-sysext.service reloads units and restarts the targets (Flatcar until early 2026);
//! - [`Merge::BeforeInit`]: merged before the system manager starts, as newer Flatcar does in
//!   its initrd; no ensure-sysext.service.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest a boot may take, report and poweroff included, before the container is killed.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// A Debian release to boot, with what the tests need in it besides systemd: libcurl and
/// libfdisk for the real systemd-sysupdate (bound in from the host's build), gpg for its
/// `Verify=yes`. Library package names differ between releases (the t64 transition).
pub struct Suite {
    pub name: &'static str,
    pub packages: &'static str,
    /// The systemd major version the suite ships.
    pub systemd: u32,
}

/// Debian 12: systemd 252, as Flatcar's older LTS lines.
pub const BOOKWORM: Suite = Suite {
    name: "bookworm",
    packages: "systemd,systemd-sysv,dbus,libcurl4,libfdisk1,gpg",
    systemd: 252,
};

/// Debian 13: systemd 257, as Flatcar stable.
pub const TRIXIE: Suite = Suite {
    name: "trixie",
    packages: "systemd,systemd-sysv,dbus,libcurl4t64,libfdisk1,gpg",
    systemd: 257,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    EnsureSysext,
    BeforeInit,
}

/// Flatcar's ensure-sysext.service (flatcar/init): after the merge, reload units and restart the
/// targets so that units the extensions brought are started.
const ENSURE_SYSEXT: &str = "\
[Unit]
BindsTo=systemd-sysext.service
After=systemd-sysext.service
DefaultDependencies=no
# Keep in sync with systemd-sysext.service
ConditionDirectoryNotEmpty=|/etc/extensions
ConditionDirectoryNotEmpty=|/run/extensions
ConditionDirectoryNotEmpty=|/var/lib/extensions
ConditionDirectoryNotEmpty=|/usr/local/lib/extensions
ConditionDirectoryNotEmpty=|/usr/lib/extensions
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/systemctl daemon-reload
ExecStart=/usr/bin/systemctl restart --no-block sockets.target timers.target multi-user.target
[Install]
WantedBy=sysinit.target
";

/// PID 1 of a [`Merge::BeforeInit`] host: what newer Flatcar's initrd does before switching
/// root, merge the extensions, then the system manager. `--no-reload` (systemd >= 255): there
/// is no manager yet to reload for EXTENSION_RELOAD_MANAGER=. A failed merge stops the boot
/// here, saying so on the console, rather than booting a host without Alloy.
const MERGE_THEN_INIT: &str = "\
#!/bin/sh
systemd-sysext merge --no-reload || { echo \"systemd-sysext merge failed before init\"; exit 1; }
exec /usr/lib/systemd/systemd \"$@\"
";

/// Where a report script asks the test for something, and where the test says it is done.
const REQUEST: &str = "/root/alloy-test-request";
const REQUEST_DONE: &str = "/root/alloy-test-done";

/// A shell function for report scripts: `ask_test "publish 1.12.0"` asks the test outside to do
/// something ([`Host::boot_serving`]) and waits until it is done (at most a minute). Each
/// request must differ from the one before.
pub const ASK_TEST: &str = r#"ask_test() {
  echo "$1" > /root/alloy-test-request.tmp && mv /root/alloy-test-request.tmp /root/alloy-test-request
  i=0
  while [ "$i" -lt 240 ] && [ "$(cat /root/alloy-test-done 2>/dev/null)" != "$1" ]; do sleep 0.25; i=$((i+1)); done
}
"#;

const REPORT_UNIT: &str = "\
[Unit]
Description=Report for the boot test, then power off

[Service]
Type=simple
ExecStart=/bin/sh /root/alloy-report.sh

[Install]
WantedBy=multi-user.target
";

/// The minimal Debian root of `suite` (debootstrap, cached: [`crate::debian::root`]).
pub fn debian_root(suite: &Suite) -> PathBuf {
    let packages: Vec<&str> = suite.packages.split(',').collect();
    let root = crate::debian::root(suite.name, &packages);
    assert!(
        root.join("usr/lib/systemd/systemd").exists(),
        "{} has no systemd",
        root.display()
    );
    root
}

/// The loop devices a container may use: systemd-sysext inside asks /dev/loop-control for a
/// free one, and the node it names must exist in the container. Makes sure the first 16 exist.
fn loop_device_binds() -> Vec<String> {
    for n in 0..16 {
        let node = format!("/dev/loop{n}");
        if !Path::new(&node).exists() {
            let _ = Command::new("mknod")
                .args([&node, "b", "7", &n.to_string()])
                .status();
        }
    }
    let mut binds = vec!["--bind=/dev/loop-control".to_string()];
    for entry in std::fs::read_dir("/dev").unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name
            .strip_prefix("loop")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            binds.push(format!("--bind=/dev/{name}"));
        }
    }
    binds
}

/// The report unit running `report_script`, and what merges extensions the way `merge` says.
fn install_units(root: &Path, merge: Merge, report_script: &str) {
    let units = root.join("etc/systemd/system");
    std::fs::write(units.join("alloy-report.service"), REPORT_UNIT).unwrap();
    std::fs::write(root.join("root/alloy-report.sh"), report_script).unwrap();
    let mut wants = vec![(
        "multi-user.target.wants",
        "alloy-report.service",
        "../alloy-report.service",
    )];
    match merge {
        Merge::EnsureSysext => {
            std::fs::write(units.join("ensure-sysext.service"), ENSURE_SYSEXT).unwrap();
            wants.push((
                "sysinit.target.wants",
                "systemd-sysext.service",
                "/usr/lib/systemd/system/systemd-sysext.service",
            ));
            wants.push((
                "sysinit.target.wants",
                "ensure-sysext.service",
                "../ensure-sysext.service",
            ));
        }
        Merge::BeforeInit => {
            std::fs::write(root.join("root/merge-then-init.sh"), MERGE_THEN_INIT).unwrap();
        }
    }
    for (wants, unit, target) in wants {
        std::fs::create_dir_all(units.join(wants)).unwrap();
        std::os::unix::fs::symlink(target, units.join(wants).join(unit)).unwrap();
    }
}

/// One Flatcar-like host: a private copy of a Debian root, its state kept across boots.
pub struct Host {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub name: String,
    merge: Merge,
    binds: Vec<String>,
}

impl Host {
    /// A host with no extension yet, which runs `report_script` once booted.
    pub fn new(suite: &Suite, label: &str, merge: Merge, report_script: &str) -> Host {
        let base = debian_root(suite);
        // ALLOY_SYSEXT_KEEP_HOSTS=1 keeps every host's root after the test, to look into.
        let keep = std::env::var_os("ALLOY_SYSEXT_KEEP_HOSTS").is_some();
        let tmp = tempfile::Builder::new()
            .prefix("host.")
            .disable_cleanup(keep)
            .tempdir()
            .unwrap();
        if keep {
            eprintln!("keeping {label}'s root in {}", tmp.path().display());
        }
        let root = tmp.path().join("root");
        crate::checked_output(Command::new("cp").arg("-a").arg(&base).arg(&root));

        // Flatcar's identity, which is what the image's extension-release matches.
        let os_release = "ID=flatcar\nNAME=\"Flatcar-like boot test\"\nSYSEXT_LEVEL=1.0\n";
        for path in ["etc/os-release", "usr/lib/os-release"] {
            let _ = std::fs::remove_file(root.join(path));
            std::fs::write(root.join(path), os_release).unwrap();
        }
        install_units(&root, merge, report_script);
        // A journal on disk: what a boot that never finished logged can still be read.
        std::fs::create_dir_all(root.join("var/log/journal")).unwrap();
        let name = format!("alloy-{label}-{}", std::process::id());
        Host {
            tmp,
            root,
            name,
            merge,
            binds: Vec::new(),
        }
    }

    /// Installs `image` where Flatcar keeps sysexts: the versioned file under
    /// /opt/extensions/alloy, linked from /etc/extensions/alloy.raw.
    pub fn install_image(&self, image: &Path) {
        let name = image.file_name().unwrap().to_str().unwrap();
        let extensions = self.path("/opt/extensions/alloy");
        std::fs::create_dir_all(&extensions).unwrap();
        std::fs::copy(image, extensions.join(name)).unwrap();
        std::fs::create_dir_all(self.path("/etc/extensions")).unwrap();
        std::os::unix::fs::symlink(
            format!("/opt/extensions/alloy/{name}"),
            self.path("/etc/extensions/alloy.raw"),
        )
        .unwrap();
    }

    /// Makes `source` (a directory of the host running the test) visible, read-only, at
    /// `inside`. Not under /usr or /opt: a merge lays an overlay over those.
    pub fn bind_ro(&mut self, source: &Path, inside: &str) {
        self.binds
            .push(format!("--bind-ro={}:{inside}", source.display()));
    }

    /// Boots the host until the report unit powers it off, and returns the report.
    pub fn boot(&self) -> Report {
        self.boot_serving(|request| panic!("{}: unexpected request {request:?}", self.name))
    }

    /// [`Host::boot`], doing what the report script asks on the way ([`ASK_TEST`]): `serve` is
    /// called with each request (a test publishing a release, say) while the script waits.
    pub fn boot_serving(&self, mut serve: impl FnMut(&str)) -> Report {
        let request_path = self.path(REQUEST);
        let done_path = self.path(REQUEST_DONE);
        for path in [&request_path, &done_path] {
            let _ = std::fs::remove_file(path);
        }
        let mut served = String::new();
        self.boot_polling(&mut || {
            let request = std::fs::read_to_string(&request_path).unwrap_or_default();
            let request = request.trim_end();
            if !request.is_empty() && request != served {
                serve(request);
                served = request.to_string();
                let partial = done_path.with_extension("tmp");
                std::fs::write(&partial, format!("{served}\n")).unwrap();
                std::fs::rename(&partial, &done_path).unwrap();
            }
        })
    }

    /// Boots the host, calling `tick` every 100 ms until it powers off, and returns the report.
    fn boot_polling(&self, tick: &mut dyn FnMut()) -> Report {
        let report = self.path("/root/alloy-report.txt");
        let _ = std::fs::remove_file(&report);
        let journal_path = self.path("/root/alloy-journal.txt");
        let _ = std::fs::remove_file(&journal_path);
        let console_path = self.tmp.path().join(format!("console-{}.log", self.name));
        let console = std::fs::File::create(&console_path).unwrap();
        let started = Instant::now();
        let mut child = self
            .nspawn()
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("running systemd-nspawn (bash scripts/install-deps.sh --test installs systemd-container)");
        let status = wait_or_stop(&mut child, BOOT_TIMEOUT, tick);
        let journal = std::fs::read_to_string(&journal_path).unwrap_or_default();
        // What the report script got to, and the end of the journal kept on disk, when it did
        // not finish.
        let unfinished = self.path("/root/alloy-report.txt.tmp");
        let context = || {
            let kept = Command::new("journalctl")
                .arg("-D")
                .arg(self.path("/var/log/journal"))
                .args(["-n", "300", "--no-pager"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            format!(
                "--- report so far\n{}\n--- console\n{}\n--- journal\n{journal}\n--- journal on disk, last lines\n{kept}",
                std::fs::read_to_string(&unfinished).unwrap_or_default(),
                std::fs::read_to_string(&console_path).unwrap_or_default()
            )
        };
        match status {
            None => panic!(
                "{} did not power off within {BOOT_TIMEOUT:?}\n{}",
                self.name,
                context()
            ),
            Some(status) if !status.success() => {
                panic!("systemd-nspawn {}: {status}\n{}", self.name, context())
            }
            Some(_) => {}
        }
        eprintln!(
            "{}: booted, reported and powered off in {:.1?}",
            self.name,
            started.elapsed()
        );
        let text = std::fs::read_to_string(&report)
            .unwrap_or_else(|e| panic!("no report from {} ({e})\n{}", self.name, context()));
        Report { text, journal }
    }

    /// systemd-nspawn for this host, booting it the way its [`Merge`] says.
    fn nspawn(&self) -> Command {
        let mut command = Command::new("systemd-nspawn");
        command
            .args(["--register=no", "--keep-unit", "--console=pipe"])
            // On SIGTERM (a timed-out boot), nspawn kills the container's init, and with it
            // every process in the container's PID namespace.
            .arg("--kill-signal=SIGKILL")
            .arg(format!("--machine={}", self.name))
            .arg("-D")
            .arg(&self.root)
            .args(loop_device_binds())
            .args(&self.binds);
        match self.merge {
            Merge::EnsureSysext => {
                command.arg("--boot");
            }
            // No --boot: nspawn runs this command as PID 1, which execs systemd.
            Merge::BeforeInit => {
                command.args(["/bin/sh", "/root/merge-then-init.sh"]);
            }
        }
        command
    }

    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The images installed under /opt/extensions/alloy, sorted.
    pub fn installed_images(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("/opt/extensions/alloy"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Waits for `child` to exit within `timeout`, calling `tick` every 100 ms; else stops it
/// (SIGTERM, ten seconds' grace, then SIGKILL) and returns None.
fn wait_or_stop(
    child: &mut Child,
    timeout: Duration,
    tick: &mut dyn FnMut(),
) -> Option<ExitStatus> {
    let started = Instant::now();
    while started.elapsed() <= timeout {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        tick();
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let grace = Instant::now();
    while grace.elapsed() < Duration::from_secs(10) && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

pub struct Report {
    pub text: String,
    pub journal: String,
}

impl Report {
    pub fn values(&self, key: &str) -> Vec<&str> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    }

    pub fn get(&self, key: &str) -> &str {
        match self.values(key)[..] {
            [value] => value,
            _ => panic!("{key} not reported once:\n{self}"),
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n--- journal\n{}", self.text, self.journal)
    }
}
