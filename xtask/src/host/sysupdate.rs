//! How a host stays current: the systemd-sysupdate transfer file, and alloy-sysupdate.service
//! and .timer, which apply an update and restart the running Alloy.

use crate::arch::Arch;
use crate::contract::{
    ImageName, CURRENT_LINK, EXTENSION_NAME, IMAGES_DIR, SYSUPDATE, TRANSFER_PATHS,
};

/// A base URL without its trailing slashes.
pub(crate) fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// `text` with every `%` doubled: systemd expands `%` specifiers in unit files and in sysupdate
/// transfer files (`%m` machine id, `%H` hostname, `%b` boot id, ...), and `%%` is a literal `%`.
pub fn escape_specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

/// The transfer file: sysupdate lists `<base>/SHA256SUMS`, picks the highest `alloy-@v-<arch>.raw`,
/// downloads it into /opt/extensions/alloy and points /etc/extensions/alloy.raw at it.
/// `base_url` is the channel's folder ([`Channel::base_url`]).
pub fn transfer_file(base_url: &str, arch: Arch, verify: bool) -> String {
    let pattern = ImageName::match_pattern(arch);
    let verify = if verify { "yes" } else { "no" };
    format!(
        "\
# systemd-sysupdate transfer for the alloy sysext ({arch}); install as {transfer} (systemd 257+)
# and, the same text, as {conf} (systemd 252 reads only *.conf)
[Transfer]
Verify={verify}

[Source]
Type=url-file
Path={base}/
MatchPattern={pattern}

[Target]
Type=regular-file
Path={IMAGES_DIR}
MatchPattern={pattern}
CurrentSymlink={CURRENT_LINK}
# The running image and the one before it stay, for a rollback by relinking.
InstancesMax=2
Mode=0644
",
        base = escape_specifiers(base(base_url)),
        transfer = TRANSFER_PATHS[0],
        conf = TRANSFER_PATHS[1],
    )
}

