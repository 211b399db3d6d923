//! What a Flatcar host needs to consume the images: the systemd-sysupdate transfer file that
//! keeps it on the newest release, and a Butane config that installs one release pinned by hash.

use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::Args;
use xshell::Shell;

use crate::arch::Arch;
use crate::cli::parse_yes_no;
use crate::contract::{
    checksum_name, Channel, ImageName, DEFAULT_BASE_URL, EXTENSION_NAME, SIGNATURE_NAME,
};
use crate::latest::{GithubArgs, VersionArg};
use crate::util::checksums::{Digest, Sums};
use crate::util::http::{self, Http, NotFound};
use crate::util::progress::detail;
use crate::version::Version;

/// Where versioned images live on the host; `/etc/extensions/alloy.raw` links to one of them.
pub const IMAGES_DIR: &str = "/opt/extensions/alloy";
pub const CURRENT_LINK: &str = "/etc/extensions/alloy.raw";
/// systemd-sysupdate reads component `alloy` (`-C alloy`) from here, under two names with the
/// same text: systemd 257 and later read `*.transfer` (and `*.conf` only when no `*.transfer`
/// exists, with a warning), systemd 252 reads only `*.conf`. With both, each reads exactly one.
pub const TRANSFER_PATHS: [&str; 2] = [
    "/etc/sysupdate.alloy.d/alloy.transfer",
    "/etc/sysupdate.alloy.d/alloy.conf",
];
/// The units that apply updates: alloy's own, not a drop-in on the host's systemd-sysupdate.service.
pub const UPDATE_SERVICE: &str = "alloy-sysupdate.service";
pub const UPDATE_TIMER: &str = "alloy-sysupdate.timer";
/// Where Flatcar (and systemd's own units) have the client.
pub const SYSUPDATE: &str = "/usr/lib/systemd/systemd-sysupdate";
/// The keyring systemd-sysupdate checks `SHA256SUMS.gpg` against. systemd-pull uses the first
/// keyring that exists, this one before the vendor's /usr/lib/systemd/import-pubring.gpg: writing
/// it replaces the vendor keyring for every `Verify=yes` download on the host, it does not add to it.
pub const HOST_KEYRING: &str = "/etc/systemd/import-pubring.gpg";

/// Standard base64 with padding, for a `data:` URL.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
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
        base = base(base_url),
        transfer = TRANSFER_PATHS[0],
        conf = TRANSFER_PATHS[1],
    )
}

/// Whether `<base>/SHA256SUMS.gpg` is published, so hosts can insist on it.
pub fn signatures_published(http: &Http, base_url: &str) -> anyhow::Result<bool> {
    let url = format!("{}/{SIGNATURE_NAME}", base(base_url));
    match http.get_bytes_with_headers(&url, &[], 1 << 20) {
        Ok(_) => Ok(true),
        Err(error) if error.downcast_ref::<NotFound>().is_some() => Ok(false),
        Err(error) => Err(error.context(format!(
            "checking whether {url} exists, to choose Verify= (or pass --verify yes|no)"
        ))),
    }
}

/// Print the systemd-sysupdate transfer file that keeps /etc/extensions/alloy.raw up to date.
///
/// Install it as /etc/sysupdate.alloy.d/alloy.transfer (systemd 257+) and alloy.conf (252) and
/// run `systemd-sysupdate -C alloy update`.
#[derive(Args, Debug)]
pub struct Sysupdate {
    /// Architecture of the host
    #[arg(long, value_enum, default_value = "amd64")]
    pub arch: Arch,

    /// Public base URL of the published images and SHA256SUMS
    #[arg(long, env = "SYSEXT_BASE_URL", default_value = DEFAULT_BASE_URL, value_name = "URL")]
    pub base_url: String,

    /// Which index the host follows: stable (<URL>/SHA256SUMS) or rc (<URL>/rc/SHA256SUMS,
    /// release candidates, which systemd orders above their release: never mix them)
    #[arg(long, value_enum, default_value = "stable")]
    pub channel: Channel,

