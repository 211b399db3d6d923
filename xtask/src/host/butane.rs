//! How a host is provisioned: the Butane config that installs one image pinned by its hash,
//! and with updates what keeps it current ([`super::sysupdate`]).

use std::path::Path;

use anyhow::{bail, Context};
use base64::Engine as _;

use super::sysupdate::{base, update_service, UPDATE_SCRIPT_TEXT, UPDATE_TIMER_UNIT};
use crate::contract::{
    checksum_name, Channel, ImageName, APPLIED_RECORD, CURRENT_LINK, HOST_KEYRING, IMAGES_DIR,
    INDEX_LIMIT, INDEX_NAME, SIGNATURE_LIMIT, SIGNATURE_NAME, TRANSFER_PATHS, UPDATE_SCRIPT,
    UPDATE_SERVICE, UPDATE_TIMER,
};
use crate::util::checksums::{Digest, Sums};
use crate::util::files;
use crate::util::http::{self, Http};

/// Standard base64 with padding, for a `data:` URL.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
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

/// What keeps a host current: the transfer file, and the keyring to check the index with.
pub struct Updates {
    pub transfer: String,
    /// A binary public keyring to install as [`HOST_KEYRING`].
    pub keyring: Option<Vec<u8>>,
}

/// A Butane config (variant flatcar) for one host.
pub struct ButaneConfig {
    pub image: ImageName,
    /// The folder of the version's channel, where the image is downloaded from.
    pub image_base_url: String,
    /// The image's published digest, which Ignition checks.
    pub digest: Digest,
    pub updates: Option<Updates>,
}

impl ButaneConfig {
    /// The config: the image pinned by its digest, the link that merges it, and with updates
    /// the transfer file, the keyring, the `alloy-sysupdate` script with the record that this
    /// image is applied, and the service and timer that run it.
    pub fn render(&self) -> String {
        let name = self.image.file_name();
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
            tag = self.image.version.tag(),
            arch = self.image.arch,
            base = base(&self.image_base_url),
            digest = self.digest,
        );
        if let Some(updates) = &self.updates {
            out.push_str(&update_files(updates, &name));
        }
        out.push_str(&format!(
            "  links:
    - path: {CURRENT_LINK}
      target: {IMAGES_DIR}/{name}
      hard: false
"
        ));
        if self.updates.is_some() {
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
}

/// The `storage.files` entries of the transfer file (under both names), the keyring, the
/// `alloy-sysupdate` script, and its record that `image` (the file name) is applied: the image
/// Ignition installs runs from the first boot, so the first update has nothing to apply.
fn update_files(updates: &Updates, image: &str) -> String {
    let mut out = String::new();
    for path in TRANSFER_PATHS {
        out.push_str(&format!(
            "    - path: {path}\n      mode: 0644\n      contents:\n        inline: |\n{}",
            indent(&updates.transfer, 10)
        ));
    }
    if let Some(keyring) = &updates.keyring {
        out.push_str(&format!(
            "    # Replaces, not extends, the vendor keyring /usr/lib/systemd/import-pubring.gpg\n    - path: {HOST_KEYRING}\n      mode: 0644\n      contents:\n        source: \"data:;base64,{}\"\n",
            base64(keyring)
        ));
    }
    out.push_str(&format!(
        "    - path: {UPDATE_SCRIPT}\n      mode: 0755\n      contents:\n        inline: |\n{}",
        indent(UPDATE_SCRIPT_TEXT, 10)
    ));
    out.push_str(&format!(
        "    - path: {APPLIED_RECORD}\n      mode: 0644\n      contents:\n        inline: |\n          {IMAGES_DIR}/{image}\n"
    ));
    out
}

/// Where a digest came from, and whether anything vouches for it.
pub enum DigestSource {
    /// `<dist>/<name>.sha256`, of an image built here.
    Built(String),
    /// The channel's SHA256SUMS, whose signature a key in the keyring made.
    Signed { index: String, fingerprint: String },
    /// The bucket's `<name>.sha256`, which nothing signs: whoever can write the bucket chose it.
    Unsigned(String),
}

impl std::fmt::Display for DigestSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DigestSource::Built(path) => write!(f, "{path}"),
            DigestSource::Signed { index, fingerprint } => {
                write!(f, "{index}, signed by {fingerprint}")
            }
            DigestSource::Unsigned(url) => write!(f, "{url}, not signed"),
        }
    }
}

