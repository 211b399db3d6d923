//! Alloy as a service on an immutable host: the unit, its defaults, the sysusers.d and tmpfiles.d
//! lines that create its user and copy those defaults into /etc, and the drop-in that starts it.
//! No post-install script runs on a sysext host, so everything a .deb's post-install does is
//! expressed here as files in /usr.

use super::{DEFAULT_CONFIG_PATH, DEFAULT_ENVIRONMENT_PATH};
use crate::contract::{CONFIG_FILE, ENVIRONMENT_FILE, USER};

/// `alloy.service`, after upstream's packaged unit (packaging/deb/alloy.service), running as the
/// static `alloy` user like Grafana's packages. Not a dynamic user: a dynamic uid cannot own a
/// group that files in /etc belong to, so secrets there would have to be world-readable (see
/// `tmpfiles`). The user is created by `alloy-setup.service` (required, ordered before): systemd
/// resolves `User=` before it runs any command of this unit, `ExecStartPre=+` included, so the
/// user cannot be created from inside this unit when the image is merged after boot.
/// `SupplementaryGroups=` repeats the sysusers.d memberships because on Flatcar those groups come
/// from /usr/share/baselayout (nss-altfiles), not /etc/group, and a membership that sysusers
/// records may not be the one NSS reports; the unit's own line does not depend on it. StateDirectory= makes
/// /var/lib/alloy owned by alloy (systemd chowns it, and moves an earlier DynamicUser= state back
/// from /var/lib/private). `RestartSec=5s`: a release that exits at start is restarted every 5 s,
/// not every 100 ms, so it never reaches the start limit (5 starts in 10 s) and keeps trying, and
/// alloy-setup.service, run before each start, is not run 10 times a second.
///
/// The hardening (`systemd-analyze security --offline=yes` rates this unit 2.6 with systemd 252's
/// and 257's analyzer; upstream's packaged unit 9.2, this one before the last settings 7.4) keeps
/// what Alloy's usual components need: /proc, /sys, the journal and
/// /var/log readable, outbound connections, netlink (node metrics: interfaces, routes), unix
/// sockets (the journal, Docker's socket). Left out, and why:
/// - `PrivateDevices=`, `DevicePolicy=`/`DeviceAllow=`: device nodes stay visible to components
///   that read them (kernel log through /dev/kmsg, disks);
/// - `ProtectKernelLogs=`: the same kernel log;
/// - `ProtectClock=`: its seccomp filter denies the read-only adjtimex() of node_exporter's
///   default timex collector (the filter below allows it; without capabilities it cannot set
///   the clock);
/// - `ProtectProc=invisible`, `ProcSubset=pid`: process and system metrics read all of /proc;
/// - `PrivateUsers=`: the groups systemd-journal and adm would not be mapped, and the journal
///   and /var/log would read as nobody's;
/// - `PrivateNetwork=`, `IPAddressDeny=`: Alloy sends to endpoints the operator chooses;
/// - `ProtectHome=yes` (read-only instead): filesystem metrics of mounts under /home stay true;
/// - `RootDirectory=`: Alloy observes the host's own root;
/// - `RestrictAddressFamilies=` without `AF_NETLINK`, and `@privileged`/`@resources` denied:
///   node metrics use netlink, Go raises its own file limit.
///
/// What needs more (Docker's socket, eBPF components) is given by a drop-in (README).
pub fn unit() -> String {
    format!(
        "\
[Unit]
Description=Vendor-agnostic OpenTelemetry Collector distribution with programmable pipelines
Documentation=https://grafana.com/docs/alloy
Wants=network-online.target
After=network-online.target
# Creates the alloy user and seeds /etc/alloy before every start, also after a runtime merge.
Requires=alloy-setup.service
After=alloy-setup.service

[Service]
Type=simple
Restart=always
# A release that exits at start is tried every 5 s, not every 100 ms: never hits the start limit.
RestartSec=5s
User={USER}
Group={USER}
SupplementaryGroups=systemd-journal adm
StateDirectory=alloy
StateDirectoryMode=0750
WorkingDirectory=/var/lib/alloy
Environment=HOSTNAME=%H
Environment=CONFIG_FILE={CONFIG_FILE}
Environment=CUSTOM_ARGS=
EnvironmentFile=-{ENVIRONMENT_FILE}
ExecStart=/usr/bin/alloy run $CUSTOM_ARGS --storage.path=/var/lib/alloy/data $CONFIG_FILE
# The shell's own kill: no kill binary needs to exist on the host (systemd 252 has no ReloadSignal=).
ExecReload=/bin/sh -c 'kill -HUP \"$MAINPID\"'
TimeoutStopSec=20s
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
ProtectKernelModules=yes
ProtectKernelTunables=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
# Alloy runs unprivileged and needs no capability, namespace or IPC of its own; what it writes
# is for itself and its group. Networks: IP, unix sockets (journal, Docker), netlink (node metrics).
CapabilityBoundingSet=
RestrictNamespaces=yes
ProtectHostname=yes
PrivateMounts=yes
RemoveIPC=yes
UMask=0027
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
MemoryDenyWriteExecute=yes
# A service's usual system calls, and adjtimex() for node_exporter's timex collector (reading
# only: no capability to set the clock). A call outside the list fails with EPERM, it does not
# kill Alloy.
SystemCallFilter=@system-service adjtimex
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"
    )
}

