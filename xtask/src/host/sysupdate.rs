//! How a host stays current: the systemd-sysupdate transfer file; `alloy-sysupdate`, the script
//! that applies what the link says, checks that Alloy comes up and rolls back a release that
//! does not (`alloy-sysupdate.sh` beside this file); and alloy-sysupdate.service and .timer,
//! which run it.

use anyhow::bail;

use crate::arch::Arch;
use crate::contract::{
    ImageName, CURRENT_LINK, HOST_KEYRING, IMAGES_DIR, SIGNATURE_NAME, TRANSFER_PATHS,
    UPDATE_SCRIPT,
};
use crate::util::http::Http;
use crate::util::progress::detail;
use crate::verify::signatures_published;

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
///
/// [`Channel::base_url`]: crate::contract::Channel::base_url
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
# The running image and the one before it stay: alloy-sysupdate rolls back to it.
InstancesMax=2
Mode=0644
",
        base = escape_specifiers(base(base_url)),
        transfer = TRANSFER_PATHS[0],
        conf = TRANSFER_PATHS[1],
    )
}

/// `Verify=` for the transfer file of the channel at `channel_url`: as `given`, else `yes` when
/// the channel publishes a signature. An unsigned channel is refused unless `--verify no` says
/// so: an image runs root units (alloy-setup.service), so a host that takes unsigned images
/// gives root to whoever can write the bucket.
pub fn verify_setting(given: Option<bool>, http: &Http, channel_url: &str) -> anyhow::Result<bool> {
    match given {
        Some(true) => Ok(true),
        Some(false) => {
            detail(format!(
                "Verify=no: hosts take any image {channel_url}/SHA256SUMS lists; whoever can write the bucket gets root on them"
            ));
            Ok(false)
        }
        None if signatures_published(http, channel_url)? => Ok(true),
        None => bail!(
            "{channel_url}/{SIGNATURE_NAME} does not exist: this channel's index is not signed, so hosts \
             could not tell an image of ours from one anyone with write access to the bucket put \
             there, and every image runs root units (alloy-setup.service). Sign the index: run \
             cargo xtask publish with SYSEXT_GPG_KEY set (an armored private key), then give \
             hosts its public key as {HOST_KEYRING} (butane --sysupdate --keyring FILE writes \
             it). Or pass --verify no to give that up: Verify=no, hosts then trust whoever can \
             write the bucket with root."
        ),
    }
}

/// `alloy-sysupdate`, installed as [`UPDATE_SCRIPT`]: a bash script, since Flatcar has bash and
/// no other shell worth naming, and its `/dev/tcp` asks Alloy whether it is ready without curl.
pub const UPDATE_SCRIPT_TEXT: &str = include_str!("alloy-sysupdate.sh");

/// `alloy-sysupdate.service`: runs `alloy-sysupdate update`, which applies what the link says
/// (whoever moved it), installs a newer release unless held, and rolls back one that does not
/// come up. Its own unit rather than a drop-in on the host's systemd-sysupdate.service: a failed
/// update (bucket unreachable, bad signature, a release rolled back) then fails only this unit,
/// visible in `systemctl --failed`, never the host's own update run, and the host needs no
/// placeholder transfer in /etc/sysupdate.d. One command: no state is carried between commands
/// of the unit, and none is spawned after another left the unit's cgroup empty (the test
/// machine's emulated cgroups sometimes lose it then: 219/CGROUP).
pub fn update_service() -> String {
    format!(
        "\
[Unit]
Description=Update the alloy sysext, run the new Alloy, roll back a release that does not come up
Documentation=https://github.com/grafana/alloy
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart={UPDATE_SCRIPT} update
# A download, a switch, its health check and a rollback take minutes; a run stuck for an hour
# is stopped, and the next one carries on from where the link points.
TimeoutStartSec=1h
"
    )
}