/// The published digest of `image`: from `<dist>/<name>.sha256` when built here; else, given a
/// keyring, from the channel's `SHA256SUMS` once its signature is checked against it; else from
/// the bucket's `<base_url>[/rc]/<name>.sha256`. The digest is what Ignition lets a new host
/// boot, root units and all: without a keyring it is only as good as the bucket's access.
pub fn image_digest(
    http: &Http,
    dist: &Path,
    base_url: &str,
    image: &ImageName,
    keyring: Option<&Path>,
) -> anyhow::Result<(Digest, DigestSource)> {
    let name = image.file_name();
    let version = &image.version;
    let local = dist.join(checksum_name(&name));
    // Read as build reads it: never a link, a FIFO or /dev/zero, nor more than a line.
    let built = files::read_own_small_file(&local, files::CHECKSUM_FILE_LIMIT)?;
    if let Some(text) = built {
        let source = local.display().to_string();
        let digest = Sums::parse(&text, &source)?.require(&name)?;
        return Ok((digest, DigestSource::Built(source)));
    }
    let image_base = Channel::of(version).base_url(base_url);
    let not_published = || {
        format!(
            "{name} is neither built in {} nor published at {image_base}: build it (cargo xtask build {version}) or check --base-url",
            dist.display(),
        )
    };
    if let Some(keyring) = keyring {
        let index = format!("{image_base}/{INDEX_NAME}");
        let text = http
            .get_text(&index, INDEX_LIMIT)
            .with_context(not_published)?;
        let fingerprint = signed_by(http, &image_base, &text, keyring)?;
        let digest = Sums::parse(&text, &index)?.require(&name)?;
        return Ok((digest, DigestSource::Signed { index, fingerprint }));
    }
    let url = format!("{image_base}/{}", checksum_name(&name));
    let text = http
        .get_text(&url, http::SMALL_FILE_LIMIT)
        .with_context(not_published)?;
    let digest = Sums::parse(&text, &url)?.require(&name)?;
    Ok((digest, DigestSource::Unsigned(url)))
}

/// The fingerprint of the key in `keyring` that signed `index_text` as `<image_base>/SHA256SUMS.gpg`.
fn signed_by(
    http: &Http,
    image_base: &str,
    index_text: &str,
    keyring: &Path,
) -> anyhow::Result<String> {
    let url = format!("{image_base}/{SIGNATURE_NAME}");
    let (signature, _) = http
        .get_bytes_with_headers(&url, &[], SIGNATURE_LIMIT)
        .with_context(|| format!("reading {url}, to check the digest hosts will pin"))?;
    crate::signing::verify_detached_bytes(keyring, index_text.as_bytes(), &signature).with_context(|| {
        format!(
            "{url} does not vouch for {image_base}/{INDEX_NAME} with --keyring {}: nothing printed, no host would boot an image from it",
            keyring.display()
        )
    })
}

/// A binary public keyring from `path`, for [`HOST_KEYRING`]: systemd-sysupdate cannot read an
/// armored one. It goes to every host in the Ignition config, so a secret key is refused.
pub fn read_keyring(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading --keyring {}", path.display()))?;
    if bytes.starts_with(b"-----BEGIN") {
        bail!("--keyring {} is armored; systemd-sysupdate needs a binary keyring: gpg --dearmor it, or export without --armor", path.display());
    }
    let tags = packet_tags(&bytes);
    if tags
        .iter()
        .any(|&tag| matches!(tag, SECRET_KEY | SECRET_SUBKEY))
    {
        bail!(
            "--keyring {} holds a secret key, which would go to every host in the Ignition config: \
             give the public key only (gpg --export KEYID > FILE, not --export-secret-keys)",
            path.display()
        );
    }
    if tags.first() != Some(&PUBLIC_KEY) {
        bail!(
            "--keyring {} is not a binary public keyring (it does not start with a public key): \
             gpg --export KEYID > FILE",
            path.display()
        );
    }
    Ok(bytes)
}

/// OpenPGP packet tags (RFC 4880 4.3).
const SECRET_KEY: u8 = 5;
const PUBLIC_KEY: u8 = 6;
const SECRET_SUBKEY: u8 = 7;

