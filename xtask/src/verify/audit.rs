//! `verify --all`: the whole bucket, both channels and both architectures, as the daily audit
//! runs it. Where a good signature vouches for a channel's `SHA256SUMS`, every image it lists
//! was inspected when it was published, so only its digest is needed now: it is hashed as it
//! streams by, with no copy on disk. Where nothing vouches for the index (no keyring given, or
//! the signature is missing or bad), each image is downloaded and looked inside as well.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{published_digest_problems, verify_one, verify_signature, Index, Row, Verdict};
use crate::contract::{Channel, ImageName, INDEX_NAME, SIGNATURE_NAME};
use crate::util::checksums::SumLine;
use crate::util::http::{Http, NotFound};
use crate::util::interrupt;
use crate::util::progress::step;
use crate::util::tools::Tool;

/// What the audit covers: every image every channel's index lists under `base`.
#[derive(Clone, Debug)]
pub struct Audit {
    /// The bucket's public base URL (the stable channel's folder), without a trailing slash.
    pub base: String,
    /// The public keyring to check each channel's `SHA256SUMS.gpg` against.
    pub keyring: Option<PathBuf>,
}

impl Audit {
    /// Every tool auditing may need, found before any download.
    pub fn tools(&self) -> Vec<Tool> {
        super::tools_for(self.keyring.as_deref())
    }
}

/// One channel's folder as the audit names its objects: `` or `rc/`.
struct Folder {
    channel: Channel,
    url: String,
}

impl Folder {
    fn name(&self, object: &str) -> String {
        format!("{}{object}", self.channel.folder())
    }
}

/// Audits both channels; a row per image and per signature, `ok` or what differs.
pub fn audit(http: &Http, audit: &Audit) -> anyhow::Result<Verdict> {
    if let Some(keyring) = &audit.keyring {
        super::open_keyring(keyring)?;
    }
    let work = interrupt::temp_dir().context("creating a temporary directory")?;
    let mut verdict = Verdict {
        base: audit.base.clone(),
        rows: Vec::new(),
        unchecked_signatures: Vec::new(),
        notes: Vec::new(),
    };
    for channel in Channel::ALL {
        let folder = Folder {
            channel,
            url: channel.base_url(&audit.base),
        };
        audit_channel(
            http,
            &folder,
            audit.keyring.as_deref(),
            work.path(),
            &mut verdict,
        );
    }
    Ok(verdict)
}

fn audit_channel(
    http: &Http,
    folder: &Folder,
    keyring: Option<&Path>,
    work: &Path,
    verdict: &mut Verdict,
) {
    let index = Index::fetch(http, &folder.url);
    let absent = index.text.as_ref().err().is_some_and(is_not_found);
    let lines = match &index.lines {
        Ok(lines) => lines,
        Err(e) if folder.channel == Channel::Rc && absent => {
            verdict.notes.push(format!(
                "{}: no release candidate is published ({e:#})",
                folder.name(INDEX_NAME)
            ));
            return;
        }
        Err(e) => {
            let mut row = Row::new(&folder.name(INDEX_NAME));
            row.problems.push(format!("{e:#}"));
            verdict.rows.push(row);
            return;
        }
    };
    let vouched = match keyring {
        Some(keyring) => {
            step(format!(
                "Checking {}/{SIGNATURE_NAME} with {}",
                folder.url,
                keyring.display()
            ));
            let mut row = verify_signature(http, &folder.url, index.text.as_ref(), keyring);
            row.name = folder.name(SIGNATURE_NAME);
            let good = row.problems.is_empty();
            verdict.rows.push(row);
            good
        }
        None => {
            if super::signatures_published(http, &folder.url).unwrap_or(false) {
                verdict
                    .unchecked_signatures
                    .push(folder.name(SIGNATURE_NAME));
            }
            false
        }
    };
    for name in images(lines) {
        let mut row = if vouched {
            step(format!("Hashing {}/{name}", folder.url));
            digest_only(http, &folder.url, &name, index.lines.as_ref())
        } else {
            step(format!("Verifying {}/{name}", folder.url));
            verify_one(http, &folder.url, &name, index.lines.as_ref(), work)
        };
        if let Some(image) = ImageName::parse(&name) {
            if Channel::of(&image.version) != folder.channel {
                row.problems.push(format!(
                    "a {} version listed in the {} channel's {INDEX_NAME}: hosts of that channel would move to it",
                    Channel::of(&image.version),
                    folder.channel
                ));
            }
        }
        row.name = folder.name(&name);
        verdict.rows.push(row);
    }
}

fn is_not_found(error: &anyhow::Error) -> bool {
    error.downcast_ref::<NotFound>().is_some()
}

/// Every image name the index lists (any architecture), once, in its order.
fn images(lines: &[SumLine]) -> Vec<String> {
    super::image_names(lines, |_| true)
}

/// An image whose index a good signature vouches for: its digest, hashed while it streams by
/// (nothing written to disk), against its `.raw.sha256` and the index.
fn digest_only(
    http: &Http,
    base: &str,
    name: &str,
    index: Result<&Vec<SumLine>, &anyhow::Error>,
) -> Row {
    let mut row = Row::new(name);
    let url = format!("{base}/{name}");
    let Some(digest) = row.fetched(&url, http.hash(&url, name)) else {
        return row;
    };
    row.problems
        .extend(published_digest_problems(http, &url, name, &digest, index));
    if row.problems.is_empty() {
        row.note = Some("as signed".to_string());
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::checksums::hash_bytes;

    #[test]
    fn every_image_of_every_architecture_once_in_index_order() {
        let line = |name: &str| SumLine {
            digest: hash_bytes(name.as_bytes()),
            name: name.into(),
        };
        let lines = [
            line("alloy-1.10.2-arm64.raw"),
            line("notes.txt"),
            line("alloy-1.10.2-amd64.raw"),
            line("alloy-1.10.2-arm64.raw"),
            line("alloy-1.9.0-amd64.raw"),
        ];
        assert_eq!(
            images(&lines),
            [
                "alloy-1.10.2-arm64.raw",
                "alloy-1.10.2-amd64.raw",
                "alloy-1.9.0-amd64.raw"
            ]
        );
    }

    #[test]
    fn a_404_is_told_apart_through_context() {
        let error = anyhow::Error::new(NotFound {
            url: "http://127.0.0.1/rc/SHA256SUMS".into(),
        })
        .context("reading it");
        assert!(is_not_found(&error));
        assert!(!is_not_found(&anyhow::anyhow!("500")));
    }
}
