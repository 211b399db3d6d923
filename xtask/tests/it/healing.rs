//! Day 3 on a Flatcar-like host, with the real systemd-sysupdate: updates that heal themselves.
//! One host per systemd (252, 257), provisioned by `cargo xtask butane --sysupdate` with 1.10.2,
//! goes through these in one boot, the test publishing releases to its loopback bucket when the
//! host asks:
//! 1. another hand (`systemd-sysupdate -C alloy update`, what `updatectl` does) moves the link to
//!    1.11.0: the next alloy-sysupdate.service run makes the running Alloy 1.11.0;
//! 2. another hand moves it to 1.11.1 while a broken extension beside ours makes every
//!    `systemd-sysext refresh` fail: the run fails, the link goes back, the previous merge stays
//!    in place and Alloy runs on; once the broken extension is gone, the next run applies 1.11.1;
//! 3. 1.12.0's Alloy rejects the configuration (and exits at `run`): rolled back before Alloy is
//!    restarted, recorded, and never downloaded again;
//! 4. 1.13.0's Alloy passes `alloy validate` but exits at `run`: restarted, found not to come up,
//!    rolled back, 1.11.1 running and ready again;
//! 5. 1.14.0 is an image systemd-sysext refuses (built for arm64): rolled back, merged again;
//! 6. a still newer good release, 1.15.0, is installed and runs;
//! 7. `alloy-sysupdate hold 1.11.1` brings 1.11.1 back and keeps it while 1.16.0 is published;
//!    another hand's update then keeps the held image; after `unhold` the next run applies 1.16.0;
//! 8. an operator's typo makes Alloy exit at start: it restarts every 5 s, never failing for good,
//!    and alloy-setup.service never fails with it.

use std::collections::BTreeMap;

use xtask_testkit::fixture::{Behaviour, Release};
use xtask_testkit::gpg::TestKey;
use xtask_testkit::host::{Host, Merge, Report, Suite, ASK_TEST, BOOKWORM, TRIXIE};
use xtask_testkit::mirror::Mirror;
use xtask_testkit::process::require_root;

use crate::support::workspace;
use crate::upgrade::{
    image, provision_for_updates, with_update_functions, xtask_butane, Bucket, INSTALLED,
};

/// The releases the host meets, in order, each with how its Alloy behaves and the architecture
/// its image was built for (1.14.0 is an arm64 image published under the amd64 name).
const RELEASES: [(&str, Behaviour, &str); 8] = [
    (INSTALLED, Behaviour::Works, "amd64"),
    ("1.11.0", Behaviour::Works, "amd64"),
    ("1.11.1", Behaviour::Works, "amd64"),
    ("1.12.0", Behaviour::ExitsAtRun, "amd64"),
    ("1.13.0", Behaviour::ExitsAfterValidating, "amd64"),
    ("1.14.0", Behaviour::Works, "arm64"),
    ("1.15.0", Behaviour::Works, "amd64"),
    ("1.16.0", Behaviour::Works, "amd64"),
];

