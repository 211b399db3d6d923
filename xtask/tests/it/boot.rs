//! Boots a Flatcar-like host with the image: a minimal Debian root (debootstrap, cached) that
//! says it is Flatcar, with Flatcar's ensure-sysext.service, booted by systemd-nspawn with
//! systemd as PID 1. A unit inside reports on alloy.service and powers the container off.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use xtask_testkit::host::{Host, Merge, Report, Suite, BOOKWORM, TRIXIE};
use xtask_testkit::process::require_root;

use crate::support::{built, IMAGE, VERSION};

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
    sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/uid=\1/p; s/^Gid:[[:space:]]*\([0-9]*\).*/gid=\1/p; s/^Groups:[[:space:]]*/groups=/p' /proc/$pid/status
  fi
  echo "alloy_uid=$(id -u alloy)"
  echo "journal_gid=$(getent group systemd-journal | cut -d: -f3)"
  echo "adm_gid=$(getent group adm | cut -d: -f3)"
  echo "extensions=$(systemd-sysext list --no-legend 2>&1 | awk '{print $1}' | tr '\n' ' ')"
  if [ "$pid" != 0 ]; then
    # What Alloy's common sources read, read as Alloy: its uid and groups, in its mount
    # namespace (where ProtectSystem=, ProtectHome=, PrivateTmp= ... apply).
    uid=$(sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' /proc/$pid/status)
    gid=$(sed -n 's/^Gid:[[:space:]]*\([0-9]*\).*/\1/p' /proc/$pid/status)
    gids=$(sed -n 's/^Groups:[[:space:]]*//p' /proc/$pid/status | xargs | tr ' ' ',')
    for check in "proc:cat /proc/stat" "sys:ls /sys/class/net" "varlog:ls /var/log" \
        "journal:journalctl -q -n 1 -o export --no-pager | grep -m 1 ^MESSAGE=" "config:cat /etc/alloy/config.alloy"; do
      if got=$(nsenter -t "$pid" -m -- setpriv --reuid="$uid" --regid="$gid" --groups="$gids" \
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

/// A Flatcar-like host of `suite` (named after `label`) with the image built with `args`
/// installed; None, saying so, where the test cannot run (not root, outside CI).
fn host_with_image(suite: &Suite, label: &str, args: &[&str]) -> Option<Host> {
    if !require_root("booting a Flatcar-like host (systemd-nspawn, loop devices)") {
        return None;
    }
    let ws = built(args);
    let host = Host::new(suite, label, Merge::EnsureSysext, REPORT_SCRIPT);
    host.install_image(&ws.image(IMAGE));
    Some(host)
}

/// The state directory and what Alloy wrote there are plain files of `uid` (not
/// DynamicUser='s link into /var/lib/private).
fn assert_state_owned_by(host: &Host, uid: &str) {
    for path in ["/var/lib/alloy", "/var/lib/alloy/data/fake-alloy.log"] {
        let meta = std::fs::symlink_metadata(host.path(path)).unwrap();
        assert!(!meta.file_type().is_symlink(), "{path}");
        assert_eq!(meta.uid().to_string(), uid, "{path}");
    }
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
    // The static user the image's sysusers.d line made, not a dynamic one.
    assert_eq!(uid, report.get("alloy_uid"), "{report}");
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

/// Boots a host of `suite` twice: Alloy runs unprivileged, reads what it is there to read,
/// reloads, and keeps the operator's edit and its state across boots.
fn runs_alloy_unprivileged_and_keeps_config_edits_across_boots(suite: &Suite) {
    let label = format!("autostart-{}", suite.name);
    let Some(host) = host_with_image(suite, &label, &[]) else {
        return;
    };
    // /etc/default is the host's: a mode it chose survives the image's tmpfiles.d lines.
    let etc_default = host.path("/etc/default");
    std::fs::set_permissions(&etc_default, std::fs::Permissions::from_mode(0o700)).unwrap();

    let first = host.boot();
    let uid = assert_running_unprivileged(&first);
    let mode = std::fs::metadata(&etc_default).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700, "/etc/default is {mode:o} after boot\n{first}");
    let gid = first.get("gid");
    assert_ne!(gid, "0", "{first}");
    // Seeded from the image's defaults by tmpfiles.d, readable by the alloy group.
    let config = host.path("/etc/alloy/config.alloy");
    let seeded = std::fs::read_to_string(&config).unwrap();
    assert!(seeded.contains("prometheus.exporter.unix"), "{seeded}");
    let environment = std::fs::read_to_string(host.path("/etc/default/alloy")).unwrap();
    assert!(environment.contains("CONFIG_FILE=\"/etc/alloy/config.alloy\""));
    // State under /var/lib/alloy, written by Alloy as itself; SIGHUP reload reached it.
    assert_eq!(
        first.values("state"),
        [
            format!(
                "started pid={} uid={uid} gid={gid} version={VERSION}",
                first.get("pid")
            ),
            format!(
                "reloaded pid={} uid={uid} gid={gid} version={VERSION}",
                first.get("pid")
            ),
        ],
        "{first}"
    );
    assert_state_owned_by(&host, &uid);

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
fn a_flatcar_like_host_runs_alloy_unprivileged_and_keeps_config_edits_across_boots() {
    runs_alloy_unprivileged_and_keeps_config_edits_across_boots(&BOOKWORM);
}

/// The same on systemd 257, Flatcar stable's: the hardening, Upholds= and the static user.
#[test]
fn on_systemd_257_alloy_runs_unprivileged_and_keeps_config_edits_across_boots() {
    runs_alloy_unprivileged_and_keeps_config_edits_across_boots(&TRIXIE);
}

#[test]
fn built_with_no_autostart_alloy_is_installed_but_stays_inactive() {
    let Some(host) = host_with_image(&BOOKWORM, "no-autostart", &["--no-autostart"]) else {
        return;
    };
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

#[test]
fn state_left_by_the_dynamic_user_of_earlier_images_moves_to_the_alloy_user() {
    let Some(host) = host_with_image(&BOOKWORM, "from-dynamic-user", &[]) else {
        return;
    };
    // What DynamicUser= left on a host that ran an earlier image: the state in
    // /var/lib/private/alloy, owned by a uid that no longer exists, and a link to it.
    let private = host.path("/var/lib/private/alloy/data");
    std::fs::create_dir_all(&private).unwrap();
    let earlier = "started pid=1 uid=61234 gid=61234 version=1.10.1\n";
    std::fs::write(private.join("fake-alloy.log"), earlier).unwrap();
    for path in ["/var/lib/private/alloy", "/var/lib/private/alloy/data"] {
        std::os::unix::fs::chown(host.path(path), Some(61234), Some(61234)).unwrap();
    }
    std::os::unix::fs::lchown(private.join("fake-alloy.log"), Some(61234), Some(61234)).unwrap();
    std::os::unix::fs::symlink("private/alloy", host.path("/var/lib/alloy")).unwrap();

    let report = host.boot();
    let uid = assert_running_unprivileged(&report);
    // systemd moved the directory back and gave it, contents included, to the static user:
    // Alloy appended to the log it had before.
    let states = report.values("state");
    assert_eq!(
        states.first().copied(),
        Some(earlier.trim_end()),
        "{report}"
    );
    assert!(
        states.get(1).is_some_and(|s| s.starts_with("started ")),
        "{report}"
    );
    assert_state_owned_by(&host, &uid);
}