    /// Verify=yes (SHA256SUMS.gpg must be valid) or no [default: yes when the channel's SHA256SUMS.gpg exists]
    #[arg(long, value_name = "yes|no", value_parser = parse_yes_no)]
    pub verify: Option<bool>,
}

impl Sysupdate {
    /// The transfer file for the channel, `Verify=` as given or from whether the channel's
    /// index is signed.
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        http::check_url(&self.base_url).context("--base-url / SYSEXT_BASE_URL")?;
        let channel_url = self.channel.base_url(&self.base_url);
        let verify = match self.verify {
            Some(verify) => verify,
            None => signatures_published(&Http::new(), &channel_url)?,
        };
        print!("{}", transfer_file(&channel_url, self.arch, verify));
        Ok(())
    }
}

/// Print a Butane config (variant flatcar) that installs one image, pinned by its sha256.
///
/// The digest comes from <DIST>/alloy-<VERSION>-<ARCH>.raw.sha256 when that file exists, else
/// from the bucket's .sha256. Translate with `butane --strict`.
#[derive(Args, Debug)]
pub struct Butane {
    /// Alloy version (X.Y.Z), or `latest`
    pub version: VersionArg,

    /// Architecture of the host
    #[arg(long, value_enum, default_value = "amd64")]
    pub arch: Arch,

    /// Public base URL of the published images
    #[arg(long, env = "SYSEXT_BASE_URL", default_value = DEFAULT_BASE_URL, value_name = "URL")]
    pub base_url: String,

    /// Local build output to read the .sha256 from [default: dist/ at the repository root]
    #[arg(long, value_name = "DIR")]
    pub dist: Option<PathBuf>,

    /// Also install the sysupdate transfer file and enable alloy-sysupdate.timer, so the host
    /// picks up new releases, merges them and restarts Alloy
    #[arg(long)]
    pub sysupdate: bool,

    /// With --sysupdate: which index the host follows, stable (<URL>/) or rc (<URL>/rc/,
    /// release candidates only). An rc VERSION needs --channel rc
    #[arg(long, value_enum, default_value = "stable")]
    pub channel: Channel,

    /// With --sysupdate: Verify=yes or no [default: yes when the channel's SHA256SUMS.gpg exists]
    #[arg(long, value_name = "yes|no", value_parser = parse_yes_no, requires = "sysupdate")]
    pub verify: Option<bool>,

    /// With --sysupdate: a binary public keyring (gpg --export KEYID) to install as
    /// /etc/systemd/import-pubring.gpg, which Verify=yes checks SHA256SUMS.gpg against. It
    /// REPLACES the vendor keyring /usr/lib/systemd/import-pubring.gpg for every Verify=yes
    /// download on the host (systemd-pull reads the first that exists): include any other key
    /// the host needs in FILE
    #[arg(long, value_name = "FILE", requires = "sysupdate")]
    pub keyring: Option<PathBuf>,

    #[command(flatten)]
    pub github: GithubArgs,
}

impl Butane {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        http::check_url(&self.base_url).context("--base-url / SYSEXT_BASE_URL")?;
        let version = self.version.clone().resolve(&self.github)?;
        print!("{}", butane(&Http::new(), &self, &version)?);
        Ok(())
    }
}

/// Indents every line of `text` by `spaces` (for a YAML block scalar).
fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines()
        .map(|line| {
            if line.is_empty() {
                "\n".to_string()
            } else {
                format!("{pad}{line}\n")
            }
        })
        .collect()
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

