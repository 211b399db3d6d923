//! Boots a Flatcar-like host with the image: a minimal Debian root (debootstrap, cached) that
//! says it is Flatcar, with Flatcar's ensure-sysext.service, booted by systemd-nspawn with
//! systemd as PID 1. A unit inside reports on alloy.service and powers the container off.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::debian::{apt_mirror, run};
use support::fixture::Release;
use support::mirror::Mirror;
use support::Workspace;

const VERSION: &str = "1.10.2";
const IMAGE: &str = "alloy-1.10.2-amd64.raw";
/// Longest a boot may take, report and poweroff included, before the container is killed.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const SUITE: &str = "bookworm";
const PACKAGES: &[&str] = &["systemd", "systemd-sysv", "dbus"];

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

/// Runs inside the container once it has booted: waits (bounded) for alloy.service, writes what
/// the test asserts on as KEY=VALUE lines, reloads Alloy, and powers off.
const REPORT_SCRIPT: &str = r#"#!/bin/sh
out=/root/alloy-report.txt
log=/var/lib/alloy/data/fake-alloy.log
# Polls (at most 10 s) until the last line of Alloy's state log starts with $1.
wait_for_log() {
  i=0
  while [ "$i" -lt 40 ] && ! tail -n 1 "$log" 2>/dev/null | grep -q "^$1"; do sleep 0.25; i=$((i+1)); done
}
timeout 90 systemctl is-system-running --wait >/dev/null 2>&1
i=0
while [ "$i" -lt 40 ] && ! systemctl is-active -q alloy.service; do sleep 0.25; i=$((i+1)); done
pid=$(systemctl show -p MainPID --value alloy.service)
# Active comes right after the fork: wait until the process is Alloy itself, not systemd still
# setting it up as root (the state log of an earlier boot ends with "stopped").
[ "$pid" != 0 ] && wait_for_log "started pid=$pid "
{
  echo "system=$(systemctl is-system-running)"
  echo "load=$(systemctl show -p LoadState --value alloy.service)"
  echo "active=$(systemctl is-active alloy.service)"
  echo "pid=$pid"
  if [ "$pid" != 0 ]; then
    sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/uid=\1/p; s/^Groups:[[:space:]]*/groups=/p' /proc/$pid/status
  fi
  echo "journal_gid=$(getent group systemd-journal | cut -d: -f3)"
  echo "adm_gid=$(getent group adm | cut -d: -f3)"
  echo "extensions=$(systemd-sysext list --no-legend 2>&1 | awk '{print $1}' | tr '\n' ' ')"
  if [ "$pid" != 0 ]; then
    # What Alloy's common sources read, read as Alloy: its uid and groups, in its mount
    # namespace (where ProtectSystem=, ProtectHome=, PrivateTmp= ... apply).
    uid=$(sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' /proc/$pid/status)
    gids=$(sed -n 's/^Groups:[[:space:]]*//p' /proc/$pid/status | xargs | tr ' ' ',')
    for check in "proc:cat /proc/stat" "sys:ls /sys/class/net" "varlog:ls /var/log" \
        "journal:journalctl -q -n 1 -o export --no-pager | grep -m 1 ^MESSAGE=" "config:cat /etc/alloy/config.alloy"; do
      if got=$(nsenter -t "$pid" -m -- setpriv --reuid="$uid" --regid="$uid" --groups="$gids" \
          --inh-caps=-all -- sh -c "${check#*:}" 2>&1) && [ -n "$got" ]; then
        echo "read_${check%%:*}=ok"
      else
        echo "read_${check%%:*}=failed: $(echo "$got" | tr "\n" " " | cut -c 1-200)"
      fi
    done
    systemctl reload alloy.service
    wait_for_log "reloaded pid=$pid "
  fi
  sed 's/^/state=/' "$log"
  if [ "$pid" = 0 ]; then
    # Not started at boot: start it by hand, with its config gone (as after a runtime merge).
    rm -f /etc/alloy/config.alloy
    systemctl start alloy.service
    wait_for_log "started "
    echo "by_hand=$(systemctl is-active alloy.service) $(grep -c started "$log")"
  fi
} > "$out.tmp" 2>&1
journalctl -b --no-pager > /root/alloy-journal.txt 2>&1
mv "$out.tmp" "$out"
systemctl poweroff
"#;

const REPORT_UNIT: &str = "\
[Unit]
Description=Report on alloy.service for the boot test, then power off

[Service]
Type=simple
ExecStart=/bin/sh /root/alloy-report.sh

[Install]
WantedBy=multi-user.target
";

#[test]
fn apt_mirror_comes_from_either_sources_format() {
    let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\nTypes: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n";
    assert_eq!(
        apt_mirror(deb822).as_deref(),
        Some("http://mirror.example/debian")
    );
    let one_line =
        "# deb http://old/\ndeb [arch=amd64] http://ftp.de.debian.org/debian bookworm main\n";
    assert_eq!(
        apt_mirror(one_line).as_deref(),
        Some("http://ftp.de.debian.org/debian")
    );
    assert_eq!(
        apt_mirror("deb https://packages.cloud.google.com/apt x main\n"),
        None
    );
}

/// The minimal Debian root with systemd, made once with debootstrap and cached
/// (support::debian).
fn debian_root() -> PathBuf {
    let root = support::debian::root(SUITE, PACKAGES);
    assert!(
        root.join("usr/lib/systemd/systemd").exists(),
        "{}",
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

/// One Flatcar-like host: a private copy of the Debian root, its state kept across boots.
struct Host {
    tmp: tempfile::TempDir,
    root: PathBuf,
    name: String,
}

impl Host {
    fn new(image: &Path, label: &str) -> Host {
        let base = debian_root();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        run(Command::new("cp").arg("-a").arg(&base).arg(&root));

        // Flatcar's identity, which is what the image's extension-release matches.
        let os_release = "ID=flatcar\nNAME=\"Flatcar-like boot test\"\nSYSEXT_LEVEL=1.0\n";
        for path in ["etc/os-release", "usr/lib/os-release"] {
            let _ = std::fs::remove_file(root.join(path));
            std::fs::write(root.join(path), os_release).unwrap();
        }
        let units = root.join("etc/systemd/system");
        std::fs::write(units.join("ensure-sysext.service"), ENSURE_SYSEXT).unwrap();
        std::fs::write(units.join("alloy-report.service"), REPORT_UNIT).unwrap();
        std::fs::write(root.join("root/alloy-report.sh"), REPORT_SCRIPT).unwrap();
        for (wants, unit, target) in [
            (
                "sysinit.target.wants",
                "systemd-sysext.service",
                "/usr/lib/systemd/system/systemd-sysext.service",
            ),
            (
                "sysinit.target.wants",
                "ensure-sysext.service",
                "../ensure-sysext.service",
            ),
            (
                "multi-user.target.wants",
                "alloy-report.service",
                "../alloy-report.service",
            ),
        ] {
            std::fs::create_dir_all(units.join(wants)).unwrap();
            std::os::unix::fs::symlink(target, units.join(wants).join(unit)).unwrap();
        }

        // Where Flatcar keeps sysexts: the versioned file, linked from /etc/extensions.
        let extensions = root.join("opt/extensions/alloy");
        std::fs::create_dir_all(&extensions).unwrap();
        std::fs::copy(image, extensions.join(IMAGE)).unwrap();
        std::fs::create_dir_all(root.join("etc/extensions")).unwrap();
        std::os::unix::fs::symlink(
            format!("/opt/extensions/alloy/{IMAGE}"),
            root.join("etc/extensions/alloy.raw"),
        )
        .unwrap();

        let name = format!("alloy-{label}-{}", std::process::id());
        Host { tmp, root, name }
    }

    /// Boots the host until the report unit powers it off, and returns the report.
    fn boot(&self) -> Report {
        let report = self.root.join("root/alloy-report.txt");
        let _ = std::fs::remove_file(&report);
        let console_path = self.tmp.path().join(format!("console-{}.log", self.name));
        let console = std::fs::File::create(&console_path).unwrap();
        let started = Instant::now();
        let mut child = Command::new("systemd-nspawn")
            .args(["--register=no", "--keep-unit", "--boot", "--console=pipe"])
            // On SIGTERM (a timed-out boot), nspawn kills the container's init, and with it
            // every process in the container's PID namespace.
            .arg("--kill-signal=SIGKILL")
            .arg(format!("--machine={}", self.name))
            .arg("-D")
            .arg(&self.root)
            .args(loop_device_binds())
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("running systemd-nspawn (bash scripts/install-deps.sh --test installs systemd-container)");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > BOOT_TIMEOUT {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let grace = Instant::now();
                while grace.elapsed() < Duration::from_secs(10) {
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let journal =
            std::fs::read_to_string(self.root.join("root/alloy-journal.txt")).unwrap_or_default();
        let context = || {
            format!(
                "--- console\n{}\n--- journal\n{journal}",
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

    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

struct Report {
    text: String,
    journal: String,
}

impl Report {
    fn values(&self, key: &str) -> Vec<&str> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    }

    fn get(&self, key: &str) -> &str {
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

fn build(args: &[&str]) -> (Workspace, PathBuf) {
    let release = Release::new(VERSION);
    let mirror = Mirror::start();
    mirror.add_release(&release);
    let ws = Workspace::new();
    ws.build(&mirror.base_url, VERSION, args).assert_ok();
    let image = ws.image(IMAGE);
    (ws, image)
}

/// Asserts Alloy runs as a non-root user in the journal's group, and returns its uid.
fn assert_running_unprivileged(report: &Report) -> String {
    assert_eq!(report.get("extensions").trim(), "alloy", "{report}");
    assert_eq!(report.get("active"), "active", "{report}");
    let uid = report.get("uid");
    assert!(
        uid != "0" && !uid.is_empty(),
        "alloy runs as uid {uid}\n{report}"
    );
    let groups: Vec<&str> = report.get("groups").split_whitespace().collect();
    for group in ["journal_gid", "adm_gid"] {
        let gid = report.get(group);
        assert!(
            !gid.is_empty() && groups.contains(&gid),
            "{group} {gid} not in {groups:?}\n{report}"
        );
    }
    // The hardening leaves what Alloy is there to read readable.
    for source in ["proc", "sys", "varlog", "journal", "config"] {
        assert_eq!(report.get(&format!("read_{source}")), "ok", "{report}");
    }
    uid.to_string()
}

#[test]
fn a_flatcar_like_host_runs_alloy_unprivileged_and_keeps_config_edits_across_boots() {
    if !support::require_root("booting a Flatcar-like host (systemd-nspawn, loop devices)") {
        return;
    }
    let (_ws, image) = build(&[]);
    let host = Host::new(&image, "autostart");

    let first = host.boot();
    let uid = assert_running_unprivileged(&first);
    // Seeded from the image's defaults by tmpfiles.d, readable by the dynamic user.
    let config = host.path("/etc/alloy/config.alloy");
    let seeded = std::fs::read_to_string(&config).unwrap();
    assert!(seeded.contains("prometheus.exporter.unix"), "{seeded}");
    let environment = std::fs::read_to_string(host.path("/etc/default/alloy")).unwrap();
    assert!(environment.contains("CONFIG_FILE=\"/etc/alloy/config.alloy\""));
    // State under /var/lib/alloy, written by Alloy as itself; SIGHUP reload reached it.
    assert_eq!(
        first.values("state"),
        [
            format!("started pid={} uid={uid} gid={uid}", first.get("pid")),
            format!("reloaded pid={} uid={uid} gid={uid}", first.get("pid")),
        ],
        "{first}"
    );
    let state_link = std::fs::read_link(host.path("/var/lib/alloy")).unwrap();
    assert_eq!(state_link, Path::new("private/alloy"));

    // The operator edits the config; the second boot keeps the edit and the state.
    let edited = format!("{seeded}\n// edited by the operator\n");
    std::fs::write(&config, &edited).unwrap();
    let second = host.boot();
    assert_running_unprivileged(&second);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    let states = second.values("state");
    assert_eq!(
        states.iter().filter(|s| s.starts_with("started ")).count(),
        2,
        "state from the first boot is kept:\n{second}"
    );
}

#[test]
fn built_with_no_autostart_alloy_is_installed_but_stays_inactive() {
    if !support::require_root("booting a Flatcar-like host (systemd-nspawn, loop devices)") {
        return;
    }
    let (_ws, image) = build(&["--no-autostart"]);
    let host = Host::new(&image, "no-autostart");
    let report = host.boot();
    assert_eq!(report.get("extensions").trim(), "alloy", "{report}");
    // Merged and known to the manager, but nobody started it.
    assert_eq!(report.get("load"), "loaded", "{report}");
    assert_eq!(report.get("active"), "inactive", "{report}");
    assert_eq!(report.get("pid"), "0", "{report}");
    assert!(report.values("state").is_empty(), "{report}");
    // Started by hand it runs, and seeds its config itself if the boot did not.
    assert_eq!(report.get("by_hand"), "active 1", "{report}");
    assert!(host.path("/etc/alloy/config.alloy").exists());
}
