//! What a Flatcar host needs to consume the images: the systemd-sysupdate transfer file that
//! keeps it on the newest release, and a Butane config that installs one release pinned by hash.

use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::Args;
use xshell::Shell;

use crate::arch::Arch;
use crate::cli::parse_yes_no;
use crate::contract::{checksum_name, ImageName, DEFAULT_BASE_URL, EXTENSION_NAME, SIGNATURE_NAME};
use crate::latest::{GithubArgs, VersionArg};
use crate::util::checksums::{Digest, Sums};
use crate::util::http::{self, Http, NotFound};
use crate::util::progress::detail;
use crate::version::Version;

/// Where versioned images live on the host; `/etc/extensions/alloy.raw` links to one of them.
pub const IMAGES_DIR: &str = "/opt/extensions/alloy";
pub const CURRENT_LINK: &str = "/etc/extensions/alloy.raw";
/// systemd-sysupdate reads component `alloy` (`-C alloy`) from here.
pub const TRANSFER_PATH: &str = "/etc/sysupdate.alloy.d/alloy.conf";
/// The keyring systemd-sysupdate checks `SHA256SUMS.gpg` against (before /usr/lib/systemd/...).
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
pub fn transfer_file(base_url: &str, arch: Arch, verify: bool) -> String {
    let pattern = ImageName::match_pattern(arch);
    let verify = if verify { "yes" } else { "no" };
    format!(
        "\
# systemd-sysupdate transfer for the alloy sysext ({arch}); install as {TRANSFER_PATH}
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
        base = base(base_url)
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
/// Install it as /etc/sysupdate.alloy.d/alloy.conf and run `systemd-sysupdate -C alloy update`.
#[derive(Args, Debug)]
pub struct Sysupdate {
    /// Architecture of the host
    #[arg(long, value_enum, default_value = "amd64")]
    pub arch: Arch,

    /// Public base URL of the published images and SHA256SUMS
    #[arg(long, env = "SYSEXT_BASE_URL", default_value = DEFAULT_BASE_URL, value_name = "URL")]
    pub base_url: String,

    /// Verify=yes (SHA256SUMS.gpg must be valid) or no [default: yes when <URL>/SHA256SUMS.gpg exists]
    #[arg(long, value_name = "yes|no", value_parser = parse_yes_no)]
    pub verify: Option<bool>,
}

impl Sysupdate {
    /// The transfer file, `Verify=` as given or from what the bucket publishes.
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        http::check_url(&self.base_url).context("--base-url / SYSEXT_BASE_URL")?;
        let verify = match self.verify {
            Some(verify) => verify,
            None => signatures_published(&Http::new(), &self.base_url)?,
        };
        print!("{}", transfer_file(&self.base_url, self.arch, verify));
        Ok(())
    }
}

/// Print a Butane config (variant flatcar) that installs one image, pinned by its sha256.
///
/// The digest comes from <DIST>/alloy-<VERSION>-<ARCH>.raw.sha256 when that file exists, else
/// from <URL>/alloy-<VERSION>-<ARCH>.raw.sha256. Translate with `butane --strict`.
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

    /// Also install the sysupdate transfer file and enable systemd-sysupdate.timer, so the host
    /// picks up new releases and merges them
    #[arg(long)]
    pub sysupdate: bool,

    /// With --sysupdate: Verify=yes or no [default: yes when <URL>/SHA256SUMS.gpg exists]
    #[arg(long, value_name = "yes|no", value_parser = parse_yes_no, requires = "sysupdate")]
    pub verify: Option<bool>,

    /// With --sysupdate: a binary public keyring (gpg --export KEYID) to install as
    /// /etc/systemd/import-pubring.gpg, which Verify=yes checks SHA256SUMS.gpg against
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

/// The systemd-sysupdate.service drop-in: update the alloy component (the stock service only
/// reads /etc/sysupdate.d), and when the link moved, re-merge extensions so the new Alloy runs.
pub fn sysupdate_dropin() -> String {
    format!(
        "\
[Service]
ExecStartPre=/usr/bin/sh -c \"readlink --canonicalize {CURRENT_LINK} > /run/alloy-sysext-before\"
ExecStartPre=/usr/lib/systemd/systemd-sysupdate -C {EXTENSION_NAME} update
ExecStartPost=/usr/bin/sh -c \"readlink --canonicalize {CURRENT_LINK} > /run/alloy-sysext-after\"
ExecStartPost=/usr/bin/sh -c \"cmp --silent /run/alloy-sysext-before /run/alloy-sysext-after || systemctl restart systemd-sysext.service\"
"
    )
}

/// A transfer for the stock systemd-sysupdate.service, which fails with no transfer of its own.
pub const NOOP_TRANSFER: &str = "\
[Source]
Type=regular-file
Path=/
MatchPattern=invalid@v.raw

[Target]
Type=regular-file
Path=/
";

/// The Butane config (variant flatcar): the image pinned by `digest`, the link that merges it,
/// and with `transfer` the sysupdate transfer file, the timer and the drop-in that apply updates.
pub fn butane_config(
    version: &Version,
    arch: Arch,
    base_url: &str,
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
        base = base(base_url),
    );
    if let Some(transfer) = transfer {
        out.push_str(&format!(
            "    - path: {TRANSFER_PATH}\n      mode: 0644\n      contents:\n        inline: |\n{}",
            indent(transfer, 10)
        ));
        out.push_str(&format!(
            "    - path: /etc/sysupdate.d/noop.conf\n      mode: 0644\n      contents:\n        inline: |\n{}",
            indent(NOOP_TRANSFER, 10)
        ));
    }
    if let Some(keyring) = keyring {
        out.push_str(&format!(
            "    - path: {HOST_KEYRING}\n      mode: 0644\n      contents:\n        source: \"data:;base64,{}\"\n",
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
    - name: systemd-sysupdate.timer
      enabled: true
    - name: systemd-sysupdate.service
      dropins:
        - name: alloy.conf
          contents: |
{}",
            indent(&sysupdate_dropin(), 12)
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
        let url = format!("{}/{}", base(&options.base_url), checksum_name(name));
        let text = http.get_text(&url, 1 << 16).with_context(|| {
            format!(
                "{name} is neither built in {} nor published at {}: build it (cargo xtask build {version}) or check --base-url",
                dist.display(),
                base(&options.base_url),
            )
        })?;
        (text, url)
    };
    let digest = Sums::parse(&text, &source)?.require(name)?;
    Ok((digest, source))
}

/// The Butane config `cargo xtask butane` prints.
fn butane(http: &Http, options: &Butane, version: &Version) -> anyhow::Result<String> {
    let name = ImageName::new(version, options.arch).file_name();
    let (digest, source) = image_digest(http, options, version, &name)?;
    detail(format!("{name}: sha256 {digest} (from {source})"));
    let transfer = if options.sysupdate {
        let verify = match options.verify {
            Some(verify) => verify,
            None => signatures_published(http, &options.base_url)?,
        };
        if verify && options.keyring.is_none() {
            detail(format!(
                "Verify=yes: hosts need the signing key in {HOST_KEYRING}; pass --keyring FILE to install it"
            ));
        }
        Some(transfer_file(&options.base_url, options.arch, verify))
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
            Some(bytes)
        }
        None => None,
    };
    Ok(butane_config(
        version,
        options.arch,
        &options.base_url,
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
