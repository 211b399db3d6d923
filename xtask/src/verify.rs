//! What hosts download, checked from the public URL as they would fetch it: each image's
//! digest against its `.raw.sha256` and the `SHA256SUMS` line, then the image's inside against
//! the payload table's expectations; with a keyring, the signature `SHA256SUMS.gpg` too.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};

use crate::arch::Arch;
use crate::contract::{
    checksum_name, ImageName, INDEX_LIMIT, INDEX_NAME, SIGNATURE_LIMIT, SIGNATURE_NAME,
};
use crate::image::inspect::ImageContents;
use crate::payload::{self, ExtensionRelease, ALLOY_PATH, EXTENSION_RELEASE_PATH};
use crate::release::elf;
use crate::util::checksums::{self, Digest, SumLine, Sums};
use crate::util::http::{self, Http, NotFound};
use crate::util::interrupt;
use crate::util::progress::{mib, step};
use crate::util::tools::{self, Tool};
use crate::version::Version;

mod audit;
pub use audit::{audit, Audit};

/// What to verify: the images of one architecture in one channel's folder, one version or all
/// its index lists, and with a keyring the index's signature.
#[derive(Clone, Debug)]
pub struct Request {
    /// The channel's folder: `<base>` or `<base>/rc`, without a trailing slash.
    pub base: String,
    /// One version, or every image of `arch` the index lists.
    pub version: Option<Version>,
    pub arch: Arch,
    /// A public keyring to check `SHA256SUMS.gpg` against.
    pub keyring: Option<PathBuf>,
}

impl Request {
    /// Every tool verifying may need, found before any download.
    pub fn tools(&self) -> Vec<Tool> {
        tools_for(self.keyring.as_deref())
    }
}

/// The tools a verify or an audit with `keyring` needs: images are read by our own code, so
/// only a signature to check needs gpg.
fn tools_for(keyring: Option<&Path>) -> Vec<Tool> {
    match keyring {
        Some(_) => vec![tools::GPG, tools::GPGV],
        None => Vec::new(),
    }
}

/// One row of the report.
struct Row {
    name: String,
    size: Option<u64>,
    digest: Option<Digest>,
    problems: Vec<String>,
    /// Said after `ok` when there is no problem.
    note: Option<String>,
}

impl Row {
    fn new(name: &str) -> Row {
        Row {
            name: name.to_string(),
            size: None,
            digest: None,
            problems: Vec::new(),
            note: None,
        }
    }

    /// Records what fetching the image at `url` (downloading it, or hashing it as it streamed
    /// by) gave: its digest and size, or why there are none.
    fn fetched(&mut self, url: &str, fetched: anyhow::Result<(Digest, u64)>) -> Option<Digest> {
        match fetched {
            Ok((digest, size)) => {
                self.size = Some(size);
                self.digest = Some(digest);
                Some(digest)
            }
            Err(e) if e.downcast_ref::<NotFound>().is_some() => {
                self.problems.push(format!("missing: {url} answered 404"));
                None
            }
            Err(e) => {
                self.problems.push(format!("download failed: {e:#}"));
                None
            }
        }
    }

    fn result(&self) -> String {
        match (&self.note, self.problems.is_empty()) {
            (_, false) => format!("FAILED: {}", self.problems.join("; ")),
            (Some(note), true) => format!("ok, {note}"),
            (None, true) => "ok".to_string(),
        }
    }
}

/// The outcome: a row per artifact, `ok` or what failed.
pub struct Verdict {
    base: String,
    rows: Vec<Row>,
    /// Signatures that are published and went unchecked, no keyring being given.
    unchecked_signatures: Vec<String>,
    /// What readers should know besides the rows (a channel with nothing published).
    notes: Vec<String>,
}

impl Verdict {
    /// The table people read, and what they should know besides.
    pub fn table(&self) -> String {
        let mut text = format!(
            "{:<34} {:>10}  {:<64}  result\n",
            "artifact", "size", "sha256"
        );
        for row in &self.rows {
            text.push_str(&format!(
                "{:<34} {:>10}  {:<64}  {}\n",
                row.name,
                row.size.map(mib).unwrap_or_else(|| "-".into()),
                row.digest
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
                row.result()
            ));
        }
        let (is, was) = match self.unchecked_signatures.len() {
            1 => ("is", "was"),
            _ => ("are", "were"),
        };
        if !self.unchecked_signatures.is_empty() {
            text.push_str(&format!(
                "\n{} {is} published but {was} not checked: pass --keyring FILE\n",
                self.unchecked_signatures.join(" and ")
            ));
        }
        for note in &self.notes {
            text.push_str(&format!("\n{note}\n"));
        }
        text
    }

