//! Alloy as a service on an immutable host: the unit, its defaults, the tmpfiles.d lines that
//! copy those defaults into /etc, and the drop-in that starts it. No post-install script runs on
//! a sysext host, so everything a .deb's post-install does is expressed here as files in /usr.

/// Where the unit goes in the image.
pub const UNIT_PATH: &str = "usr/lib/systemd/system/alloy.service";
/// The drop-in that makes `multi-user.target` uphold (start, and restart if it stops) Alloy.
pub const AUTOSTART_PATH: &str = "usr/lib/systemd/system/multi-user.target.d/10-alloy.conf";
pub const TMPFILES_PATH: &str = "usr/lib/tmpfiles.d/alloy.conf";
pub const DEFAULT_CONFIG_PATH: &str = "usr/share/alloy/config.alloy";
pub const DEFAULT_ENVIRONMENT_PATH: &str = "usr/share/alloy/environment";

/// Where the host's editable copies live.
pub const CONFIG_FILE: &str = "/etc/alloy/config.alloy";
pub const ENVIRONMENT_FILE: &str = "/etc/default/alloy";

/// `alloy.service`, after upstream's packaged unit (packaging/deb/alloy.service), with the
/// `alloy` user that the .deb's post-install creates replaced by a dynamic user: nothing has to
/// exist on the host before the first start. The groups give journal and /var/log sources
/// something to read. The hardening leaves /proc, /sys, the journal and /var/log readable; it
/// has no ProtectClock= (its seccomp filter denies the read-only adjtimex() of node_exporter's
/// default timex collector) and keeps home directories readable (as DynamicUser= would anyway)
/// so filesystem metrics of mounts under /home stay true.
pub fn unit() -> String {
    format!(
        "\
[Unit]
Description=Vendor-agnostic OpenTelemetry Collector distribution with programmable pipelines
Documentation=https://grafana.com/docs/alloy
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
Restart=always
DynamicUser=yes
SupplementaryGroups=systemd-journal adm
StateDirectory=alloy
WorkingDirectory=/var/lib/alloy
Environment=HOSTNAME=%H
Environment=CONFIG_FILE={CONFIG_FILE}
Environment=CUSTOM_ARGS=
EnvironmentFile=-{ENVIRONMENT_FILE}
# Seeds /etc when the image was merged after boot (systemd-sysext refresh), as root (the +).
ExecStartPre=+/usr/bin/systemd-tmpfiles --create alloy.conf
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

[Install]
WantedBy=multi-user.target
"
    )
}

/// Alloy's defaults, like upstream's packaging/config.alloy: the host's own metrics and Alloy's,
/// scraped, with nowhere to send them until the operator says where.
pub fn default_config() -> &'static str {
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
/// operator's edits survive reboots and upgrades. The copies are 0644: the dynamic user must
/// read them.
pub fn tmpfiles() -> String {
    format!(
        "\
# Alloy's editable configuration, seeded from the sysext's defaults; never overwritten.
d /etc/alloy 0755 root root -
C /etc/alloy/config.alloy 0644 root root - /{DEFAULT_CONFIG_PATH}
d /etc/default 0755 root root -
C /etc/default/alloy 0644 root root - /{DEFAULT_ENVIRONMENT_PATH}
"
    )
}

/// The autostart drop-in. Flatcar merges extensions after presets are applied, so enabling does
/// not work; `Upholds=` in a drop-in (systemd >= 249) does, once the units are reloaded.
pub fn autostart_dropin() -> &'static str {
    "[Unit]\nUpholds=alloy.service\n"
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
            "DynamicUser=yes",
            "SupplementaryGroups=systemd-journal adm",
            "StateDirectory=alloy",
            "EnvironmentFile=-/etc/default/alloy",
            "Environment=CONFIG_FILE=/etc/alloy/config.alloy",
            "Environment=HOSTNAME=%H",
            "ExecStart=/usr/bin/alloy run $CUSTOM_ARGS --storage.path=/var/lib/alloy/data $CONFIG_FILE",
            "ExecReload=/bin/sh -c 'kill -HUP \"$MAINPID\"'",
            "ExecStartPre=+/usr/bin/systemd-tmpfiles --create alloy.conf",
            "Restart=always",
            "TimeoutStopSec=20s",
            "WantedBy=multi-user.target",
        ] {
            assert!(lines.contains(&expected), "{expected} missing:\n{unit}");
        }
        // Nothing that would hide what Alloy is there to read, or keep it from stopping.
        for forbidden in [
            "User=",
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
        // The defaults come before the file that overrides them.
        let default = unit.find("Environment=CONFIG_FILE").unwrap();
        assert!(default < unit.find("EnvironmentFile=").unwrap());
    }

    #[test]
    fn tmpfiles_seed_only_missing_files_from_the_shipped_defaults() {
        let text = tmpfiles();
        let copies: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with('C'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            copies,
            [
                [
                    "C",
                    "/etc/alloy/config.alloy",
                    "0644",
                    "root",
                    "root",
                    "-",
                    "/usr/share/alloy/config.alloy"
                ],
                [
                    "C",
                    "/etc/default/alloy",
                    "0644",
                    "root",
                    "root",
                    "-",
                    "/usr/share/alloy/environment"
                ],
            ]
        );
        // `C+` would overwrite the operator's edits.
        assert!(!text.contains("C+"));
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
        assert!(UNIT_PATH.ends_with("/alloy.service"));
        assert!(AUTOSTART_PATH.starts_with("usr/lib/systemd/system/multi-user.target.d/"));
    }
}