/// Runs inside the booted host: each step as the module's documentation says, reported as
/// KEY=VALUE lines.
const SCRIPT: &str = r#"#!/bin/sh
out=/root/alloy-report.txt
log=/var/lib/alloy/data/fake-alloy.log
UPDATE_FUNCTIONS
# The version the running Alloy started as.
running() { sed -n "s/^started pid=$(alloy_pid) .* version=//p" "$log"; }
linked() { readlink -f /etc/extensions/alloy.raw | sed 's/.*alloy-\(.*\)-amd64.raw$/\1/'; }
merged() { if [ -e /usr/lib/extension-release.d/extension-release.alloy ]; then echo yes; else echo no; fi; }
installed() { ls /opt/extensions/alloy | tr '\n' ' '; }
# The error the last run of alloy-sysupdate.service logged, if any.
last_error() {
  run=$(systemctl show -p InvocationID --value alloy-sysupdate.service)
  journalctl "_SYSTEMD_INVOCATION_ID=$run" -t alloy-sysupdate -p err -o cat --no-pager | tr '\n' ' '
}
# Another hand updates, as updatectl or sysext-bakery's drop-in would.
other_hand() { /usr/lib/systemd/systemd-sysupdate -C alloy update >/dev/null 2>&1; }
# KEY=VALUE lines for step $1: how the update went, and where the host is after it.
after() {
  echo "$1=$2"
  echo "$1_link=$(linked)"
  echo "$1_running=$(running)"
  echo "$1_pid=$(alloy_pid)"
  echo "$1_merged=$(merged)"
  echo "$1_installed=$(installed)"
  echo "$1_error=$(last_error)"
  echo "$1_failed=$(systemctl list-units --state=failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
}
ASK_TEST_FUNCTION
# Health checks as the update unit makes them here (its drop-in): 3 s steady, not 15.
export ALLOY_SYSUPDATE_STEADY=3
timeout 90 systemctl is-system-running --wait >/dev/null 2>&1
{
  echo "systemd=$(systemctl --version | head -n 1 | cut -d' ' -f2)"
  echo "start_running=$(running)"
  other_hand
  echo "other_hand_link=$(linked)"
  echo "other_hand_running=$(running)"
  after followed "$(start_update)"

  ask_test "publish 1.11.1"
  other_hand
  head -c 65536 /dev/urandom > /etc/extensions/zz-broken.raw
  after broken_refresh "$(start_update)"
  rm /etc/extensions/zz-broken.raw
  after retried "$(start_update)"

  ask_test "publish 1.12.0"
  after rejected "$(start_update)"
  echo "rejected_record=$(cat /var/lib/alloy-sysupdate/rolled-back/1.12.0)"
  after not_again "$(start_update)"

  ask_test "publish 1.13.0"
  after crashed "$(start_update)"

  ask_test "publish 1.14.0"
  after refused "$(start_update)"

  ask_test "publish 1.15.0"
  after newer "$(start_update)"

  if /opt/bin/alloy-sysupdate hold 1.11.1 >/root/hold.log 2>&1; then hold=ok; else hold=failed; fi
  after held "$hold"
  ask_test "publish 1.16.0"
  after held_update "$(start_update)"
  other_hand
  echo "held_other_hand_link=$(linked)"
  echo "held_other_hand_installed=$(installed)"
  /opt/bin/alloy-sysupdate unhold >/dev/null
  after unheld "$(start_update)"

  # An operator's typo: Alloy exits at every start. For 22 s, that is.
  echo 'CONFIG_FILE="/etc/alloy/typo.alloy"' >> /etc/default/alloy
  systemctl restart alloy.service
  sleep 22
  echo "loop=$(systemctl show -p ActiveState -p SubState -p Result --value alloy.service | tr '\n' ' ')"
  echo "loop_restarts=$(systemctl show -p NRestarts --value alloy.service)"
  echo "loop_setup=$(systemctl show -p ActiveState -p Result --value alloy-setup.service | tr '\n' ' ')"
  echo "loop_failed=$(systemctl list-units --state=failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
  sed 's/^/state=/' "$log"
} > "$out.tmp" 2>&1
journalctl -u alloy-sysupdate.service -o short-precise --no-pager > /root/sysupdate-journal.txt 2>&1
journalctl -b --no-pager > /root/alloy-journal.txt 2>&1
mv "$out.tmp" "$out"
systemctl poweroff
"#;

/// Every image of [`RELEASES`], by version, as the bucket serves it (named for amd64).
fn build_images() -> (xtask_testkit::Workspace, BTreeMap<&'static str, Vec<u8>>) {
    let mirror = Mirror::start();
    let ws = workspace();
    let mut images = BTreeMap::new();
    for (version, behaviour, arch) in RELEASES {
        mirror.add_release(&Release::that(version, behaviour));
        ws.build(&mirror.base_url, version, &["--arch", arch])
            .assert_ok();
        let built = ws.image(&format!("alloy-{version}-{arch}.raw"));
        images.insert(version, std::fs::read(built).unwrap());
    }
    (ws, images)
}

