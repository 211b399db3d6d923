//! The bucket's `SHA256SUMS`: one `sha256sum` line per published image, sorted by version,
//! which systemd-sysupdate reads to find versions. Merging never drops or changes a line.

use std::cmp::Ordering;
use std::str::FromStr;

use anyhow::{bail, Context};
use clap::ValueEnum;

use crate::arch::Arch;
use crate::checksums::{self, Entry};
use crate::version::Version;

/// The index's object key (under the prefix).
pub const INDEX_NAME: &str = "SHA256SUMS";

/// What an image file name says: `alloy-1.10.2-amd64.raw`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageName {
    pub version: Version,
    pub arch: Arch,
}

impl ImageName {
    /// Reads `alloy-<VERSION>-<ARCH>.raw`; anything else is `None`.
    pub fn parse(name: &str) -> Option<ImageName> {
        let rest = name
            .strip_prefix(crate::stage::EXTENSION_NAME)?
            .strip_prefix('-')?
            .strip_suffix(".raw")?;
        let (version, arch) = rest.rsplit_once('-')?;
        Some(ImageName {
            version: Version::from_str(version).ok()?,
            arch: Arch::from_str(arch, false).ok()?,
        })
    }
}

/// Index order: images by version then architecture; names we do not know last, by name.
fn index_order(a: &Entry, b: &Entry) -> Ordering {
    match (ImageName::parse(&a.name), ImageName::parse(&b.name)) {
        (Some(x), Some(y)) => (x.version, x.arch).cmp(&(y.version, y.arch)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then_with(|| a.name.cmp(&b.name))
}

/// The result of adding entries to an index.
#[derive(Debug, PartialEq, Eq)]
pub struct Merged {
    /// The whole new index.
    pub text: String,
    /// Names that were not listed before.
    pub added: Vec<String>,
}

/// Adds `new` entries to the `existing` index text (empty when there is none yet).
/// A name already listed with the same digest is kept as is; with a different digest it is an
/// error naming both, since a published image never changes.
pub fn merge(existing: &str, new: &[Entry]) -> anyhow::Result<Merged> {
    let mut entries = checksums::parse(existing)
        .context("the bucket's SHA256SUMS is not in sha256sum format; fix or remove it by hand")?;
    let mut added = Vec::new();
    for entry in new {
        match checksums::lookup(&entries, &entry.name)? {
            Some(listed) if listed == entry.digest => {}
            Some(listed) => bail!(
                "SHA256SUMS already lists {} with sha256 {listed}, not {}: a published image never changes; publish a new version instead",
                entry.name,
                entry.digest
            ),
            None => {
                added.push(entry.name.clone());
                entries.push(entry.clone());
            }
        }
    }
    entries.sort_by(index_order);
    entries.dedup();
    let text = entries
        .iter()
        .map(|e| checksums::line(&e.digest, &e.name))
        .collect();
    Ok(Merged { text, added })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksums::hash_bytes;

    fn entry(name: &str, content: &str) -> Entry {
        Entry {
            digest: hash_bytes(content.as_bytes()),
            name: name.to_string(),
        }
    }

    fn names(text: &str) -> Vec<String> {
        checksums::parse(text)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect()
    }

    #[test]
    fn image_names_are_read_back() {
        assert_eq!(
            ImageName::parse("alloy-1.11.0-rc.1-arm64.raw"),
            Some(ImageName {
                version: "1.11.0-rc.1".parse().unwrap(),
                arch: Arch::Arm64
            })
        );
        for other in [
            "alloy-1.10.2-amd64.raw.sha256",
            "alloy-1.10.2-s390x.raw",
            "alloy-latest-amd64.raw",
            "other-1.10.2-amd64.raw",
            "SHA256SUMS",
        ] {
            assert_eq!(ImageName::parse(other), None, "{other}");
        }
    }

    #[test]
    fn a_first_publish_creates_the_index() {
        let merged = merge("", &[entry("alloy-1.10.2-amd64.raw", "a")]).unwrap();
        assert_eq!(
            merged.text,
            checksums::line(&hash_bytes(b"a"), "alloy-1.10.2-amd64.raw")
        );
        assert_eq!(merged.added, ["alloy-1.10.2-amd64.raw"]);
    }

    #[test]
    fn entries_are_sorted_by_version_not_by_text_and_nothing_is_lost() {
        let existing: String = [
            entry("alloy-1.10.0-amd64.raw", "1"),
            entry("alloy-1.9.3-amd64.raw", "2"),
            entry("notes.txt", "3"),
        ]
        .iter()
        .map(|e| checksums::line(&e.digest, &e.name))
        .collect();
        let merged = merge(
            &existing,
            &[
                entry("alloy-1.10.0-rc.2-arm64.raw", "4"),
                entry("alloy-1.10.0-arm64.raw", "5"),
                entry("alloy-1.10.0-amd64.raw", "1"),
            ],
        )
        .unwrap();
        assert_eq!(
            names(&merged.text),
            [
                "alloy-1.9.3-amd64.raw",
                "alloy-1.10.0-rc.2-arm64.raw",
                "alloy-1.10.0-amd64.raw",
                "alloy-1.10.0-arm64.raw",
                "notes.txt",
            ]
        );
        assert_eq!(
            merged.added,
            ["alloy-1.10.0-rc.2-arm64.raw", "alloy-1.10.0-arm64.raw"]
        );
    }

    #[test]
    fn merging_what_is_listed_already_changes_nothing() {
        let first = merge("", &[entry("alloy-1.10.2-amd64.raw", "a")]).unwrap();
        let again = merge(&first.text, &[entry("alloy-1.10.2-amd64.raw", "a")]).unwrap();
        assert_eq!(again.text, first.text);
        assert!(again.added.is_empty());
    }

    #[test]
    fn a_different_digest_for_a_listed_image_is_refused_naming_both() {
        let first = merge("", &[entry("alloy-1.10.2-amd64.raw", "a")]).unwrap();
        let err = merge(&first.text, &[entry("alloy-1.10.2-amd64.raw", "b")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&hash_bytes(b"a").to_string()), "{err}");
        assert!(err.contains(&hash_bytes(b"b").to_string()), "{err}");
    }

    #[test]
    fn a_malformed_index_is_not_overwritten() {
        let err = merge(
            "<html>oops</html>\n",
            &[entry("alloy-1.10.2-amd64.raw", "a")],
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("not in sha256sum format"),
            "{err:#}"
        );
    }
}