/// `alloy-sysupdate.service`: updates the alloy component and, when the link moved, makes the
/// new image take effect. Its own unit rather than a drop-in on the host's
/// systemd-sysupdate.service: an unreachable bucket then fails only this unit (which is right:
/// it is visible in `systemctl --failed`), never the host's own update run, and the host needs
/// no placeholder transfer in /etc/sysupdate.d. After the move:
/// - `systemd-sysext refresh` merges the new image (restarting systemd-sysext.service would
///   unmerge every extension on its way, docker's and containerd's too);
/// - `systemctl daemon-reload`, because systemd before 255 does not honour the image's
///   `EXTENSION_RELOAD_MANAGER=1` and would keep the old unit files;
/// - `systemctl try-restart alloy.service`: `Upholds=` only starts stopped units, so without it
///   the old binary keeps running from the detached overlay; try- so that an Alloy the
///   operator stopped stays stopped. Config in /etc and state in /var/lib are untouched.
///
/// All in one shell, from reading the link to the restart: no state file in /run, nothing runs
/// after a failed update, and no command of the unit is spawned after another one exited (on
/// the test machine's emulated cgroups, a oneshot's `ExecStartPost=` now and then failed to
/// spawn once `ExecStart=` had left the unit's cgroup empty). `$$` is systemd's escape for a `$`
/// the shell should see.
pub fn update_service() -> String {
    format!(
        "\
[Unit]
Description=Update the alloy sysext with systemd-sysupdate, and run the new Alloy
Documentation=https://github.com/grafana/alloy
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c '\\
  before=$$(readlink --canonicalize {CURRENT_LINK}) && \\
  {SYSUPDATE} -C {EXTENSION_NAME} update && \\
  after=$$(readlink --canonicalize {CURRENT_LINK}) && \\
  if [ \"$$after\" != \"$$before\" ]; then \\
    systemd-sysext refresh && systemctl daemon-reload && systemctl try-restart alloy.service; \\
  fi'
"
    )
}

/// `alloy-sysupdate.timer`: the schedule of systemd's own systemd-sysupdate.timer.
pub const UPDATE_TIMER_UNIT: &str = "\
[Unit]
Description=Look for a newer alloy sysext regularly

[Timer]
OnBootSec=15min
OnUnitActiveSec=6h
RandomizedDelaySec=30min

[Install]
WantedBy=timers.target
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Channel, UPDATE_SERVICE};
    use crate::host::unit_file::{self, Setting};
    use crate::version::Version;

    fn ini(text: &str) -> Vec<Setting> {
        unit_file::settings(text).unwrap()
    }

    fn get<'a>(entries: &'a [Setting], section: &str, key: &str) -> &'a str {
        unit_file::value(entries, section, key)
            .unwrap_or_else(|| panic!("[{section}] {key} not once in {entries:?}"))
    }

    #[test]
    fn transfer_file_matches_published_names_per_arch() {
        let text = transfer_file("https://images.example/alloy/", Arch::Arm64, true);
        let entries = ini(&text);
        assert_eq!(get(&entries, "Transfer", "Verify"), "yes");
        assert_eq!(get(&entries, "Source", "Type"), "url-file");
        assert_eq!(
            get(&entries, "Source", "Path"),
            "https://images.example/alloy/"
        );
        assert_eq!(
            get(&entries, "Source", "MatchPattern"),
            "alloy-@v-arm64.raw"
        );
        assert_eq!(get(&entries, "Target", "Type"), "regular-file");
        assert_eq!(get(&entries, "Target", "Path"), "/opt/extensions/alloy");
        assert_eq!(
            get(&entries, "Target", "MatchPattern"),
            "alloy-@v-arm64.raw"
        );
        assert_eq!(
            get(&entries, "Target", "CurrentSymlink"),
            "/etc/extensions/alloy.raw"
        );
        assert_eq!(get(&entries, "Target", "InstancesMax"), "2");
        // The pattern with @v replaced is exactly the name `xtask build` gives the image.
        let version: Version = "1.10.2".parse().unwrap();
        assert_eq!(
            get(&entries, "Source", "MatchPattern").replace("@v", "1.10.2"),
            ImageName::new(&version, Arch::Arm64).file_name()
        );
        let unsigned = ini(&transfer_file("https://x.example", Arch::Amd64, false));
        assert_eq!(get(&unsigned, "Transfer", "Verify"), "no");
        assert_eq!(get(&unsigned, "Source", "Path"), "https://x.example/");
        assert_eq!(
            get(&unsigned, "Source", "MatchPattern"),
            "alloy-@v-amd64.raw"
        );
    }

    /// A `%` in the base URL reaches sysupdate as a `%`, never as a specifier that would send
    /// every host's machine id, hostname or boot id to the bucket.
    #[test]
    fn percent_signs_in_the_base_url_are_not_specifiers() {
        let text = transfer_file("https://b.example/a%20b/%m%H%b", Arch::Amd64, true);
        assert_eq!(
            get(&ini(&text), "Source", "Path"),
            "https://b.example/a%%20b/%%m%%H%%b/"
        );
        assert_eq!(escape_specifiers("100%"), "100%%");
    }

    #[test]
    fn release_candidates_have_their_own_folder_and_index() {
        let base = "https://b.example/alloy/";
        assert_eq!(Channel::Stable.base_url(base), "https://b.example/alloy");
        assert_eq!(Channel::Rc.base_url(base), "https://b.example/alloy/rc");
        let rc: Version = "1.11.0-rc.1".parse().unwrap();
        let release: Version = "1.11.0".parse().unwrap();
        assert_eq!(Channel::of(&rc), Channel::Rc);
        assert_eq!(Channel::of(&release), Channel::Stable);
        let transfer = ini(&transfer_file(
            &Channel::Rc.base_url(base),
            Arch::Amd64,
            true,
        ));
        assert_eq!(
            get(&transfer, "Source", "Path"),
            "https://b.example/alloy/rc/"
        );
    }

    /// How systemd orders two versions (`systemd-analyze compare-versions`, systemd >= 252):
    /// the order sysupdate picks "newest" by.
    fn systemd_order(a: &str, b: &str) -> std::cmp::Ordering {
        let output = std::process::Command::new("systemd-analyze")
            .args(["compare-versions", a, b])
            .output()
            .expect(
                "running systemd-analyze (bash scripts/install-deps.sh --test installs systemd)",
            );
        let said = String::from_utf8_lossy(&output.stdout);
        match said.split_whitespace().collect::<Vec<_>>()[..] {
            [x, "<", y] if x == a && y == b => std::cmp::Ordering::Less,
            [x, "==", y] if x == a && y == b => std::cmp::Ordering::Equal,
            [x, ">", y] if x == a && y == b => std::cmp::Ordering::Greater,
            _ => panic!(
                "systemd-analyze compare-versions {a} {b}: {said:?} {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    #[test]
    fn systemd_orders_rcs_above_their_release_so_they_never_share_the_stable_index() {
        use std::cmp::Ordering;
        // The reason for the rc channel: systemd-sysupdate would take 1.11.0-rc.1 over 1.11.0,
        // while our own order (semver) says the opposite.
        assert_eq!(systemd_order("1.11.0-rc.1", "1.11.0"), Ordering::Greater);
        let rc: Version = "1.11.0-rc.1".parse().unwrap();
        let release: Version = "1.11.0".parse().unwrap();
        assert_eq!(rc.cmp(&release), Ordering::Less);
        // Within one channel, systemd and Version::cmp agree on every pair, so the highest
        // version in an index is the one sysupdate installs. Stable: what the stable index lists.
        let stable = [
            "0.40.0", "1.0.0", "1.3.4", "1.4.0", "1.9.0", "1.9.10", "1.10.0", "1.10.2", "1.11.0",
            "2.0.0", "10.0.0",
        ];
        // rc: what the rc index lists.
        let candidates = [
            "1.11.0-rc.1",
            "1.11.0-rc.2",
            "1.11.0-rc.10",
            "1.12.0-rc.0",
            "2.0.0-rc.1",
        ];
        for channel in [&stable[..], &candidates[..]] {
            for a in channel {
                for b in channel {
                    let ours = a.parse::<Version>().unwrap().cmp(&b.parse().unwrap());
                    assert_eq!(systemd_order(a, b), ours, "{a} vs {b}");
                }
            }
        }
    }

    /// The shell command of the unit's one `ExecStart=`, as systemd hands it to /bin/sh:
    /// continuation lines joined, `$$` unescaped.
    fn update_script() -> String {
        let unit = update_service();
        let joined = unit.replace("\\\n", "");
        let exec = ini(&joined);
        let line = get(&exec, "Service", "ExecStart");
        let script = line
            .strip_prefix("/bin/sh -c '")
            .and_then(|l| l.strip_suffix('\''))
            .unwrap_or_else(|| panic!("not /bin/sh -c '...': {line}"));
        assert!(!script.contains('\''), "{script}");
        // systemd would expand a lone $ itself: every shell $ is written $$.
        assert_eq!(
            script.matches('$').count(),
            2 * script.matches("$$").count(),
            "{script}"
        );
        script.replace("$$", "$")
    }

    #[test]
    fn update_service_refreshes_and_restarts_alloy_only_when_the_link_moved() {
        let unit = update_service();
        let entries = ini(&unit.replace("\\\n", ""));
        assert_eq!(get(&entries, "Service", "Type"), "oneshot");
        // One command: nothing is spawned after another one exited.
        for key in ["ExecStartPre", "ExecStartPost"] {
            assert!(!entries.iter().any(|(_, k, _)| k == key), "{unit}");
        }
        // Not fatal to anything but itself: no drop-in on the host's own sysupdate service.
        assert_eq!(UPDATE_SERVICE, "alloy-sysupdate.service");
        assert!(!unit.contains("restart systemd-sysext"), "{unit}");

        // Run the script with stand-ins for the tools, in a root where the link moves or not.
        for moved in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin).unwrap();
            let log = dir.path().join("log");
            let link = dir.path().join("alloy.raw");
            std::os::unix::fs::symlink("old.raw", &link).unwrap();
            let stub = |name: &str, body: &str| {
                use std::os::unix::fs::PermissionsExt;
                let path = bin.join(name);
                std::fs::write(
                    &path,
                    format!(
                        "#!/bin/sh\necho \"{name} $*\" >> {}\n{body}\n",
                        log.display()
                    ),
                )
                .unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            };
            let relink = if moved {
                format!("ln -sfn new.raw {}", link.display())
            } else {
                String::new()
            };
            stub("systemd-sysupdate", &relink);
            stub("systemd-sysext", "");
            stub("systemctl", "");
            let script = update_script()
                .replace(SYSUPDATE, "systemd-sysupdate")
                .replace(CURRENT_LINK, link.to_str().unwrap());
            let status = std::process::Command::new("/bin/sh")
                .args(["-c", &script])
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .status()
                .unwrap();
            assert!(status.success(), "{script}");
            let calls = std::fs::read_to_string(&log).unwrap();
            let expected = if moved {
                // In this order: merge the new image, reload units (systemd < 255 does not),
                // restart Alloy only if it runs.
                "systemd-sysupdate -C alloy update\nsystemd-sysext refresh\nsystemctl daemon-reload\nsystemctl try-restart alloy.service\n"
            } else {
                "systemd-sysupdate -C alloy update\n"
            };
            assert_eq!(calls, expected, "moved={moved}");
        }

        // A failed update stops there, and fails the unit.
        let script = update_script().replace(SYSUPDATE, "false");
        let status = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .status()
            .unwrap();
        assert!(!status.success(), "{script}");

        let timer = ini(UPDATE_TIMER_UNIT);
        assert_eq!(get(&timer, "Install", "WantedBy"), "timers.target");
        assert_eq!(get(&timer, "Timer", "OnUnitActiveSec"), "6h");
    }
}