    /// An error naming every artifact that failed and what was wrong with it, if any did.
    pub fn result(&self) -> anyhow::Result<()> {
        let failed: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| !r.problems.is_empty())
            .collect();
        if !failed.is_empty() {
            let names: Vec<&str> = failed.iter().map(|r| r.name.as_str()).collect();
            let why: Vec<String> = failed
                .iter()
                .map(|r| format!("  {}: {}", r.name, r.problems.join("; ")))
                .collect();
            bail!(
                "{} of {} artifact(s) at {} failed verification: {} (see the table above)\n{}",
                failed.len(),
                self.rows.len(),
                self.base,
                names.join(", "),
                why.join("\n")
            );
        }
        Ok(())
    }
}

/// The published index, as text and parsed; either may have failed, which fails the rows that
/// need it rather than the whole run.
struct Index {
    text: anyhow::Result<String>,
    lines: anyhow::Result<Vec<SumLine>>,
}

impl Index {
    fn fetch(http: &Http, base: &str) -> Index {
        let url = format!("{base}/{INDEX_NAME}");
        let text = http
            .get_text(&url, INDEX_LIMIT)
            .with_context(|| format!("reading {url}"));
        let lines = match &text {
            Ok(text) => checksums::parse(text).with_context(|| format!("reading {url}")),
            Err(e) => Err(anyhow!("{e:#}")),
        };
        Index { text, lines }
    }

    /// The image names to verify: `version`'s, or every image of `arch` the index lists.
    fn names(
        &self,
        base: &str,
        version: Option<&Version>,
        arch: Arch,
    ) -> anyhow::Result<Vec<String>> {
        match (version, &self.lines) {
            (Some(version), _) => Ok(vec![ImageName::new(version, arch).file_name()]),
            (None, Ok(lines)) => {
                let names = images_of_arch(lines, arch);
                if names.is_empty() {
                    bail!("{base}/{INDEX_NAME} lists no {arch} image");
                }
                Ok(names)
            }
            (None, Err(e)) => bail!("cannot list the published images: {e:#}"),
        }
    }
}

/// Fails, saying what to give, when the keyring cannot be read: before any download.
fn open_keyring(keyring: &Path) -> anyhow::Result<()> {
    std::fs::File::open(keyring).with_context(|| {
        format!(
            "reading --keyring {}: give the public key that signs SHA256SUMS (gpg --export KEYID > FILE)",
            keyring.display()
        )
    })?;
    Ok(())
}

/// Verifies what `request` names, downloading each image to a private temporary file.
pub fn verify(http: &Http, request: &Request) -> anyhow::Result<Verdict> {
    let base = request.base.as_str();
    if let Some(keyring) = &request.keyring {
        open_keyring(keyring)?;
    }
    let index = Index::fetch(http, base);
    let names = index.names(base, request.version.as_ref(), request.arch)?;
    let work = interrupt::temp_dir().context("creating a temporary directory")?;
    let mut rows = Vec::new();
    for name in &names {
        step(format!("Verifying {base}/{name}"));
        rows.push(verify_one(
            http,
            base,
            name,
            index.lines.as_ref(),
            work.path(),
        ));
    }
    let mut unchecked_signatures = Vec::new();
    match &request.keyring {
        Some(keyring) => {
            step(format!(
                "Verifying {base}/{SIGNATURE_NAME} with {}",
                keyring.display()
            ));
            rows.push(verify_signature(http, base, index.text.as_ref(), keyring));
        }
        None => {
            if signatures_published(http, base).unwrap_or(false) {
                unchecked_signatures.push(SIGNATURE_NAME.to_string());
            }
        }
    }
    Ok(Verdict {
        base: base.to_string(),
        rows,
        unchecked_signatures,
        notes: Vec::new(),
    })
}

/// Checks `<base>/SHA256SUMS.gpg` as a signature of the `SHA256SUMS` text the images were
/// checked against, by a key in `keyring`.
fn verify_signature(
    http: &Http,
    base: &str,
    index_text: Result<&String, &anyhow::Error>,
    keyring: &Path,
) -> Row {
    let mut row = Row::new(SIGNATURE_NAME);
    let url = format!("{base}/{SIGNATURE_NAME}");
    let signature = match http.get_bytes_with_headers(&url, &[], SIGNATURE_LIMIT) {
        Ok((bytes, _)) => bytes,
        Err(e) if e.downcast_ref::<NotFound>().is_some() => {
            row.problems.push(format!(
                "missing: {url} answered 404 (is publish given SYSEXT_GPG_KEY?)"
            ));
            return row;
        }
        Err(e) => {
            row.problems.push(format!("download failed: {e:#}"));
            return row;
        }
    };
    row.size = Some(signature.len() as u64);
    row.digest = Some(checksums::hash_bytes(&signature));
    let text = match index_text {
        Ok(text) => text,
        Err(e) => {
            row.problems
                .push(format!("cannot check it without {INDEX_NAME}: {e:#}"));
            return row;
        }
    };
    match crate::signing::verify_detached_bytes(keyring, text.as_bytes(), &signature) {
        Ok(fingerprint) => row.note = Some(format!("signed by {fingerprint}")),
        Err(e) => row.problems.push(format!("{e:#}")),
    }
    row
}