/// The Butane config (variant flatcar): the image pinned by `digest`, downloaded from
/// `image_base_url` (the folder of the version's channel), the link that merges it, and with
/// `transfer` the sysupdate transfer file and the service and timer that apply updates.
pub fn butane_config(
    version: &Version,
    arch: Arch,
    image_base_url: &str,
    digest: &Digest,
    transfer: Option<&str>,
    keyring: Option<&[u8]>,
) -> String {
    let name = ImageName::new(version, arch).file_name();
    let mut out = format!(
        "\
# Alloy {tag} as a systemd-sysext for Flatcar ({arch}). Translate with: butane --strict
variant: flatcar
version: 1.0.0
storage:
  files:
    - path: {IMAGES_DIR}/{name}
      mode: 0644
      contents:
        source: {base}/{name}
        verification:
          hash: sha256-{digest}
",
        tag = version.tag(),
        base = base(image_base_url),
    );
    if let Some(transfer) = transfer {
        for path in TRANSFER_PATHS {
            out.push_str(&format!(
                "    - path: {path}\n      mode: 0644\n      contents:\n        inline: |\n{}",
                indent(transfer, 10)
            ));
        }
    }
    if let Some(keyring) = keyring {
        out.push_str(&format!(
            "    # Replaces, not extends, the vendor keyring /usr/lib/systemd/import-pubring.gpg\n    - path: {HOST_KEYRING}\n      mode: 0644\n      contents:\n        source: \"data:;base64,{}\"\n",
            base64(keyring)
        ));
    }
    out.push_str(&format!(
        "  links:
    - path: {CURRENT_LINK}
      target: {IMAGES_DIR}/{name}
      hard: false
"
    ));
    if transfer.is_some() {
        out.push_str(&format!(
            "\
systemd:
  units:
    - name: {UPDATE_SERVICE}
      contents: |
{}    - name: {UPDATE_TIMER}
      enabled: true
      contents: |
{}",
            indent(&update_service(), 8),
            indent(UPDATE_TIMER_UNIT, 8)
        ));
    }
    out
}

/// The published digest of an image: from `<dist>/<name>.sha256` when built here, else from the
/// bucket's `<base>/<name>.sha256`.
pub fn image_digest(
    http: &Http,
    options: &Butane,
    version: &Version,
    name: &str,
) -> anyhow::Result<(Digest, String)> {
    let dist = options.dist.clone().unwrap_or_else(crate::default_dist);
    let local = dist.join(checksum_name(name));
    let (text, source) = if local.exists() {
        let text = std::fs::read_to_string(&local)
            .with_context(|| format!("reading {}", local.display()))?;
        (text, local.display().to_string())
    } else {
        let image_base = Channel::of(version).base_url(&options.base_url);
        let url = format!("{image_base}/{}", checksum_name(name));
        let text = http.get_text(&url, 1 << 16).with_context(|| {
            format!(
                "{name} is neither built in {} nor published at {image_base}: build it (cargo xtask build {version}) or check --base-url",
                dist.display(),
            )
        })?;
        (text, url)
    };
    let digest = Sums::parse(&text, &source)?.require(name)?;
    Ok((digest, source))
}

