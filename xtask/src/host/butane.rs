//! How a host is provisioned: the Butane config (`cargo xtask butane`) that installs one image
//! pinned by its hash, and with `--sysupdate` what keeps it current ([`super::sysupdate`]).

use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::Args;
use xshell::Shell;

use super::sysupdate::{
    base, transfer_file, update_service, CURRENT_LINK, IMAGES_DIR, TRANSFER_PATHS, UPDATE_SERVICE,
    UPDATE_TIMER, UPDATE_TIMER_UNIT,
};
use crate::arch::Arch;
use crate::cli::parse_yes_no;
use crate::contract::{checksum_name, Channel, ImageName, DEFAULT_BASE_URL};
use crate::latest::{GithubArgs, VersionArg};
use crate::util::checksums::{Digest, Sums};
use crate::util::http::{self, Http};
use crate::util::progress::detail;
use crate::verify::signatures_published;
use crate::version::Version;

/// The keyring systemd-sysupdate checks `SHA256SUMS.gpg` against. systemd-pull uses the first
/// keyring that exists, this one before the vendor's /usr/lib/systemd/import-pubring.gpg: writing
/// it replaces the vendor keyring for every `Verify=yes` download on the host, it does not add to it.
pub const HOST_KEYRING: &str = "/etc/systemd/import-pubring.gpg";

/// Standard base64 with padding, for a `data:` URL.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
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
