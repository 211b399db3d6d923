//! Day 2 on a Flatcar-like host, with the real systemd-sysupdate: a host provisioned with the
//! Butane config `cargo xtask butane --sysupdate` writes boots with Alloy 1.10.2; 1.11.0 is
//! published to a loopback bucket with a signed SHA256SUMS (and 1.11.0-rc.1 to its rc folder);
//! `alloy-sysupdate.service`, as generated, installs the new image, and the running Alloy
//! becomes the new one with the operator's config and state intact. Booted on systemd 252
//! (Debian 12) and 257 (Debian 13), with extensions merged by ensure-sysext.service or before
//! init, as the two generations of Flatcar do.
//!
//! The real systemd-sysupdate and systemd-pull (257) come from `scripts/build-sysupdate.sh`
//! (cached; `scripts/install-deps.sh --test` runs it) and are bound into the host.

use std::collections::BTreeMap;
use std::process::Command;

use xtask_testkit::fixture::{sha256_hex, Release};
use xtask_testkit::free_port;
use xtask_testkit::gpg::TestKey;
use xtask_testkit::host::{Host, Merge, Report, Suite, BOOKWORM, TRIXIE};
use xtask_testkit::http::{Answer, Server};
use xtask_testkit::mirror::Mirror;
use xtask_testkit::process::require_root;
use xtask_testkit::{checked_output, checked_output_with_input, Workspace};

use crate::support::{parse_yaml, sysupdate_build, workspace, XTASK};
use Signer::{Stranger, Trusted};

pub(crate) const INSTALLED: &str = "1.10.2";
const RELEASE: &str = "1.11.0";
const CANDIDATE: &str = "1.11.0-rc.1";
/// Where the host sees the real systemd-sysupdate build: not under /usr or /opt, which a
/// merge covers with an overlay.
const SYSUPDATE_INSIDE: &str = "/srv/systemd-sysupdate";
const SECRET: &str = "/etc/alloy/remote-write.password";

pub(crate) fn image(version: &str) -> String {
    format!("alloy-{version}-amd64.raw")
}

/// Shell functions for the report scripts of this module and of `healing`, which read Alloy's
/// state log from `$log`: `alloy_pid` and `start_update`. A script holds the line
/// `UPDATE_FUNCTIONS` where they belong ([`with_update_functions`]).
const UPDATE_FUNCTIONS: &str = r#"# The main pid of alloy.service once that process is Alloy itself (it logged its start).
alloy_pid() {
  i=0
  while [ "$i" -lt 80 ]; do
    pid=$(systemctl show -p MainPID --value alloy.service)
    if [ "$pid" != 0 ] && grep -q "^started pid=$pid " "$log" 2>/dev/null; then echo "$pid"; return; fi
    sleep 0.25; i=$((i+1))
  done
  echo 0
}
# Starts alloy-sysupdate.service as its timer would, and prints ok or failed. The test machine
# emulates cgroups: now and then a unit's cgroup is gone when systemd spawns into it (systemd
# 252 reports 219/CGROUP, 257 result 'resources'), which no real host does. Such a start is
# retried once, after a pause, and reported; any other failure is the update's own.
start_update() {
  if systemctl start alloy-sysupdate.service; then echo ok; return; fi
  result=$(systemctl show -p Result --value alloy-sysupdate.service)
  status=$(systemctl show -p ExecMainStatus --value alloy-sysupdate.service)
  if [ "$result" = resources ] || [ "$status" = 219 ]; then
    echo "retrying alloy-sysupdate.service after a cgroup spawn failure ($result $status)" >&2
    sleep 2
    if systemctl start alloy-sysupdate.service; then echo ok; return; fi
  fi
  echo failed
}
"#;

/// `script` with [`UPDATE_FUNCTIONS`] in place of its line `UPDATE_FUNCTIONS`.
pub(crate) fn with_update_functions(script: &str) -> String {
    script.replace("UPDATE_FUNCTIONS\n", UPDATE_FUNCTIONS)
}