/// `alloy-sysupdate.timer`: systemd's own systemd-sysupdate.timer schedule. Every run waits a
/// random 0-4 h first, so a fleet does not install (and restart Alloy) at once.
pub const UPDATE_TIMER_UNIT: &str = "\
[Unit]
Description=Look for a newer alloy sysext every few hours, at a random time per host

[Timer]
# 15 minutes after boot, then 2 hours after each run, and every Saturday (caught up at boot when
# the host was off): each plus a random delay of up to 4 hours, fixed anew for every run.
OnBootSec=15min
OnUnitActiveSec=2h
OnCalendar=Sat
RandomizedDelaySec=4h
Persistent=yes

[Install]
WantedBy=timers.target
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Channel;
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
        let signed = ini(&text);
        // Every setting, in order: nothing more than these.
        let expected = [
            ("Transfer", "Verify", "yes"),
            ("Source", "Type", "url-file"),
            ("Source", "Path", "https://images.example/alloy/"),
            ("Source", "MatchPattern", "alloy-@v-arm64.raw"),
            ("Target", "Type", "regular-file"),
            ("Target", "Path", "/opt/extensions/alloy"),
            ("Target", "MatchPattern", "alloy-@v-arm64.raw"),
            ("Target", "CurrentSymlink", "/etc/extensions/alloy.raw"),
            ("Target", "InstancesMax", "2"),
            ("Target", "Mode", "0644"),
        ];
        assert_eq!(
            signed,
            expected.map(|(s, k, v)| (s.into(), k.into(), v.into()))
        );
        // The pattern with @v replaced is exactly the name `xtask build` gives the image.
        let version: Version = "1.10.2".parse().unwrap();
        assert_eq!(
            get(&signed, "Source", "MatchPattern").replace("@v", "1.10.2"),
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

    /// Runs `body` in bash with the script's functions defined: sourced, so its `main` does not
    /// run. Returns what it printed, failing the test when bash does.
    fn in_script(body: &str) -> String {
        in_script_with(&[], body)
    }

    /// [`in_script`] in a directory holding `files` (name, bytes).
    fn in_script_with(files: &[(&str, Vec<u8>)], body: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let script = dir.path().join("alloy-sysupdate");
        std::fs::write(&script, UPDATE_SCRIPT_TEXT).unwrap();
        let output = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("source \"$1\" || exit 99\n{body}"))
            .arg("test")
            .arg(&script)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{body}\n--- stdout\n{stdout}\n--- stderr\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// The value the script gives `name` on a line `NAME=value` of its own.
    fn script_setting(name: &str) -> &'static str {
        let prefix = format!("{name}=");
        let mut found = UPDATE_SCRIPT_TEXT
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()));
        let value = found.next().unwrap_or_else(|| panic!("no {name}= line"));
        assert!(found.next().is_none(), "{name}= twice");
        value
    }

    #[test]
    fn the_script_uses_the_hosts_paths_and_names_of_the_contract() {
        use crate::contract::{EXTENSION_NAME, SYSUPDATE, UPDATE_SERVICE, UPDATE_STATE_DIR, USER};
        use crate::payload::{ALLOY_PATH, EXTENSION_RELEASE_PATH, UNIT_PATH};
        let unit_name = UNIT_PATH.rsplit('/').next().unwrap();
        for (name, expected) in [
            ("LINK", CURRENT_LINK.to_string()),
            ("IMAGES", IMAGES_DIR.to_string()),
            ("COMPONENT", EXTENSION_NAME.to_string()),
            ("SYSUPDATE", SYSUPDATE.to_string()),
            ("MERGED_RELEASE", format!("/{EXTENSION_RELEASE_PATH}")),
            ("ALLOY", format!("/{ALLOY_PATH}")),
            ("SERVICE", unit_name.to_string()),
            ("UPDATE_SERVICE", UPDATE_SERVICE.to_string()),
            ("ALLOY_USER", USER.to_string()),
            ("STATE", UPDATE_STATE_DIR.to_string()),
            // Alloy's default --server.http.listen-addr.
            ("DEFAULT_LISTEN", "127.0.0.1:12345".to_string()),
            // The deadlines the README gives.
            (
                "READY_TIMEOUT",
                "${ALLOY_SYSUPDATE_READY_TIMEOUT:-120}".to_string(),
            ),
            ("STEADY", "${ALLOY_SYSUPDATE_STEADY:-15}".to_string()),
        ] {
            assert_eq!(script_setting(name), expected, "{name}");
        }
        assert_eq!(
            crate::contract::APPLIED_RECORD,
            format!("{UPDATE_STATE_DIR}/applied")
        );
        assert!(UPDATE_SCRIPT_TEXT.contains("\"$STATE/applied\""));
        assert!(UPDATE_SCRIPT_TEXT.starts_with("#!/bin/bash\n"));
    }

    #[test]
    fn the_script_reads_version_and_architecture_from_image_names() {
        let said = in_script(
            "for image in /opt/extensions/alloy/alloy-1.11.0-amd64.raw \\
               /opt/extensions/alloy/alloy-1.12.0-rc.1-arm64.raw alloy-2.0.0-amd64.raw; do \\
               echo \"$(version_of \"$image\") $(arch_of \"$image\")\"; done",
        );
        assert_eq!(said, "1.11.0 amd64\n1.12.0-rc.1 arm64\n2.0.0 amd64\n");
        // Versions become file names under rolled-back/: nothing that leaves the directory.
        let said = in_script(
            "for v in 1.11.0 1.12.0-rc.1 1.0~rc1 '' ../x a/b .hidden 'a b' 'a*'; do \\
               valid_version \"$v\" && echo \"yes $v\" || echo \"no $v\"; done",
        );
        assert_eq!(
            said,
            "yes 1.11.0\nyes 1.12.0-rc.1\nyes 1.0~rc1\nno \nno ../x\nno a/b\nno .hidden\nno a b\nno a*\n"
        );
    }

    /// A version systemd-sysupdate offers is the image's name with the transfer's pattern taken
    /// off: the rolled-back check compares Alloy's version, also when an operator narrowed the
    /// pattern to one major version.
    #[test]
    fn an_offered_version_is_named_as_the_transfer_pattern_says() {
        let transfer = transfer_file("https://b.example", Arch::Amd64, true);
        let narrowed = transfer.replace("MatchPattern=alloy-@v-", "MatchPattern = alloy-1.@v-");
        let said = in_script_with(
            &[
                ("alloy.transfer", transfer.into_bytes()),
                ("narrowed.conf", narrowed.into_bytes()),
            ],
            "TRANSFERS=(./missing ./alloy.transfer); target_pattern; candidate_image 1.11.0
             TRANSFERS=(./narrowed.conf); target_pattern; candidate_image 11.0
             version_of \"$(candidate_image 11.0)\"",
        );
        assert_eq!(
            said,
            "alloy-@v-amd64.raw\nalloy-1.11.0-amd64.raw\nalloy-1.@v-amd64.raw\nalloy-1.11.0-amd64.raw\n1.11.0\n"
        );
        // The script reads the files Butane writes, 257's name first.
        assert!(UPDATE_SCRIPT_TEXT.contains(&format!(
            "TRANSFERS=({} {})",
            TRANSFER_PATHS[0], TRANSFER_PATHS[1]
        )));
    }

    /// Each systemd reads one of the two transfer files (before 257 only alloy.conf; from 257
    /// alloy.transfer, and alloy.conf only without it). An operator who narrows the pattern in
    /// the file their systemd reads, and not in the other, must still have offered versions
    /// mapped back to Alloy's: else a release rolled back as "1.12.0" is offered as "12.0",
    /// not found among those rolled back, and installed and rolled back again on every run.
    #[test]
    fn the_pattern_comes_from_the_transfer_file_this_systemd_reads() {
        let transfer = transfer_file("https://b.example", Arch::Amd64, true);
        let narrowed = transfer.replace("MatchPattern=alloy-@v-", "MatchPattern=alloy-1.@v-");
        let said = in_script_with(
            &[
                ("alloy.transfer", transfer.clone().into_bytes()),
                ("alloy.conf", narrowed.clone().into_bytes()),
                ("narrowed.transfer", narrowed.into_bytes()),
                ("wide.conf", transfer.into_bytes()),
            ],
            "TRANSFERS=(./alloy.transfer ./alloy.conf)
             systemd_major() { echo 252; }; version_of \"$(candidate_image 12.0)\"
             systemd_major() { echo 255; }; version_of \"$(candidate_image 12.0)\"
             TRANSFERS=(./narrowed.transfer ./wide.conf)
             systemd_major() { echo 257; }; version_of \"$(candidate_image 12.0)\"
             systemd_major() { echo 252; }; version_of \"$(candidate_image 1.12.0)\"",
        );
        assert_eq!(said, "1.12.0\n1.12.0\n1.12.0\n1.12.0\n");
    }

    /// Alloy's command line as /proc/PID/cmdline has it, as the file `cmdline`.
    fn cmdline(words: &[&str]) -> [(&'static str, Vec<u8>); 1] {
        let mut bytes = Vec::new();
        for word in words {
            bytes.extend_from_slice(word.as_bytes());
            bytes.push(0);
        }
        [("cmdline", bytes)]
    }

    #[test]
    fn the_health_check_asks_the_listener_alloys_command_line_names() {
        let run = ["/usr/bin/alloy", "run"];
        let config = "/etc/alloy/config.alloy";
        for (flags, expected) in [
            (&[][..], "127.0.0.1 12345"),
            (
                &["--server.http.listen-addr=10.0.0.5:9090"][..],
                "10.0.0.5 9090",
            ),
            (
                &["--server.http.listen-addr", "0.0.0.0:8080"][..],
                "127.0.0.1 8080",
            ),
            (&["--server.http.listen-addr=:7070"][..], "127.0.0.1 7070"),
            (&["--server.http.listen-addr=[::]:7071"][..], "::1 7071"),
            (
                &["--server.http.listen-addr=[fd00::1]:7072"][..],
                "fd00::1 7072",
            ),
        ] {
            let words = [
                &run[..],
                flags,
                &["--storage.path=/var/lib/alloy/data", config],
            ]
            .concat();
            let said = in_script_with(&cmdline(&words), "listen_address cmdline");
            assert_eq!(said.trim_end(), expected, "{flags:?}");
        }
        // A process gone (no command line to read): Alloy's default.
        let said = in_script("listen_address /nonexistent");
        assert_eq!(said.trim_end(), "127.0.0.1 12345");
    }

    #[test]
    fn the_configuration_is_checked_with_the_flags_that_change_what_it_may_use() {
        let words = [
            "/usr/bin/alloy",
            "run",
            "--stability.level",
            "experimental",
            "--feature.community-components.enabled",
            "--server.http.listen-addr=127.0.0.1:1",
            "--storage.path=/var/lib/alloy/data",
            "/etc/alloy/other.alloy",
        ];
        let said = in_script_with(
            &cmdline(&words),
            "read_alloy_words cmdline; printf '%s|' \"${VALIDATE_FLAGS[@]}\"; echo \"$CONFIG\"",
        );
        assert_eq!(
            said,
            "--stability.level=experimental|--feature.community-components.enabled|/etc/alloy/other.alloy\n"
        );
    }

    /// A listener on loopback that answers each connection with the next of `statuses`.
    fn answering(statuses: &'static [u16]) -> u16 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (stream, status) in listener.incoming().zip(statuses) {
                let mut stream = stream.unwrap();
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let got = stream.read(&mut chunk).unwrap();
                    assert_ne!(got, 0, "{request:?}");
                    request.extend_from_slice(&chunk[..got]);
                }
                assert!(request.starts_with(b"GET /-/ready HTTP/1.0\r\n"));
                write!(stream, "HTTP/1.0 {status} X\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
        });
        port
    }

    #[test]
    fn readiness_is_the_status_alloy_answers_get_ready_with() {
        let port = answering(&[200, 503]);
        let said = in_script(&format!(
            "ready_status 127.0.0.1 {port}; ready_status 127.0.0.1 {port}; echo end"
        ));
        assert_eq!(said, "200\n503\nend\n");
        // Nothing listening, or no port to ask: no answer, not an error.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let said = in_script(&format!(
            "ready_status 127.0.0.1 {closed}; ready_status 127.0.0.1 ''; ready_status 127.0.0.1 'x;y'; echo end"
        ));
        assert_eq!(said, "end\n");
    }

    /// Deadlines that are not whole seconds are refused, naming both, before anything is done.
    #[test]
    fn deadlines_must_be_whole_seconds() {
        for (ready, steady) in [("2m", "15"), ("120", ""), ("120", "-1")] {
            let said = in_script(&format!(
                "READY_TIMEOUT='{ready}' STEADY='{steady}'; (main status) 2>&1; echo \"exit=$?\""
            ));
            assert!(
                said.contains("must be whole seconds") && said.ends_with("exit=1\n"),
                "{ready:?} {steady:?}: {said}"
            );
        }
        let said = in_script("(main status) >/dev/null 2>&1; echo \"exit=$?\"");
        assert_eq!(said, "exit=0\n");
    }

    /// The lock is root's alone. flock(2) needs no write access: a local user who can open the
    /// lock at all can take it and keep it, and then no update, hold or unhold runs again.
    #[test]
    fn only_root_can_open_the_lock() {
        let said = in_script(
            "chmod 755 .; umask 022
             LOCK=$PWD/lock; (lock; stat -c %a \"$LOCK\")
             : > old.lock; chmod 644 old.lock; LOCK=$PWD/old.lock; (lock; stat -c %a \"$LOCK\")
             if [ \"$(id -u)\" = 0 ]; then
               setpriv --reuid=65534 --regid=65534 --clear-groups flock -n \"$LOCK\" true 2>/dev/null &&
                 echo 'nobody took it' || echo 'nobody could not take it'
             else
               echo 'nobody could not take it'
             fi",
        );
        assert_eq!(said, "600\n600\nnobody could not take it\n");
    }

    /// What the script runs as the alloy user (`alloy validate`, a binary of the release) does
    /// not inherit the lock: a process of its that lived on would hold it for ever.
    #[test]
    fn the_alloy_user_never_inherits_the_lock() {
        let setpriv = "#!/bin/bash\n[ -e /proc/self/fd/9 ] && echo \"fd 9 open in setpriv $*\" >>fd9.log\nwhile [ \"${1#--}\" != \"$1\" ]; do shift; done\nexec \"$@\"\n";
        let said = in_script_with(
            &[
                ("setpriv", setpriv.into()),
                ("alloy", b"#!/bin/sh\nexit 0\n".to_vec()),
                ("cmdline", b"/usr/bin/alloy\0run\0/etc/passwd\0".to_vec()),
            ],
            "chmod +x setpriv alloy; PATH=$PWD:$PATH ALLOY=$PWD/alloy ALLOY_USER=root LOCK=$PWD/lock
             lock; validate_config cmdline; echo \"validated: $?\"; cat fd9.log 2>/dev/null || true",
        );
        assert_eq!(said, "validated: 0\n");
    }

    /// Both channels' indexes are signed with the same key, so whoever can write the bucket,
    /// without the key, can copy rc/SHA256SUMS, its signature and the rc images to the stable
    /// folder. systemd orders 1.12.0-rc.1 above 1.12.0: a stable fleet would move to the rc and
    /// stay there when the release comes. A release candidate is installed only on a host that
    /// follows the rc folder.
    #[test]
    fn a_stable_host_never_installs_a_release_candidate() {
        let sysupdate = "#!/bin/sh\ncase $3 in\n  check-new) echo \"$OFFERED\" ;;\n  update) echo \"installed $4\" >>installed.log ;;\nesac\n";
        let stable = transfer_file("https://b.example", Arch::Amd64, true);
        let rc = transfer_file(
            &Channel::Rc.base_url("https://b.example"),
            Arch::Amd64,
            true,
        );
        let install = |transfer: &str, offered: &str| {
            in_script_with(
                &[
                    ("sysupdate", sysupdate.into()),
                    ("alloy.transfer", transfer.into()),
                ],
                &format!(
                    "chmod +x sysupdate; SYSUPDATE=$PWD/sysupdate STATE=$PWD/state
                     TRANSFERS=(./alloy.transfer); export OFFERED={offered}
                     install_newer >/dev/null 2>&1; echo \"status=$? $(cat installed.log 2>/dev/null)\""
                ),
            )
        };
        assert_eq!(install(&stable, "1.12.0"), "status=0 installed 1.12.0\n");
        assert_eq!(install(&stable, "1.12.0-rc.1"), "status=1 \n");
        assert_eq!(
            install(&rc, "1.12.0-rc.1"),
            "status=0 installed 1.12.0-rc.1\n"
        );
    }

    /// A refresh that fails is answered by going back and trying the release again on the next
    /// run, as the cause may be another extension. But an image that no refresh merges (a
    /// format this kernel cannot mount, say) while the one before it merges is the release's
    /// own fault: retried for ever, every run would unmerge every extension on the host, and
    /// keep the release away from rollback. A second such failure rolls it back.
    #[test]
    fn a_release_no_refresh_merges_is_rolled_back_on_its_second_try() {
        let said = in_script(
            "mkdir images state; IMAGES=$PWD/images STATE=$PWD/state LINK=$PWD/alloy.raw
             old=$IMAGES/alloy-1.11.0-amd64.raw new=$IMAGES/alloy-1.12.0-amd64.raw
             : > \"$old\"; : > \"$new\"; relink \"$old\"; record applied \"$old\"
             # systemd-sysext refresh fails whenever the link leads to 1.12.0.
             merge() { [ \"$(linked)\" != \"$new\" ]; }; merged() { true; }; alloy_running() { false; }
             relink \"$new\"
             for run in 1 2 3; do
               (take_up_retry; follow_link) >/dev/null 2>&1
               echo \"run $run: $? $(ls images | tr '\\n' ' ')$(ls state/rolled-back 2>/dev/null)\"
             done
             version_of \"$(linked)\"",
        );
        assert_eq!(
            said,
            "run 1: 1 alloy-1.11.0-amd64.raw alloy-1.12.0-amd64.raw \n\
             run 2: 1 alloy-1.11.0-amd64.raw 1.12.0\n\
             run 3: 0 alloy-1.11.0-amd64.raw 1.12.0\n\
             1.11.0\n"
        );
    }

    /// A rolled-back image is removed so that the one in use stays the newest installed. Only
    /// an image of ours, in the images directory: one an operator linked by hand from elsewhere
    /// (a test build in a home directory, say) is theirs, recorded but kept.
    #[test]
    fn a_rollback_removes_only_images_of_the_images_directory() {
        let said = in_script(
            "mkdir real home state; ln -s real images; IMAGES=$PWD/images STATE=$PWD/state LINK=$PWD/alloy.raw
             : > images/alloy-1.11.0-amd64.raw; : > images/alloy-1.12.0-amd64.raw
             : > home/alloy-1.13.0-amd64.raw; relink \"$IMAGES/alloy-1.11.0-amd64.raw\"
             # The image's path as the link resolves it: through an images directory that may
             # itself be a link.
             reject 1.12.0 \"$(pwd -P)/real/alloy-1.12.0-amd64.raw\" 'did not come up'
             reject 1.13.0 \"$PWD/home/alloy-1.13.0-amd64.raw\" 'did not come up'
             ls images/ home state/rolled-back | tr '\\n' ' '",
        );
        assert_eq!(
            said,
            "home: alloy-1.13.0-amd64.raw  images/: alloy-1.11.0-amd64.raw  state/rolled-back: 1.12.0 1.13.0 "
        );
    }

    /// A host whose /etc/extensions/alloy.raw was the image itself, a plain file (copied there
    /// by hand, as Flatcar's docs show for other extensions), records that path as applied.
    /// systemd-sysupdate then makes it a link to the new release; a rollback "back to" it must
    /// not point the link at itself, which unmerges Alloy for good and leaves no link to follow.
    #[test]
    fn a_rollback_never_points_the_link_at_itself() {
        let said = in_script(
            "mkdir images; : > images/alloy-1.11.0-amd64.raw; LINK=$PWD/alloy.raw
             ln -s \"$PWD/images/alloy-1.11.0-amd64.raw\" \"$LINK\"
             merge() { return 0; }; merged() { return 0; }
             restore \"$LINK\"; echo \"restored=$?\"; readlink \"$LINK\" | sed \"s|$PWD/||\"",
        );
        assert_eq!(said, "restored=1\nimages/alloy-1.11.0-amd64.raw\n");
    }

    /// A fake `setpriv` that runs the command after its options, and a fake `alloy` that logs
    /// its arguments to ran.log, then exits with $FAKE_EXIT, or is killed by $FAKE_SIGNAL.
    fn fake_validation() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (
                "setpriv",
                b"#!/bin/bash\nwhile [ \"${1#--}\" != \"$1\" ]; do shift; done\nexec \"$@\"\n".to_vec(),
            ),
            (
                "alloy",
                b"#!/bin/bash\necho \"ran $*\" >>ran.log\n[ -z \"${FAKE_SIGNAL:-}\" ] || kill -s \"$FAKE_SIGNAL\" $$\necho 'Error: said no'\nexit \"${FAKE_EXIT:-0}\"\n".to_vec(),
            ),
        ]
    }

    /// The running Alloy's command line is the alloy user's to rewrite (it is the process's own
    /// memory), and the alloy user can signal `alloy validate`, which runs as it. A verdict
    /// against the new release makes it "never installed again": it may only come from what
    /// the alloy user cannot steer. Otherwise the check is skipped (2, "cannot tell") and the
    /// restart and health check decide.
    #[test]
    fn only_what_the_alloy_user_cannot_steer_counts_against_a_release() {
        // Validates the command line `alloy run WORDS` (each word double-quoted in bash).
        let run = |words: &[&str], env: &str| -> String {
            let words: String = words.iter().map(|w| format!(" \"{w}\"")).collect();
            in_script_with(
                &fake_validation(),
                &format!(
                    "chmod +x setpriv alloy; PATH=$PWD:$PATH ALLOY=$PWD/alloy ALLOY_USER=root
                     mkdir -m 0777 open; : > open/config.alloy
                     printf '%s\\0' /usr/bin/alloy run{words} > cmdline
                     {env} validate_config cmdline >/dev/null
                     echo \"status=$? $(cat ran.log 2>/dev/null)\""
                ),
            )
        };
        // /etc/passwd: root's, in directories only root can write.
        let etc = "/etc/passwd";
        assert_eq!(run(&[etc], ""), "status=0 ran validate /etc/passwd\n");
        assert_eq!(
            run(&[etc], "FAKE_EXIT=1"),
            "status=1 ran validate /etc/passwd\n"
        );
        // Ended by a signal (the alloy user's, or head's SIGPIPE), or timed out: no answer.
        assert_eq!(
            run(&[etc], "FAKE_SIGNAL=KILL"),
            "status=2 ran validate /etc/passwd\n"
        );
        assert_eq!(
            run(&[etc], "FAKE_EXIT=124"),
            "status=2 ran validate /etc/passwd\n"
        );
        // A configuration others can change between the check of the new release and that of
        // the one running (a file in a directory anyone writes, a memfd through /proc, a path
        // relative to the alloy user's own working directory): not checked.
        for config in [
            "$PWD/open/config.alloy",
            "$PWD/open",
            "/proc/self/fd/0",
            "open/config.alloy",
        ] {
            assert_eq!(run(&[config], "FAKE_EXIT=1"), "status=2 \n", "{config}");
        }
        // Flags only with values every Alloy knows; the user only when it exists.
        for flags in [
            &["--stability.level=generally-available-in-1.11"][..],
            &["--stability.level", "bogus"][..],
            &["--feature.community-components.enabled=maybe"][..],
        ] {
            let words = [flags, &[etc]].concat();
            assert_eq!(run(&words, "FAKE_EXIT=1"), "status=2 \n", "{flags:?}");
        }
        assert_eq!(
            run(&[etc], "ALLOY_USER=no-such-user-here FAKE_EXIT=1"),
            "status=2 \n"
        );
        let words = [
            "--stability.level",
            "experimental",
            "--feature.community-components.enabled=true",
            etc,
        ];
        assert_eq!(
            run(&words, ""),
            "status=0 ran validate --stability.level=experimental --feature.community-components.enabled=true /etc/passwd\n"
        );
    }

    /// shellcheck finds nothing in the script (install-deps.sh --test installs it; without it
    /// this skips, saying so, except in CI).
    #[test]
    fn shellcheck_finds_nothing_in_the_script() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("alloy-sysupdate");
        std::fs::write(&script, UPDATE_SCRIPT_TEXT).unwrap();
        let output = match std::process::Command::new("shellcheck")
            .arg(&script)
            .output()
        {
            Ok(output) => output,
            Err(_) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!(
                    "SKIPPED: shellcheck is not installed (bash scripts/install-deps.sh --test)"
                );
                return;
            }
            Err(e) => panic!("running shellcheck (bash scripts/install-deps.sh --test): {e}"),
        };
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }

    #[test]
    fn the_service_runs_the_script_once_and_the_timer_spreads_a_fleet_over_hours() {
        let unit = update_service();
        let entries = ini(&unit);
        assert_eq!(get(&entries, "Service", "Type"), "oneshot");
        assert_eq!(
            get(&entries, "Service", "ExecStart"),
            "/opt/bin/alloy-sysupdate update"
        );
        // One command: nothing is spawned after another one exited.
        for key in ["ExecStartPre", "ExecStartPost", "ExecStopPost"] {
            assert!(!entries.iter().any(|(_, k, _)| k == key), "{unit}");
        }
        assert_eq!(get(&entries, "Service", "TimeoutStartSec"), "1h");
        // Not fatal to anything but itself: no drop-in on the host's own sysupdate service.
        assert_eq!(crate::contract::UPDATE_SERVICE, "alloy-sysupdate.service");
        assert!(!unit.contains("systemd-sysext"), "{unit}");

        // systemd's own systemd-sysupdate.timer (systemd 257, units/systemd-sysupdate.timer).
        let timer = ini(UPDATE_TIMER_UNIT);
        for (key, value) in [
            ("OnBootSec", "15min"),
            ("OnUnitActiveSec", "2h"),
            ("OnCalendar", "Sat"),
            ("RandomizedDelaySec", "4h"),
            ("Persistent", "yes"),
        ] {
            assert_eq!(get(&timer, "Timer", key), value, "{key}");
        }
        assert_eq!(get(&timer, "Install", "WantedBy"), "timers.target");
    }
}
