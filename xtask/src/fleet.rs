//! What a Flatcar host needs to consume the images: the systemd-sysupdate transfer file that
//! keeps it on the newest release, and a Butane config that installs one release pinned by hash.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::arch::Arch;
use crate::build::image_name;
use crate::checksums::{self, Digest};
use crate::download::{Http, NotFound};
use crate::stage::EXTENSION_NAME;
use crate::version::Version;

/// The bucket's public domain.
pub const DEFAULT_BASE_URL: &str = "https://ghost-sysext-images.separationofconcerns.dev";

/// Where versioned images live on the host; `/etc/extensions/alloy.raw` links to one of them.
pub const IMAGES_DIR: &str = "/opt/extensions/alloy";
pub const CURRENT_LINK: &str = "/etc/extensions/alloy.raw";
/// systemd-sysupdate reads component `alloy` (`-C alloy`) from here.
pub const TRANSFER_PATH: &str = "/etc/sysupdate.alloy.d/alloy.conf";
/// The detached signature of SHA256SUMS that `Verify=yes` requires.
pub const SIGNATURE_NAME: &str = "SHA256SUMS.gpg";
/// The keyring systemd-sysupdate checks `SHA256SUMS.gpg` against (before /usr/lib/systemd/...).
pub const HOST_KEYRING: &str = "/etc/systemd/import-pubring.gpg";

/// Standard base64 with padding, for a `data:` URL.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// The transfer file: sysupdate lists `<base>/SHA256SUMS`, picks the highest `alloy-@v-<arch>.raw`,
/// downloads it into /opt/extensions/alloy and points /etc/extensions/alloy.raw at it.
pub fn transfer_file(base_url: &str, arch: Arch, verify: bool) -> String {
    let pattern = format!("{EXTENSION_NAME}-@v-{arch}.raw");
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

/// `cargo xtask sysupdate`: the transfer file, `Verify=` from `verify` or from the bucket.
pub fn sysupdate(
    http: &Http,
    arch: Arch,
    base_url: &str,
    verify: Option<bool>,
) -> anyhow::Result<String> {
    crate::download::check_url(base_url).context("--base-url / SYSEXT_BASE_URL")?;
    let verify = match verify {
        Some(verify) => verify,
        None => signatures_published(http, base_url)?,
    };
    Ok(transfer_file(base_url, arch, verify))
}

pub struct ButaneOptions {
    pub version: Version,
    pub arch: Arch,
    pub base_url: String,
    pub dist: PathBuf,
    pub sysupdate: bool,
    pub verify: Option<bool>,
    /// Binary public keyring to install as /etc/systemd/import-pubring.gpg, for Verify=yes.
    pub keyring: Option<PathBuf>,
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
    let name = image_name(version, arch);
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
    options: &ButaneOptions,
    name: &str,
) -> anyhow::Result<(Digest, String)> {
    let local = options.dist.join(format!("{name}.sha256"));
    let (text, source) = if local.exists() {
        let text = std::fs::read_to_string(&local)
            .with_context(|| format!("reading {}", local.display()))?;
        (text, local.display().to_string())
    } else {
        let url = format!("{}/{name}.sha256", base(&options.base_url));
        let text = http.get_text(&url, 1 << 16).with_context(|| {
            format!(
                "{name} is neither built in {} nor published at {}: build it (cargo xtask build {}) or check --base-url",
                options.dist.display(),
                base(&options.base_url),
                options.version
            )
        })?;
        (text, url)
    };
    let entries = checksums::parse(&text).with_context(|| format!("reading {source}"))?;
    match checksums::lookup(&entries, name)? {
        Some(digest) => Ok((digest, source)),
        None => bail!("{source} has no line for {name}"),
    }
}

/// `cargo xtask butane`.
pub fn butane(http: &Http, options: &ButaneOptions) -> anyhow::Result<String> {
    crate::download::check_url(&options.base_url).context("--base-url / SYSEXT_BASE_URL")?;
    let name = image_name(&options.version, options.arch);
    let (digest, source) = image_digest(http, options, &name)?;
    crate::progress::detail(format!("{name}: sha256 {digest} (from {source})"));
    let transfer = if options.sysupdate {
        let verify = match options.verify {
            Some(verify) => verify,
            None => signatures_published(http, &options.base_url)?,
        };
        if verify && options.keyring.is_none() {
            crate::progress::detail(format!(
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
        &options.version,
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
            image_name(&version, Arch::Arm64)
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
        let digest = checksums::hash_bytes(b"image");
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