/// Runs inside the booted host: reports on the running Alloy and on who can read its files,
/// edits its config (and reloads) the way an operator would, then runs the update exactly as
/// the timer would (the generated alloy-sysupdate.service), and reports again.
const REPORT_SCRIPT: &str = r#"#!/bin/sh
out=/root/alloy-report.txt
log=/var/lib/alloy/data/fake-alloy.log
# Polls (at most 20 s) until Alloy's state log has a line starting with $1.
wait_for_log() {
  i=0
  while [ "$i" -lt 80 ] && ! grep -q "^$1" "$log" 2>/dev/null; do sleep 0.25; i=$((i+1)); done
}
UPDATE_FUNCTIONS
timeout 90 systemctl is-system-running --wait >/dev/null 2>&1
{
  echo "system=$(systemctl is-system-running)"
  echo "failed_units=$(systemctl list-units --state=failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
  echo "systemd=$(systemctl --version | head -n 1 | cut -d' ' -f2)"
  echo "extensions=$(systemd-sysext list --no-legend 2>&1 | awk '{print $1}' | tr '\n' ' ')"
  echo "sysext_service=$(systemctl is-active systemd-sysext.service)"
  echo "timer=$(systemctl is-enabled alloy-sysupdate.timer) $(systemctl is-active alloy-sysupdate.timer)"
  echo "sysupdate=$(/usr/lib/systemd/systemd-sysupdate --version | head -n 1)"
  pid=$(alloy_pid)
  echo "before_pid=$pid"
  echo "alloy_uid=$(id -u alloy)"
  # Who can read Alloy's files: root and the alloy group, no other local user.
  for f in /etc/alloy /etc/alloy/config.alloy /etc/default/alloy /etc/alloy/remote-write.password; do
    echo "mode=$f $(stat -c '%a %U:%G' "$f")"
  done
  for f in /etc/alloy/config.alloy /etc/default/alloy /etc/alloy/remote-write.password; do
    if setpriv --reuid=65534 --regid=65534 --clear-groups cat "$f" >/dev/null 2>&1; then
      echo "nobody=read $f"
    else
      echo "nobody=denied $f"
    fi
  done
  # The operator's edit, applied by a reload, before any update.
  echo '// edited on the host before the update' >> /etc/alloy/config.alloy
  systemctl reload alloy.service
  wait_for_log "reloaded pid=$pid "
  # The update, as alloy-sysupdate.timer starts it.
  echo "update=$(start_update)"
  after=$(alloy_pid)
  echo "after_pid=$after"
  echo "after_active=$(systemctl is-active alloy.service)"
  echo "after_binary=$(/usr/bin/alloy --version | head -n 1)"
  echo "after_exe=$(readlink /proc/$after/exe)"
  echo "link=$(readlink -f /etc/extensions/alloy.raw)"
  echo "extensions_after=$(systemd-sysext list --no-legend 2>&1 | awk '{print $1}' | tr '\n' ' ')"
  # Nothing new: the next run changes nothing and restarts nothing.
  echo "second_update=$(start_update)"
  echo "final_pid=$(systemctl show -p MainPID --value alloy.service)"
  # The README's rollback, when there is something to roll back from: hold the previous
  # version (1.10.2, the one Butane installed); then the timer's next run.
  previous=/opt/extensions/alloy/alloy-1.10.2-amd64.raw
  if [ "$(readlink -f /etc/extensions/alloy.raw)" != "$previous" ]; then
    # Checked as the update unit checks (its test drop-in): 3 s steady, not 15.
    if ALLOY_SYSUPDATE_STEADY=3 /opt/bin/alloy-sysupdate hold 1.10.2 >/root/hold.log 2>&1; then echo "hold=ok"; else echo "hold=failed"; fi
    echo "rollback_pid=$(alloy_pid)"
    echo "rollback_binary=$(/usr/bin/alloy --version | head -n 1)"
    echo "rollback_update=$(start_update)"
    echo "rollback_link=$(readlink -f /etc/extensions/alloy.raw)"
    echo "rollback_final_pid=$(systemctl show -p MainPID --value alloy.service)"
  fi
  echo "failed_at_end=$(systemctl list-units --state=failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
  sed 's/^/state=/' "$log"
} > "$out.tmp" 2>&1
journalctl -b --no-pager > /root/alloy-journal.txt 2>&1
mv "$out.tmp" "$out"
systemctl poweroff
"#;