/// `alloy-setup.service`: as root, creates the user (sysusers.d) and then seeds and tightens
/// /etc (tmpfiles.d, whose lines name the alloy group, so it must run second). Not
/// RemainAfterExit: it runs again before every start of alloy.service, so an image merged after
/// boot, or a newer image with new lines, is set up before Alloy starts. One shell rather than
/// two `ExecStart=` lines: no command is spawned after another one left the unit's cgroup empty
/// (the test machine's emulated cgroups sometimes lose it then: 219/CGROUP). No start limit:
/// it starts as often as Alloy does.
pub fn setup_unit() -> String {
    format!(
        "\
[Unit]
Description=Create the alloy user and seed /etc/alloy for alloy.service
Documentation=https://grafana.com/docs/alloy
Before=alloy.service
# Runs before every start of Alloy, restarts included: no start limit of its own, or a
# crash-looping Alloy would leave it failed.
StartLimitIntervalSec=0

[Service]
Type=oneshot
ExecStart=/bin/sh -c '/usr/bin/systemd-sysusers {USER}.conf && /usr/bin/systemd-tmpfiles --create {USER}.conf'
"
    )
}

/// sysusers.d lines: a system user and group `alloy` (uid allocated by the host) in the journal
/// and adm groups, like the user that Grafana's .deb post-install creates.
pub fn sysusers() -> String {
    format!(
        "\
# Grafana Alloy's user: reads the journal and /var/log, owns /var/lib/alloy.
u {USER} - \"Grafana Alloy\" /var/lib/alloy
m {USER} systemd-journal
m {USER} adm
"
    )
}

/// Alloy's defaults, like upstream's packaging/config.alloy: the host's own metrics and Alloy's,
/// scraped, with nowhere to send them until the operator says where.
pub fn default_config() -> String {
    r#"// Sample config for Alloy, copied to /etc/alloy/config.alloy on first boot; edit it there.
//
// For a full configuration reference, see https://grafana.com/docs/alloy
logging {
  level = "warn"
}

prometheus.exporter.unix "default" {
  include_exporter_metrics = true
  disable_collectors       = ["mdadm"]
}

prometheus.scrape "default" {
  targets = array.concat(
    prometheus.exporter.unix.default.targets,
    [{
      // Self-collect metrics
      job         = "alloy",
      __address__ = "127.0.0.1:12345",
    }],
  )

  forward_to = [
  // TODO: components to forward metrics to (like prometheus.remote_write or
  // prometheus.relabel).
  ]
}
"#
    .to_string()
}

/// The environment file the unit reads, like upstream's /etc/default/alloy.
pub fn default_environment() -> String {
    format!(
        "\
# Settings for alloy.service, copied to {ENVIRONMENT_FILE} on first boot; edit them there.
# Apply with: systemctl restart alloy

# The configuration file holding the Alloy config.
CONFIG_FILE=\"{CONFIG_FILE}\"

# User-defined arguments to pass to `alloy run`.
CUSTOM_ARGS=\"\"
"
    )
}

/// tmpfiles.d lines: `C` copies a default only where the target does not exist yet, so an
/// operator's edits survive reboots and upgrades. Alloy's configuration holds credentials
/// (`remote_write` passwords), so it is readable by root and the alloy group only: /etc/alloy is
/// 0750 root:alloy, and the two seeded files are set to 0640 root:alloy at every start (`C` also
/// applies its mode and owner to a file that exists), whatever mode an operator wrote them with.
/// `Z` gives every other file under /etc/alloy the alloy group, keeping its mode: a secret
/// written 0640 by Ignition, before the group exists, becomes readable by Alloy and nobody else;
/// a 0600 file stays root's. /etc/default belongs to the host: created where missing, its mode
/// and owner otherwise left as they are (`-`; `d` would set given ones on an existing directory).
pub fn tmpfiles() -> String {
    format!(
        "\
# Alloy's editable configuration, seeded from the sysext's defaults; never overwritten.
d /etc/alloy 0750 root {USER} -
Z /etc/alloy - root {USER} -
C {CONFIG_FILE} 0640 root {USER} - /{DEFAULT_CONFIG_PATH}
d /etc/default - - - -
C {ENVIRONMENT_FILE} 0640 root {USER} - /{DEFAULT_ENVIRONMENT_PATH}
"
    )
}