/// The tags of the OpenPGP packets in `bytes` (RFC 4880 4.2), as far as their headers can be
/// read: the walk stops at a header or length that does not fit, at a partial or indeterminate
/// length, and at a byte that is no packet header.
fn packet_tags(bytes: &[u8]) -> Vec<u8> {
    let mut tags = Vec::new();
    let mut at = 0usize;
    while let Some(&header) = bytes.get(at) {
        if header & 0x80 == 0 {
            break;
        }
        let be = |from: usize, n: usize| -> Option<usize> {
            let field = bytes.get(from..from.checked_add(n)?)?;
            Some(
                field
                    .iter()
                    .fold(0usize, |sum, b| (sum << 8) | usize::from(*b)),
            )
        };
        // (tag, (header length, body length))
        let (tag, length) = if header & 0x40 != 0 {
            let tag = header & 0x3f;
            let length = match bytes.get(at + 1) {
                Some(&first @ 0..=191) => Some((2, usize::from(first))),
                Some(&first @ 192..=223) => be(at + 2, 1)
                    .map(|second| (3, ((usize::from(first) - 192) << 8) + second + 192)),
                Some(255) => be(at + 2, 4).map(|length| (6, length)),
                _ => None,
            };
            (tag, length)
        } else {
            let tag = (header >> 2) & 0x0f;
            let length = match header & 3 {
                0 => be(at + 1, 1).map(|length| (2, length)),
                1 => be(at + 1, 2).map(|length| (3, length)),
                2 => be(at + 1, 4).map(|length| (5, length)),
                _ => None,
            };
            (tag, length)
        };
        tags.push(tag);
        match length.and_then(|(header, body)| at.checked_add(header)?.checked_add(body)) {
            Some(next) => at = next,
            None => break,
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::host::sysupdate::transfer_file;
    use crate::version::Version;

    #[test]
    fn butane_without_sysupdate_installs_and_links_only() {
        let version: Version = "1.10.2".parse().unwrap();
        let digest = crate::util::checksums::hash_bytes(b"image");
        let text = ButaneConfig {
            image: ImageName::new(&version, Arch::Amd64),
            image_base_url: "https://b.example/".into(),
            digest,
            updates: None,
        }
        .render();
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
        let text = ButaneConfig {
            image: ImageName::new(&version, Arch::Amd64),
            image_base_url: "https://b.example".into(),
            digest,
            updates: Some(Updates {
                transfer: transfer.clone(),
                keyring: Some(b"key".to_vec()),
            }),
        }
        .render();
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
        assert!(text.contains(&format!(
            "    - path: /opt/bin/alloy-sysupdate\n      mode: 0755\n      contents:\n        inline: |\n{}",
            indent(UPDATE_SCRIPT_TEXT, 10)
        )));
        assert!(text.contains("    - path: /var/lib/alloy-sysupdate/applied\n      mode: 0644\n      contents:\n        inline: |\n          /opt/extensions/alloy/alloy-1.10.2-amd64.raw\n"));
    }

    /// `--keyring` is copied, base64 in the Ignition config, to every host and wherever configs
    /// are kept. A secret key given by mistake (`gpg --export-secret-keys`, binary, so not
    /// caught as armored) would let whoever reads one sign releases for the whole fleet.
    #[test]
    fn the_keyring_holds_public_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = xtask_testkit::gpg::TestKey::new("keyring");
        let mut dearmor = std::process::Command::new("gpg");
        dearmor
            .env("GNUPGHOME", dir.path())
            .args(["--batch", "--dearmor"]);
        let secret = xtask_testkit::checked_output_with_input(&mut dearmor, key.secret.as_bytes());
        let read = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            read_keyring(&path).map_err(|e| e.to_string())
        };
        let public = std::fs::read(&key.public).unwrap();
        assert_eq!(read("public.gpg", &public), Ok(public.clone()));
        // OpenPGP packets (RFC 4880 4.2): 0x80 | tag << 2 | length type, or 0xC0 | tag. Tag 6
        // is a public key, 5 a secret key, 7 a secret subkey, 13 a user id.
        for (name, bytes) in [
            ("exported-secret.gpg", secret.clone()),
            ("new-format-secret.gpg", vec![0xC5, 0x01, 0x04]),
            (
                "secret-subkey.gpg",
                vec![0x98, 0x01, 0x04, 0x9c, 0x01, 0x04],
            ),
            (
                "secret-after-public.gpg",
                [&public[..], &secret[..]].concat(),
            ),
            // A public key with a two-octet length, ((0xC1 - 192) << 8) + 0x80 + 192 = 576.
            (
                "two-octet-length.gpg",
                [&[0xC6, 0xC1, 0x80][..], &[0x04; 576], &[0xC5, 0x01, 0x04]].concat(),
            ),
        ] {
            let error = read(name, &bytes).unwrap_err();
            assert!(
                error.contains("secret key") && error.contains("gpg --export KEYID"),
                "{name}: {error}"
            );
        }
        for (name, bytes) in [
            ("user-id-first.gpg", vec![0xB4, 0x01, 0x41]),
            ("empty.gpg", vec![]),
        ] {
            let error = read(name, &bytes).unwrap_err();
            assert!(
                error.contains("not a binary public keyring"),
                "{name}: {error}"
            );
        }
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