/// Boots a host of `suite` through the steps, publishing releases as it asks; returns the
/// report, the bucket's request log, and the update unit's journal; None where it cannot run.
fn heal(suite: &Suite) -> Option<(Report, Vec<String>, String)> {
    if !require_root("booting a Flatcar-like host and breaking its updates") {
        return None;
    }
    let (ws, images) = build_images();
    let key = TestKey::new("healing");
    let mut bucket = Bucket::new();
    let mut published: Vec<(String, Vec<u8>)> = Vec::new();
    let mut publish = |bucket: &mut Bucket, version: &str| {
        published.push((image(version), images[version].clone()));
        bucket.publish("", &published, &key);
    };
    publish(&mut bucket, INSTALLED);
    publish(&mut bucket, "1.11.0");
    let script = with_update_functions(SCRIPT).replace("ASK_TEST_FUNCTION", ASK_TEST);
    let label = format!("healing-{}", suite.name);
    let mut host = Host::new(suite, &label, Merge::EnsureSysext, &script);
    let butane = xtask_butane(&ws, &bucket, &key, "stable");
    provision_for_updates(&mut host, suite, &butane, &bucket);
    let report = host.boot_serving(|request| match request.strip_prefix("publish ") {
        Some(version) => publish(&mut bucket, version),
        None => panic!("unknown request {request:?}"),
    });
    let journal = std::fs::read_to_string(host.path("/root/sysupdate-journal.txt")).unwrap();
    Some((report, bucket.requested(), journal))
}

/// Seconds between the journal line that starts switching to `version` and the next error line
/// (the rollback's): how long a bad release ran before it was rolled back.
fn seconds_to_roll_back(journal: &str, version: &str) -> f64 {
    let time = |line: &str| -> f64 {
        // short-precise: "Dec 06 14:00:01.123456 host unit[pid]: message"
        let clock = line.split_whitespace().nth(2).unwrap();
        let parts: Vec<f64> = clock.split(':').map(|p| p.parse().unwrap()).collect();
        parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
    };
    let lines: Vec<&str> = journal.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains(&format!("Switching to alloy {version} ")))
        .unwrap_or_else(|| panic!("no switch to {version} in\n{journal}"));
    let end = lines[start..]
        .iter()
        .find(|l| l.contains(&format!("alloy {version} did not come up")))
        .unwrap_or_else(|| panic!("no rollback of {version} in\n{journal}"));
    time(end) - time(lines[start])
}

fn heals_itself(suite: &Suite) {
    let Some((report, requested, journal)) = heal(suite) else {
        return;
    };
    assert_eq!(report.get("systemd"), suite.systemd.to_string(), "{report}");
    assert_eq!(report.get("start_running"), INSTALLED, "{report}");

    // 1. Another hand moved the link; the running Alloy stayed until the next run applied it.
    assert_eq!(report.get("other_hand_link"), "1.11.0", "{report}");
    assert_eq!(report.get("other_hand_running"), INSTALLED, "{report}");
    assert_healthy_on(&report, "followed", "1.11.0");

    // 2. The refresh failed: the link went back, the previous merge stayed, Alloy ran on; the
    // next run applied 1.11.1.
    assert_eq!(report.get("broken_refresh"), "failed", "{report}");
    assert_eq!(report.get("broken_refresh_link"), "1.11.0", "{report}");
    assert_eq!(report.get("broken_refresh_merged"), "yes", "{report}");
    assert_eq!(report.get("broken_refresh_running"), "1.11.0", "{report}");
    assert_eq!(
        report.get("broken_refresh_pid"),
        report.get("followed_pid"),
        "{report}"
    );
    let error = report.get("broken_refresh_error");
    assert!(
        error.contains("systemd-sysext refresh failed while switching to alloy 1.11.1")
            && error.contains("the previous merge is still in place")
            && error.contains("tried again on the next run"),
        "{report}"
    );
    assert_healthy_on(&report, "retried", "1.11.1");

    // 3. Rejected by its own `alloy validate`: rolled back before Alloy was restarted.
    assert_rolled_back(
        &report,
        "rejected",
        "1.12.0",
        "rejects this host's configuration",
    );
    assert_eq!(report.get("rejected_pid"), report.get("retried_pid"));
    assert!(
        report
            .get("rejected_record")
            .contains("rejects the configuration"),
        "{report}"
    );
    // ... and never downloaded again.
    assert_healthy_on(&report, "not_again", "1.11.1");
    let downloads = |name: &str| requested.iter().filter(|p| p.ends_with(name)).count();
    assert_eq!(downloads("/alloy-1.12.0-amd64.raw"), 1, "{requested:?}");

    // 4. Passed `alloy validate`, exited at `run`: rolled back, the previous Alloy restarted.
    assert_rolled_back(&report, "crashed", "1.13.0", "did not come up");
    assert!(
        report
            .get("crashed_error")
            .contains("rolled back to alloy 1.11.1 in"),
        "{report}"
    );
    assert_ne!(report.get("crashed_pid"), report.get("not_again_pid"));
    let rollback = seconds_to_roll_back(&journal, "1.13.0");
    eprintln!(
        "systemd {}: 1.13.0, which exits at start, was rolled back {rollback:.1} s after the switch began",
        suite.systemd
    );

    // 5. An image systemd-sysext does not merge here: the previous one merged again.
    assert_rolled_back(
        &report,
        "refused",
        "1.14.0",
        "systemd-sysext did not merge alloy 1.14.0",
    );
    assert_eq!(report.get("refused_pid"), report.get("crashed_pid"));

    // 6. A still newer release is taken.
    assert_healthy_on(&report, "newer", "1.15.0");
    assert_eq!(
        report.get("newer_installed").trim(),
        "alloy-1.11.1-amd64.raw alloy-1.15.0-amd64.raw",
        "{report}"
    );

    // 7. Held: 1.11.1 back and the only image; 1.16.0 not taken while held; another hand's
    // update kept the held image; after unhold, 1.16.0 runs.
    assert_eq!(report.get("held"), "ok", "{report}");
    assert_eq!(report.get("held_running"), "1.11.1", "{report}");
    assert_eq!(
        report.get("held_installed").trim(),
        "alloy-1.11.1-amd64.raw"
    );
    assert_healthy_on(&report, "held_update", "1.11.1");
    assert_eq!(downloads("/alloy-1.16.0-amd64.raw"), 1, "{requested:?}");
    assert_eq!(report.get("held_other_hand_link"), "1.16.0", "{report}");
    assert_eq!(
        report.get("held_other_hand_installed").trim(),
        "alloy-1.11.1-amd64.raw alloy-1.16.0-amd64.raw",
        "{report}"
    );
    assert_healthy_on(&report, "unheld", "1.16.0");

    // 8. A crash loop stays contained: restarted every 5 s, neither unit failed.
    let restarts: u32 = report.get("loop_restarts").parse().unwrap();
    assert!((2..=6).contains(&restarts), "{restarts} restarts\n{report}");
    assert!(!report.get("loop").contains("failed"), "{report}");
    assert!(!report.get("loop_setup").contains("failed"), "{report}");
    assert!(report.get("loop_failed").trim().is_empty(), "{report}");
}