/// The Butane config `cargo xtask butane` prints.
fn butane(http: &Http, options: &Butane, version: &Version) -> anyhow::Result<String> {
    if options.sysupdate && version.is_release_candidate() && options.channel == Channel::Stable {
        bail!(
            "{version} is a release candidate, published only in the rc channel: pass --channel rc \
             (a stable host on an rc would never take the release, which systemd orders below it)"
        );
    }
    let name = ImageName::new(version, options.arch).file_name();
    let (digest, source) = image_digest(http, options, version, &name)?;
    detail(format!("{name}: sha256 {digest} (from {source})"));
    let transfer = if options.sysupdate {
        let channel_url = options.channel.base_url(&options.base_url);
        let verify = match options.verify {
            Some(verify) => verify,
            None => signatures_published(http, &channel_url)?,
        };
        if verify && options.keyring.is_none() {
            detail(format!(
                "Verify=yes: hosts need the signing key in {HOST_KEYRING}; pass --keyring FILE to install it"
            ));
        }
        Some(transfer_file(&channel_url, options.arch, verify))
    } else {
        None
    };
    let keyring = match &options.keyring {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading --keyring {}", path.display()))?;
            if bytes.starts_with(b"-----BEGIN") {
                bail!("--keyring {} is armored; systemd-sysupdate needs a binary keyring: gpg --dearmor it, or export without --armor", path.display());
            }
            detail(format!(
                "--keyring: {HOST_KEYRING} replaces the vendor keyring /usr/lib/systemd/import-pubring.gpg for every Verify=yes download on the host"
            ));
            Some(bytes)
        }
        None => None,
    };
    Ok(butane_config(
        version,
        options.arch,
        &Channel::of(version).base_url(&options.base_url),
        &digest,
        transfer.as_deref(),
        keyring.as_deref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[Section]` -> key=value pairs, as systemd reads unit-style files (comments dropped).
    fn ini(text: &str) -> Vec<(String, String, String)> {
        let mut section = String::new();
        let mut out = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
            } else {
                let (key, value) = line.split_once('=').expect("key=value");
                out.push((section.clone(), key.to_string(), value.to_string()));
            }
        }
        out
    }

    fn get<'a>(entries: &'a [(String, String, String)], section: &str, key: &str) -> &'a str {
        let found: Vec<&str> = entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect();
        assert_eq!(found.len(), 1, "[{section}] {key}: {found:?}");
        found[0]
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

    #[test]
    fn butane_without_sysupdate_installs_and_links_only() {
        let version: Version = "1.10.2".parse().unwrap();
        let digest = crate::util::checksums::hash_bytes(b"image");
        let text = butane_config(
            &version,
            Arch::Amd64,
            "https://b.example/",
            &digest,
            None,
            None,
        );
        assert!(
            text.contains("variant: flatcar\nversion: 1.0.0\n"),
            "{text}"
        );
        assert!(text.contains("    - path: /opt/extensions/alloy/alloy-1.10.2-amd64.raw\n"));
        assert!(text.contains("        source: https://b.example/alloy-1.10.2-amd64.raw\n"));
        assert!(text.contains(&format!("          hash: sha256-{digest}\n")));
        assert!(text.contains("\n  links:\n    - path: /etc/extensions/alloy.raw\n      target: /opt/extensions/alloy/alloy-1.10.2-amd64.raw\n"));
        assert!(!text.contains("sysupdate"), "{text}");
        assert!(!text.contains("systemd:"), "{text}");
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

    #[test]
    fn butane_with_sysupdate_installs_both_transfer_names_the_service_and_the_timer() {
        let version: Version = "1.10.2".parse().unwrap();
        let digest = crate::util::checksums::hash_bytes(b"image");
        let transfer = transfer_file("https://b.example/rc", Arch::Amd64, true);
        let text = butane_config(
            &version,
            Arch::Amd64,
            "https://b.example",
            &digest,
            Some(&transfer),
            Some(b"key"),
        );
        for path in [
            "/etc/sysupdate.alloy.d/alloy.transfer",
            "/etc/sysupdate.alloy.d/alloy.conf",
        ] {
            assert!(
                text.contains(&format!(
                    "    - path: {path}\n      mode: 0644\n      contents:\n        inline: |\n{}",
                    indent(&transfer, 10)
                )),
                "{path}:\n{text}"
            );
        }
        assert!(text.contains(&format!(
            "    - name: alloy-sysupdate.service\n      contents: |\n{}",
            indent(&update_service(), 8)
        )));
        assert!(text.contains(&format!(
            "    - name: alloy-sysupdate.timer\n      enabled: true\n      contents: |\n{}",
            indent(UPDATE_TIMER_UNIT, 8)
        )));
        assert!(!text.contains("systemd-sysupdate.timer"), "{text}");
        assert!(!text.contains("/etc/sysupdate.d/"), "{text}");
        assert!(text.contains("    - path: /etc/systemd/import-pubring.gpg\n"));
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn block_scalars_are_indented_and_keep_blank_lines() {
        assert_eq!(indent("a\n\nb\n", 4), "    a\n\n    b\n");
    }
}