/// Alloy's config as an operator's Ignition config writes it before the first boot: 0600
/// root:root (the alloy group does not exist yet), referencing a secret the same way Alloy's
/// `local.file` does.
const OPERATOR_CONFIG: &str = r#"// Written by Ignition before the first boot.
local.file "password" {
  filename  = "/etc/alloy/remote-write.password"
  is_secret = true
}
"#;

/// The bucket's public domain on loopback, laid out as publish lays it out: images and a
/// signed SHA256SUMS at the root for releases, and the same under rc/ for release candidates.
pub(crate) struct Bucket {
    pub(crate) server: Server,
    files: BTreeMap<String, Vec<u8>>,
}

impl Bucket {
    pub(crate) fn new() -> Bucket {
        Bucket {
            server: Server::start(),
            files: BTreeMap::new(),
        }
    }

    fn put(&mut self, key: &str, bytes: Vec<u8>) {
        self.server
            .answer(&format!("/{key}"), Answer::ok(bytes.clone()));
        self.files.insert(key.to_string(), bytes);
    }

    /// Publishes `images` (name -> bytes) under `prefix`, with their SHA256SUMS and its signature.
    pub(crate) fn publish(&mut self, prefix: &str, images: &[(String, Vec<u8>)], key: &TestKey) {
        let mut sums = String::new();
        for (name, bytes) in images {
            sums.push_str(&format!("{}  {name}\n", sha256_hex(bytes)));
            self.put(&format!("{prefix}{name}"), bytes.clone());
        }
        self.put(
            &format!("{prefix}SHA256SUMS.gpg"),
            key.sign(sums.as_bytes()),
        );
        self.put(&format!("{prefix}SHA256SUMS"), sums.into_bytes());
    }

    /// The bytes behind a URL of this bucket.
    fn get(&self, url: &str) -> &[u8] {
        let key = url
            .strip_prefix(&format!("{}/", self.server.url))
            .unwrap_or_else(|| panic!("{url} is not on the test bucket"));
        self.files
            .get(key)
            .unwrap_or_else(|| panic!("{key} is not on the test bucket"))
    }

    pub(crate) fn requested(&self) -> Vec<String> {
        self.server.log().into_iter().map(|s| s.path).collect()
    }
}

/// The images of the three versions, built by `cargo xtask build` from fixture releases.
fn build_images() -> (Workspace, BTreeMap<&'static str, Vec<u8>>) {
    let mirror = Mirror::start();
    let ws = workspace();
    let mut images = BTreeMap::new();
    for version in [INSTALLED, RELEASE, CANDIDATE] {
        mirror.add_release(&Release::new(version));
        ws.build(&mirror.base_url, version, &[]).assert_ok();
        images.insert(version, std::fs::read(ws.image(&image(version))).unwrap());
    }
    (ws, images)
}

fn base64_decode(text: &str) -> Vec<u8> {
    checked_output_with_input(Command::new("base64").arg("-d"), text.as_bytes())
}