/// The image names of `arch` that an index lists, in its order.
fn images_of_arch(entries: &[SumLine], arch: Arch) -> Vec<String> {
    image_names(entries, |image| image.arch == arch)
}

/// The image names the index lists that `keep` keeps, once each, in the index's order.
fn image_names(entries: &[SumLine], keep: impl Fn(&ImageName) -> bool) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        if ImageName::parse(&entry.name).is_some_and(|i| keep(&i)) && !names.contains(&entry.name) {
            names.push(entry.name.clone());
        }
    }
    names
}

/// What the `.raw.sha256` and the index say about an image whose bytes hash to `actual`.
fn digest_problems(
    name: &str,
    actual: &Digest,
    checksum_file: Result<Option<Digest>, String>,
    index: Result<&[SumLine], String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    match checksum_file {
        Ok(Some(listed)) if listed == *actual => {}
        Ok(Some(listed)) => problems.push(format!("{name}.sha256 says {listed}")),
        Ok(None) => problems.push(format!("{name}.sha256 does not list {name}")),
        Err(why) => problems.push(why),
    }
    match index.and_then(|entries| checksums::lookup(entries, name).map_err(|e| e.to_string())) {
        Ok(Some(listed)) if listed == *actual => {}
        Ok(Some(listed)) => problems.push(format!("{INDEX_NAME} says {listed}")),
        Ok(None) => problems.push(format!("{INDEX_NAME} does not list it")),
        Err(why) => problems.push(why),
    }
    problems
}

/// What the image's `.raw.sha256` (fetched beside `url`) and the index say about an image
/// named `name` whose bytes hash to `digest`.
fn published_digest_problems(
    http: &Http,
    url: &str,
    name: &str,
    digest: &Digest,
    index: Result<&Vec<SumLine>, &anyhow::Error>,
) -> Vec<String> {
    let checksum_url = checksum_name(url);
    let checksum_file = match http.get_text(&checksum_url, http::SMALL_FILE_LIMIT) {
        Ok(text) => Sums::parse(&text, checksum_name(name))
            .and_then(|sums| sums.get(name))
            .map_err(|e| format!("{e:#}")),
        Err(e) if e.downcast_ref::<NotFound>().is_some() => {
            Err(format!("no {name}.sha256 ({checksum_url} answered 404)"))
        }
        Err(e) => Err(format!("{name}.sha256: {e:#}")),
    };
    let index = index
        .map(|entries| entries.as_slice())
        .map_err(|e| format!("{e:#}"));
    digest_problems(name, digest, checksum_file, index)
}

fn verify_one(
    http: &Http,
    base: &str,
    name: &str,
    index: Result<&Vec<SumLine>, &anyhow::Error>,
    work: &Path,
) -> Row {
    let mut row = Row::new(name);
    let url = format!("{base}/{name}");
    let local = work.join(name);
    let Some(digest) = row.fetched(&url, http.download(&url, &local, name)) else {
        return row;
    };
    row.problems
        .extend(published_digest_problems(http, &url, name, &digest, index));

    match ImageName::parse(name) {
        None => row
            .problems
            .push("the name is not alloy-<VERSION>-<ARCH>.raw".to_string()),
        Some(image) => match crate::image::inspect(&local) {
            Ok(contents) => row.problems.extend(problems(&contents, image.arch)),
            Err(e) => row.problems.push(format!("{e:#}")),
        },
    }
    let _ = std::fs::remove_file(&local);
    row
}

/// Everything wrong with an image's contents for `arch`, against the payload table: the
/// extension-release a host merges by, and the binary (a regular file of the table's mode,
/// owned by root, an ELF executable for `arch`). Empty when it is a good Alloy sysext. The
/// other files of the table are not checked: images published by earlier releases of this tool
/// carry other versions of them.
pub fn problems(contents: &ImageContents, arch: Arch) -> Vec<String> {
    let expected_mode = payload::file(ALLOY_PATH).mode;
    let mut problems = Vec::new();
    match &contents.extension_release {
        None => problems.push(format!("no /{EXTENSION_RELEASE_PATH}")),
        Some(text) => problems.extend(ExtensionRelease::problems(text, arch)),
    }
    match &contents.alloy {
        None => problems.push(format!("no /{ALLOY_PATH}")),
        Some(alloy) => {
            if alloy.mode & 0o170000 != 0o100000 {
                problems.push(format!(
                    "/{ALLOY_PATH} is not a regular file (mode {:o})",
                    alloy.mode
                ));
            } else if alloy.mode & 0o7777 != expected_mode {
                problems.push(format!(
                    "/{ALLOY_PATH} has mode {:o}, not {expected_mode:o}",
                    alloy.mode & 0o7777
                ));
            }
            if (alloy.uid, alloy.gid) != (0, 0) {
                problems.push(format!(
                    "/{ALLOY_PATH} is owned by {}:{}, not root",
                    alloy.uid, alloy.gid
                ));
            }
            if let Err(why) = elf::check_header(&alloy.head, arch) {
                problems.push(format!("/{ALLOY_PATH}: {why}"));
            }
        }
    }
    problems
}