/// Step `step` succeeded, and the host runs `version`, merged, linked, with no unit failed.
fn assert_healthy_on(report: &Report, step: &str, version: &str) {
    for (key, expected) in [
        ("", "ok"),
        ("link", version),
        ("running", version),
        ("merged", "yes"),
        ("failed", ""),
        ("error", ""),
    ] {
        let name = if key.is_empty() {
            step.to_string()
        } else {
            format!("{step}_{key}")
        };
        assert_eq!(report.get(&name).trim(), expected, "{name}\n{report}");
    }
}

/// Step `step` failed the update unit with an error naming `bad` and 1.11.1, and said `why`;
/// the host runs 1.11.1 again, merged, and `bad`'s image is gone.
fn assert_rolled_back(report: &Report, step: &str, bad: &str, why: &str) {
    assert_eq!(report.get(step), "failed", "{report}");
    let error = report.get(&format!("{step}_error"));
    for needle in [
        &format!("alloy {bad}"),
        "alloy 1.11.1",
        why,
        "will not be installed again",
    ] {
        assert!(
            error.contains(needle),
            "{needle:?} not in {error:?}\n{report}"
        );
    }
    for (key, expected) in [("link", "1.11.1"), ("running", "1.11.1"), ("merged", "yes")] {
        assert_eq!(
            report.get(&format!("{step}_{key}")),
            expected,
            "{key}\n{report}"
        );
    }
    assert_eq!(
        report.get(&format!("{step}_failed")).trim(),
        "alloy-sysupdate.service",
        "{report}"
    );
    assert_eq!(
        report.get(&format!("{step}_installed")).trim(),
        "alloy-1.11.1-amd64.raw",
        "{report}"
    );
}

#[test]
fn on_systemd_252_updates_follow_the_link_and_a_release_that_does_not_come_up_is_rolled_back() {
    heals_itself(&BOOKWORM);
}

#[test]
fn on_systemd_257_updates_follow_the_link_and_a_release_that_does_not_come_up_is_rolled_back() {
    heals_itself(&TRIXIE);
}