/// Does to the host's root what Ignition does with the Butane config (translated as
/// `butane --strict` would): files with their mode (downloads checked against
/// `verification.hash`, `data:` URLs decoded), links, units written to /etc/systemd/system and
/// enabled through their [Install] section.
fn provision(host: &Host, butane: &str, bucket: &Bucket) {
    use std::os::unix::fs::PermissionsExt;
    let config = parse_yaml(butane);
    assert_eq!(config["variant"], "flatcar", "{butane}");
    for file in config["storage"]["files"].as_array().unwrap() {
        let path = host.path(file["path"].as_str().unwrap());
        let contents = &file["contents"];
        let bytes = if let Some(inline) = contents["inline"].as_str() {
            inline.as_bytes().to_vec()
        } else {
            let source = contents["source"].as_str().unwrap();
            if let Some(data) = source.strip_prefix("data:;base64,") {
                base64_decode(data)
            } else {
                let bytes = bucket.get(source).to_vec();
                let expected = contents["verification"]["hash"].as_str().unwrap();
                assert_eq!(
                    format!("sha256-{}", sha256_hex(&bytes)),
                    expected,
                    "{source}"
                );
                bytes
            }
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let mode = file["mode"].as_u64().unwrap() as u32;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for link in config["storage"]["links"].as_array().unwrap() {
        assert_eq!(link["hard"], false);
        let path = host.path(link["path"].as_str().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(link["target"].as_str().unwrap(), path).unwrap();
    }
    let units = host.path("/etc/systemd/system");
    for unit in config["systemd"]["units"].as_array().unwrap() {
        let name = unit["name"].as_str().unwrap();
        std::fs::write(units.join(name), unit["contents"].as_str().unwrap()).unwrap();
        if unit["enabled"] == true {
            checked_output(
                Command::new("systemctl")
                    .arg(format!("--root={}", host.root.display()))
                    .args(["enable", name]),
            );
        }
    }
}

/// Files the operator's Ignition config adds before the first boot: the config, 0600, a secret
/// it references, 0640 (neither can be owned by the alloy group yet), and Alloy's settings with
/// a listen address of its own (the booted hosts share the test machine's network).
pub(crate) fn write_operator_files(host: &Host) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(host.path("/etc/alloy")).unwrap();
    let settings = format!(
        "CUSTOM_ARGS=\"--server.http.listen-addr=127.0.0.1:{}\"\n",
        free_port()
    );
    std::fs::create_dir_all(host.path("/etc/default")).unwrap();
    for (path, text, mode) in [
        ("/etc/alloy/config.alloy", OPERATOR_CONFIG, 0o600),
        (SECRET, "s3cr3t\n", 0o640),
        ("/etc/default/alloy", settings.as_str(), 0o644),
    ] {
        std::fs::write(host.path(path), text).unwrap();
        std::fs::set_permissions(host.path(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// Provisions `host` of `suite` with `butane` (as Ignition would, images from `bucket`) and the
/// operator's files, and makes it ready for a test that updates it: the timer's runs moved out
/// of the test's way, health checks kept short, the real systemd-sysupdate of its systemd.
pub(crate) fn provision_for_updates(host: &mut Host, suite: &Suite, butane: &str, bucket: &Bucket) {
    provision(host, butane, bucket);
    write_operator_files(host);
    for (unit, drop_in, text) in [
        // The container's boot clock is the test machine's, whose boot is long past the timer's
        // OnBootSec=15min: it would fire at once and race the report's own run. Push the first
        // run an hour out (and no Saturday run); the report checks the timer is active, and
        // starts the service as it would.
        (
            "alloy-sysupdate.timer",
            "test-not-now.conf",
            "[Timer]\nOnBootSec=\nOnCalendar=\nOnActiveSec=1h\n",
        ),
        // Alloy must stay ready 3 s after a switch rather than 15: the same check, quicker.
        (
            "alloy-sysupdate.service",
            "test-quicker.conf",
            "[Service]\nEnvironment=ALLOY_SYSUPDATE_STEADY=3\n",
        ),
    ] {
        let dir = host.path(&format!("/etc/systemd/system/{unit}.d"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(drop_in), text).unwrap();
    }
    // The real client of the host's systemd, where Flatcar has it: 257 runs systemd-pull from
    // its own directory, 252 from /usr/lib/systemd.
    host.bind_ro(&sysupdate_build(suite.systemd), SYSUPDATE_INSIDE);
    for binary in ["systemd-sysupdate", "systemd-pull"] {
        let path = host.path(&format!("/usr/lib/systemd/{binary}"));
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(format!("{SYSUPDATE_INSIDE}/{binary}"), path).unwrap();
    }
}

pub(crate) fn xtask_butane(
    ws: &Workspace,
    bucket: &Bucket,
    key: &TestKey,
    channel: &str,
) -> String {
    checked_output(
        Command::new(XTASK)
            .env_remove("SYSEXT_BASE_URL")
            .args(["butane", INSTALLED, "--sysupdate", "--channel", channel])
            .arg("--dist")
            .arg(&ws.out)
            .args(["--base-url", &bucket.server.url])
            .arg("--keyring")
            .arg(&key.public),
    )
}

/// Who signed the bucket's indexes.
#[derive(PartialEq)]
enum Signer {
    /// The key Butane gives the host.
    Trusted,
    /// A key the host does not know.
    Stranger,
}

/// A host updated by its timer's service: the host, its report, and what the bucket served.
struct Updated {
    host: Host,
    report: Report,
    requested: Vec<String>,
}

/// Provisions a host from `cargo xtask butane 1.10.2 --sysupdate --channel CHANNEL`, boots
/// it, updates it as its timer would, and returns what came of it; None, saying so, where the
/// test cannot run (not root, outside CI).
fn boot_and_update(suite: &Suite, merge: Merge, channel: &str, signer: Signer) -> Option<Updated> {
    let reason = "booting a Flatcar-like host (systemd-nspawn, loop devices) and updating it";
    if !require_root(reason) {
        return None;
    }
    let (ws, images) = build_images();
    let key = TestKey::new("upgrade");
    let stranger = (signer == Signer::Stranger).then(|| TestKey::new("stranger"));
    let signer = stranger.as_ref().unwrap_or(&key);
    let mut bucket = Bucket::new();
    let release_images: Vec<(String, Vec<u8>)> = [INSTALLED, RELEASE]
        .iter()
        .map(|v| (image(v), images[v].clone()))
        .collect();
    bucket.publish("", &release_images, signer);
    bucket.publish(
        "rc/",
        &[(image(CANDIDATE), images[CANDIDATE].clone())],
        signer,
    );

    let label = format!(
        "{}-{}-{}",
        suite.name,
        channel,
        format!("{merge:?}").to_lowercase()
    );
    let script = with_update_functions(REPORT_SCRIPT);
    let mut host = Host::new(suite, &label, merge, &script);
    let butane = xtask_butane(&ws, &bucket, &key, channel);
    provision_for_updates(&mut host, suite, &butane, &bucket);

    let report = host.boot();
    assert_eq!(report.get("systemd"), suite.systemd.to_string(), "{report}");
    // The real client of this systemd ran, not some other systemd-sysupdate.
    assert!(
        report
            .get("sysupdate")
            .starts_with(&format!("systemd {} ", suite.systemd)),
        "{report}"
    );
    // Extensions came from where this variant merges them.
    let sysext_service = match merge {
        Merge::EnsureSysext => "active",
        Merge::BeforeInit => "inactive",
    };
    assert_eq!(report.get("sysext_service"), sysext_service, "{report}");
    // Butane's `enabled: true` took effect.
    assert_eq!(report.get("timer"), "enabled active", "{report}");
    // 257 reads alloy.transfer, and would warn had it fallen back to alloy.conf (which is
    // there for 252, the only name 252 reads).
    assert!(
        !report
            .journal
            .contains("transfer definitions should have the '.transfer' extension"),
        "{report}"
    );
    let requested = bucket.requested();
    Some(Updated {
        host,
        report,
        requested,
    })
}

/// The state log lines of the process `pid`.
fn events<'a>(report: &'a Report, pid: &str) -> Vec<&'a str> {
    report
        .values("state")
        .into_iter()
        .filter(|l| l.contains(&format!(" pid={pid} ")))
        .collect()
}

impl Updated {
    /// Alloy moved from 1.10.2 to `expected` without a reboot, with config and state intact.
    fn assert_moved_to(&self, expected: &str) {
        assert_moved_to(&self.host, &self.report, &self.requested, expected);
    }
}

fn assert_moved_to(host: &Host, report: &Report, requested: &[String], expected: &str) {
    assert_eq!(report.get("system"), "running", "{report}");
    assert_eq!(report.get("extensions").trim(), "alloy", "{report}");
    assert_eq!(report.get("update"), "ok", "{report}");

    // Before: 1.10.2, as the alloy user, reloaded after the operator's edit.
    let uid = report.get("alloy_uid");
    let before = report.get("before_pid");
    assert_ne!(before, "0", "alloy was not running after boot\n{report}");
    let old = events(report, before);
    assert!(
        old.len() == 3
            && old[0].starts_with("started ")
            && old[1].starts_with("reloaded ")
            && old[2].starts_with("stopped ")
            && old
                .iter()
                .all(|l| l.ends_with(&format!(" version={INSTALLED}"))
                    && l.contains(&format!(" uid={uid} "))),
        "1.10.2 should have started, reloaded and been stopped for the update: {old:?}\n{report}"
    );

    // After: the running process is the new Alloy, restarted by the update.
    let after = report.get("after_pid");
    assert!(after != "0" && after != before, "{report}");
    assert_eq!(report.get("after_active"), "active", "{report}");
    let started = format!(
        "started pid={after} uid={uid} gid={} version={expected}",
        gid(report, after)
    );
    assert_eq!(
        events(report, after).first().copied(),
        Some(started.as_str()),
        "{report}"
    );
    assert_on(report, ("after_binary", "link"), expected);
    assert_eq!(report.get("after_exe"), "/usr/bin/alloy", "{report}");
    assert_eq!(report.get("extensions_after").trim(), "alloy", "{report}");
    // A second run finds nothing newer: no restart.
    assert_eq!(report.get("second_update"), "ok", "{report}");
    assert_eq!(report.get("final_pid"), after, "{report}");

    // The README's rollback works: held at 1.10.2, which runs again, and the timer's next run
    // leaves it there.
    assert_eq!(report.get("hold"), "ok", "{report}");
    let rollback = report.get("rollback_pid");
    assert!(rollback != "0" && rollback != after, "{report}");
    assert_on(report, ("rollback_binary", "rollback_link"), INSTALLED);
    assert_eq!(
        events(report, rollback)
            .first()
            .map(|l| l.ends_with(&format!(" version={INSTALLED}"))),
        Some(true),
        "{report}"
    );
    assert_eq!(report.get("rollback_update"), "ok", "{report}");
    assert_eq!(report.get("rollback_final_pid"), rollback, "{report}");

    // The operator's config edit is intact; the held image is the only one left, so that no
    // systemd-sysupdate run can remove it (it keeps the newest installed).
    let config = std::fs::read_to_string(host.path("/etc/alloy/config.alloy")).unwrap();
    assert!(
        config.starts_with(OPERATOR_CONFIG)
            && config.ends_with("// edited on the host before the update\n"),
        "{config}"
    );
    assert_eq!(host.installed_images(), [image(INSTALLED)], "{report}");
    let held = std::fs::read_to_string(host.path("/var/lib/alloy-sysupdate/hold")).unwrap();
    assert_eq!(held, format!("{INSTALLED}\n"));
    // The signature was fetched: Verify=yes was in force with the key Butane installed.
    assert!(
        requested.iter().any(|p| p.ends_with("/SHA256SUMS.gpg")),
        "{requested:?}"
    );
}

/// The report's `binary` key says Alloy `version` runs, and its `link` key that
/// /etc/extensions/alloy.raw leads to that version's image.
fn assert_on(report: &Report, (binary, link): (&str, &str), version: &str) {
    let banner = format!("alloy, version v{version} ");
    assert!(report.get(binary).starts_with(&banner), "{report}");
    let installed = format!("/opt/extensions/alloy/{}", image(version));
    assert_eq!(report.get(link), installed, "{report}");
}

/// The gid the state log reports for `pid`.
fn gid(report: &Report, pid: &str) -> String {
    events(report, pid)
        .first()
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("gid=")))
        .unwrap_or_else(|| panic!("no state line for pid {pid}\n{report}"))
        .to_string()
}

/// Nobody but root and the alloy group reads Alloy's configuration, and Alloy reads the secret
/// the operator wrote 0640 before the first boot, in both versions.
fn assert_private(report: &Report) {
    let modes = report.values("mode");
    for (path, mode) in [
        ("/etc/alloy", "750 root:alloy"),
        ("/etc/alloy/config.alloy", "640 root:alloy"),
        ("/etc/default/alloy", "640 root:alloy"),
        (SECRET, "640 root:alloy"),
    ] {
        assert!(
            modes.contains(&format!("{path} {mode}").as_str()),
            "{path} should be {mode}: {modes:?}\n{report}"
        );
    }
    let mut nobody = report.values("nobody");
    nobody.sort();
    assert_eq!(
        nobody,
        [
            "denied /etc/alloy/config.alloy",
            "denied /etc/alloy/remote-write.password",
            "denied /etc/default/alloy",
        ],
        "{report}"
    );
    let reads = report
        .values("state")
        .into_iter()
        .filter(|l| l.starts_with("read "))
        .collect::<Vec<_>>();
    // Each time Alloy read its config: every start and reload, old version and new.
    let config_reads = report
        .values("state")
        .into_iter()
        .filter(|l| l.starts_with("started ") || l.starts_with("reloaded "))
        .count();
    assert!(config_reads >= 3, "{report}");
    assert_eq!(
        reads,
        vec![format!("read {SECRET} ok"); config_reads],
        "Alloy should read the secret each time it reads its config\n{report}"
    );
}

/// A stable host of `suite`, merging as `merge` says, updated: Alloy moved to the release and
/// its secrets stayed private.
fn updated_to_the_release(suite: &Suite, merge: Merge) -> Option<Updated> {
    let update = boot_and_update(suite, merge, "stable", Trusted)?;
    update.assert_moved_to(RELEASE);
    assert_private(&update.report);
    Some(update)
}

#[test]
fn on_systemd_252_an_update_moves_the_running_alloy_to_the_new_release_and_secrets_stay_private() {
    if let Some(update) = updated_to_the_release(&BOOKWORM, Merge::EnsureSysext) {
        // A stable host never looks at the rc folder, where 1.11.0-rc.1 waits.
        let requested = update.requested;
        assert!(
            !requested.iter().any(|p| p.starts_with("/rc/")),
            "{requested:?}"
        );
    }
}

#[test]
fn a_host_on_the_rc_channel_gets_the_release_candidate() {
    if let Some(update) = boot_and_update(&BOOKWORM, Merge::EnsureSysext, "rc", Trusted) {
        update.assert_moved_to(CANDIDATE);
        // Its index is the rc folder's only; the stable one is not read at all.
        let requested = update.requested;
        let asked = |path: &str| requested.iter().any(|p| p == path);
        assert!(
            asked("/rc/SHA256SUMS") && !asked("/SHA256SUMS"),
            "{requested:?}"
        );
    }
}

#[test]
fn on_systemd_257_an_update_moves_the_running_alloy_to_the_new_release() {
    updated_to_the_release(&TRIXIE, Merge::EnsureSysext);
}

#[test]
fn with_extensions_merged_before_init_as_newer_flatcar_alloy_starts_and_updates() {
    if let Some(update) = updated_to_the_release(&TRIXIE, Merge::BeforeInit) {
        let ensure_sysext = "/etc/systemd/system/ensure-sysext.service";
        assert!(
            !update.host.path(ensure_sysext).exists(),
            "this variant must not have Flatcar's ensure-sysext.service"
        );
    }
}

#[test]
fn an_index_signed_by_another_key_is_refused_and_the_running_alloy_stays() {
    let Some(Updated {
        host,
        report,
        requested,
    }) = boot_and_update(&BOOKWORM, Merge::EnsureSysext, "stable", Stranger)
    else {
        return;
    };
    // Only alloy-sysupdate.service fails; Alloy 1.10.2 runs on, untouched.
    assert_eq!(report.get("update"), "failed", "{report}");
    assert_eq!(
        report.get("failed_at_end").trim(),
        "alloy-sysupdate.service",
        "{report}"
    );
    assert!(
        report
            .journal
            .contains("DOWNLOAD INVALID: Signature verification failed"),
        "the update should fail on the signature\n{report}"
    );
    assert_eq!(report.get("second_update"), "failed", "{report}");
    let before = report.get("before_pid");
    assert_ne!(before, "0", "{report}");
    assert_eq!(report.get("after_pid"), before, "{report}");
    assert_eq!(report.get("final_pid"), before, "{report}");
    assert_on(&report, ("after_binary", "link"), INSTALLED);
    assert_eq!(host.installed_images(), [image(INSTALLED)], "{report}");
    // It got as far as the signature, and no image was downloaded.
    assert!(
        requested.iter().any(|p| p == "/SHA256SUMS.gpg"),
        "{requested:?}"
    );
    assert!(
        !requested.iter().any(|p| p.ends_with(".raw")),
        "{requested:?}"
    );
}