/// Whether `<base>/SHA256SUMS.gpg` is published: hosts can then insist on it (`Verify=yes`),
/// and verify says when it goes unchecked.
pub fn signatures_published(http: &Http, base_url: &str) -> anyhow::Result<bool> {
    let url = format!("{}/{SIGNATURE_NAME}", base_url.trim_end_matches('/'));
    match http.get_bytes_with_headers(&url, &[], SIGNATURE_LIMIT) {
        Ok(_) => Ok(true),
        Err(error) if error.downcast_ref::<NotFound>().is_some() => Ok(false),
        Err(error) => Err(error.context(format!(
            "checking whether {url} exists, to choose Verify= (or pass --verify yes|no)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::checksums::hash_bytes;

    fn entry(name: &str, content: &[u8]) -> SumLine {
        SumLine {
            digest: hash_bytes(content),
            name: name.into(),
        }
    }

    #[test]
    fn lists_the_images_of_one_arch_from_the_index() {
        let entries = [
            entry("alloy-1.9.0-amd64.raw", b"1"),
            entry("alloy-1.9.0-arm64.raw", b"2"),
            entry("alloy-1.10.2-amd64.raw", b"3"),
            entry("other.txt", b"4"),
        ];
        assert_eq!(
            images_of_arch(&entries, Arch::Amd64),
            ["alloy-1.9.0-amd64.raw", "alloy-1.10.2-amd64.raw"]
        );
        assert_eq!(
            images_of_arch(&entries, Arch::Arm64),
            ["alloy-1.9.0-arm64.raw"]
        );
    }

    #[test]
    fn the_digest_must_match_the_checksum_file_and_the_index() {
        let name = "alloy-1.10.2-amd64.raw";
        let good = hash_bytes(b"image");
        let index = [entry(name, b"image")];
        assert!(digest_problems(name, &good, Ok(Some(good)), Ok(&index)).is_empty());

        let bad = hash_bytes(b"tampered");
        let problems = digest_problems(name, &bad, Ok(Some(good)), Ok(&index));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains(&good.to_string()));

        let problems = digest_problems(name, &good, Err("no .sha256".into()), Ok(&[]));
        assert_eq!(problems, ["no .sha256", "SHA256SUMS does not list it"]);
    }

    fn good(arch: Arch) -> ImageContents {
        ImageContents {
            format: crate::image::ImageFormat::Ext4,
            extension_release: Some(format!(
                "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE={}\n",
                arch.systemd_name()
            )),
            alloy: Some(crate::image::inspect::AlloyInode {
                mode: 0o100755,
                uid: 0,
                gid: 0,
                size: 64,
                head: elf::fake_header(arch.elf_machine()),
            }),
        }
    }

    #[test]
    fn a_good_image_has_no_problems() {
        assert_eq!(
            problems(&good(Arch::Amd64), Arch::Amd64),
            Vec::<String>::new()
        );
        assert_eq!(
            problems(&good(Arch::Arm64), Arch::Arm64),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_problem_is_named() {
        let mut contents = good(Arch::Amd64);
        contents.extension_release = Some("ID=debian\nARCHITECTURE=arm64\n".into());
        contents.alloy = Some(crate::image::inspect::AlloyInode {
            mode: 0o100644,
            uid: 1000,
            gid: 0,
            size: 64,
            head: elf::fake_header(elf::EM_AARCH64),
        });
        assert_eq!(
            problems(&contents, Arch::Amd64),
            [
                "extension-release has ID=debian, expected ID=flatcar",
                "extension-release lacks SYSEXT_LEVEL=1.0",
                "extension-release has ARCHITECTURE=arm64, expected ARCHITECTURE=x86-64",
                "/usr/bin/alloy has mode 644, not 755",
                "/usr/bin/alloy is owned by 1000:0, not root",
                "/usr/bin/alloy: it is an ELF executable for AArch64, not for x86-64 (amd64)",
            ]
        );
        contents.extension_release = None;
        contents.alloy = None;
        assert_eq!(problems(&contents, Arch::Amd64).len(), 2);
    }
}