/// The autostart drop-in. Flatcar merges extensions after presets are applied, so enabling does
/// not work; `Upholds=` in a drop-in (systemd >= 249) does, once the units are reloaded.
pub fn autostart_dropin() -> String {
    "[Unit]\nUpholds=alloy.service\n".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn unit_runs_alloy_unprivileged_with_state_journal_and_reload() {
        let unit = unit();
        let lines = lines(&unit);
        for expected in [
            "User=alloy",
            "Group=alloy",
            "SupplementaryGroups=systemd-journal adm",
            "StateDirectory=alloy",
            "Requires=alloy-setup.service",
            "After=alloy-setup.service",
            "EnvironmentFile=-/etc/default/alloy",
            "Environment=CONFIG_FILE=/etc/alloy/config.alloy",
            "Environment=HOSTNAME=%H",
            "ExecStart=/usr/bin/alloy run $CUSTOM_ARGS --storage.path=/var/lib/alloy/data $CONFIG_FILE",
            "ExecReload=/bin/sh -c 'kill -HUP \"$MAINPID\"'",
            "Restart=always",
            "TimeoutStopSec=20s",
            "WantedBy=multi-user.target",
        ] {
            assert!(lines.contains(&expected), "{expected} missing:\n{unit}");
        }
        // Nothing that would hide what Alloy is there to read, or keep it from stopping.
        for forbidden in [
            "DynamicUser",
            // systemd resolves User= before any ExecStartPre=, + or not: the user must come
            // from alloy-setup.service, not from a command of this unit.
            "ExecStartPre",
            "SendSIGKILL",
            "ProtectProc=invisible",
            "PrivateDevices",
            "ProtectKernelLogs",
            "ProtectClock",
            "ProtectHome=yes",
            "InaccessiblePaths",
        ] {
            assert!(
                !lines.iter().any(|l| l.starts_with(forbidden)),
                "{forbidden} in:\n{unit}"
            );
        }
        // The hardening stays, with a static user as with the dynamic one.
        for hardening in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=read-only",
            "PrivateTmp=yes",
            "RestrictSUIDSGID=yes",
            "CapabilityBoundingSet=",
            "RestrictNamespaces=yes",
            "UMask=0027",
            // netlink for node metrics (interfaces, routes), unix sockets for the journal.
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
            // node_exporter's timex collector reads the clock's state with adjtimex().
            "SystemCallFilter=@system-service adjtimex",
            // A call outside the filter fails; it does not kill Alloy.
            "SystemCallErrorNumber=EPERM",
        ] {
            assert!(lines.contains(&hardening), "{hardening} missing:\n{unit}");
        }
        // A release that exits at start is retried every 5 s: never 5 starts in 10 s.
        assert!(lines.contains(&"RestartSec=5s"), "{unit}");
        // The defaults come before the file that overrides them.
        let default = unit.find("Environment=CONFIG_FILE").unwrap();
        assert!(default < unit.find("EnvironmentFile=").unwrap());
    }

    /// `systemd-analyze security --offline=yes` (systemd >= 252) rates the unit as shipped at 4.0
    /// or lower ("OK"); it rated 7.4 before the hardening the issue asked for.
    #[test]
    fn systemd_analyze_rates_the_unit_ok() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alloy.service");
        std::fs::write(&path, unit()).unwrap();
        let output = std::process::Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path)
            .output()
            .expect(
                "running systemd-analyze (bash scripts/install-deps.sh --test installs systemd)",
            );
        let text = String::from_utf8_lossy(&output.stdout);
        let rating = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for alloy.service: ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse::<f64>().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no rating in:\n{text}\n{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        eprintln!("systemd-analyze security --offline=yes alloy.service: {rating}");
        assert!(rating <= 4.0, "rated {rating}:\n{text}");
    }

    fn fields(text: &str, kind: &str) -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| l.split_whitespace().next() == Some(kind))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    }

    #[test]
    fn tmpfiles_seed_only_missing_files_private_to_root_and_the_alloy_group() {
        let text = tmpfiles();
        assert_eq!(
            fields(&text, "C"),
            [
                [
                    "C",
                    "/etc/alloy/config.alloy",
                    "0640",
                    "root",
                    "alloy",
                    "-",
                    "/usr/share/alloy/config.alloy"
                ],
                [
                    "C",
                    "/etc/default/alloy",
                    "0640",
                    "root",
                    "alloy",
                    "-",
                    "/usr/share/alloy/environment"
                ],
            ]
        );
        // The directory: nothing for other users; files Ignition wrote get the alloy group.
        assert_eq!(
            fields(&text, "d")[0],
            ["d", "/etc/alloy", "0750", "root", "alloy", "-"]
        );
        assert_eq!(
            fields(&text, "Z"),
            [["Z", "/etc/alloy", "-", "root", "alloy", "-"]]
        );
        // /etc/default is the host's: made where missing, its mode and owner otherwise kept.
        assert_eq!(
            fields(&text, "d")[1],
            ["d", "/etc/default", "-", "-", "-", "-"]
        );
        // `C+` would overwrite the operator's edits.
        assert!(!text.contains("C+"));
        // Nothing world-readable is created.
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let mode = line.split_whitespace().nth(2).unwrap();
            if mode != "-" && !line.contains("/etc/default ") {
                let mode = u32::from_str_radix(mode, 8).unwrap();
                assert_eq!(mode & 0o007, 0, "{line}");
            }
        }
    }

    #[test]
    fn sysusers_makes_a_system_user_in_the_journal_and_adm_groups() {
        let text = sysusers();
        assert_eq!(
            fields(&text, "u"),
            [["u", "alloy", "-", "\"Grafana", "Alloy\"", "/var/lib/alloy"]]
        );
        assert_eq!(
            fields(&text, "m"),
            [["m", "alloy", "systemd-journal"], ["m", "alloy", "adm"]]
        );
        assert!(super::super::SYSUSERS_PATH.ends_with(&format!("/{USER}.conf")));
        assert!(super::super::TMPFILES_PATH.ends_with(&format!("/{USER}.conf")));
    }

    #[test]
    fn setup_creates_the_user_before_seeding_etc_on_every_start() {
        let unit = setup_unit();
        let starts: Vec<&str> = lines(&unit)
            .into_iter()
            .filter_map(|l| l.strip_prefix("ExecStart="))
            .collect();
        // The tmpfiles lines name the alloy group: the user must exist first, and a failure
        // stops there.
        assert_eq!(
            starts,
            ["/bin/sh -c '/usr/bin/systemd-sysusers alloy.conf && /usr/bin/systemd-tmpfiles --create alloy.conf'"]
        );
        assert!(lines(&unit).contains(&"Type=oneshot"));
        // Without RemainAfterExit it runs again before each start of alloy.service, and with
        // no start limit a crash-looping Alloy does not leave it failed.
        assert!(!unit.contains("RemainAfterExit"));
        assert!(lines(&unit).contains(&"StartLimitIntervalSec=0"), "{unit}");
        assert!(super::super::SETUP_UNIT_PATH.ends_with("/alloy-setup.service"));
    }

    #[test]
    fn environment_names_the_config_the_tmpfiles_seed() {
        let env = default_environment();
        assert!(lines(&env).contains(&"CONFIG_FILE=\"/etc/alloy/config.alloy\""));
        assert!(lines(&env).contains(&"CUSTOM_ARGS=\"\""));
        for line in lines(&env) {
            assert!(
                line.is_empty() || line.starts_with('#') || line.contains('='),
                "{line:?} is not an assignment"
            );
        }
    }

    #[test]
    fn config_is_balanced_alloy_syntax() {
        let config = default_config();
        let code: String = config
            .lines()
            .map(|l| l.split("//").next().unwrap())
            .collect();
        for (open, close) in [('{', '}'), ('[', ']'), ('(', ')')] {
            assert_eq!(
                code.matches(open).count(),
                code.matches(close).count(),
                "{open}{close} unbalanced"
            );
        }
        assert_eq!(code.matches('"').count() % 2, 0);
        assert!(config.contains("prometheus.exporter.unix \"default\""));
    }

    #[test]
    fn autostart_upholds_the_unit() {
        assert_eq!(autostart_dropin(), "[Unit]\nUpholds=alloy.service\n");
        assert!(super::super::UNIT_PATH.ends_with("/alloy.service"));
        assert!(
            super::super::AUTOSTART_PATH.starts_with("usr/lib/systemd/system/multi-user.target.d/")
        );
    }
}
