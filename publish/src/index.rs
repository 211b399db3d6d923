//! The bucket's `SHA256SUMS`: one `sha256sum` line per published image, sorted by version,
//! which systemd-sysupdate reads to find versions. Merging never drops or changes a line.

use std::cmp::Ordering;

use std::time::Duration;

use anyhow::{bail, Context};

use xtask::contract::{ImageName, INDEX_LIMIT, INDEX_NAME};
use xtask::util::checksums::{self, SumLine, Sums};
use xtask::util::progress::detail;

use crate::bucket::{self, Bucket, Contention, Precondition, Written, CONDITIONAL_ATTEMPTS};

/// Index order: images by version then architecture; names we do not know last, by name.
fn index_order(a: &SumLine, b: &SumLine) -> Ordering {
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
pub fn merge(existing: &str, new: &[SumLine]) -> anyhow::Result<Merged> {
    let mut entries = Sums::parse(existing, INDEX_NAME)
        .context("the bucket's SHA256SUMS is not in sha256sum format; fix or remove it by hand")?
        .entries;
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

/// How long after writing the index we read it back.
pub const INDEX_SETTLE: Duration = Duration::from_millis(1000);

/// Adds our entries to `SHA256SUMS` by read-modify-write on its ETag; a concurrent publisher
/// makes our write fail with 412, and we read again and merge again.
pub async fn update_index(
    bucket: &Bucket,
    entries: &[SumLine],
    verbose: bool,
) -> anyhow::Result<()> {
    let mut contention = Contention::new();
    for attempt in 1..=CONDITIONAL_ATTEMPTS {
        let current = bucket.get_text(INDEX_NAME, INDEX_LIMIT).await?;
        let (existing, precondition) = match &current {
            Some((text, etag)) => (text.as_str(), Precondition::Matches(etag.clone())),
            None => ("", Precondition::Absent),
        };
        let merged = merge(existing, entries)?;
        if merged.added.is_empty() && current.is_some() {
            detail(format!("{INDEX_NAME} already lists every image"));
            return Ok(());
        }
        if verbose {
            let header = precondition.header();
            detail(format!("PUT {} ({header})", bucket.key(INDEX_NAME)));
        }
        let digest = checksums::hash_bytes(merged.text.as_bytes());
        match bucket
            .put(
                INDEX_NAME,
                merged.text.into_bytes().into(),
                &digest,
                bucket::INDEX,
                &precondition,
            )
            .await?
        {
            Written::Done => {
                // Read it back once concurrent writes have landed: a store whose conditional
                // writes are not atomic can let two writers both pass, and the later one
                // drops the other's lines. Then we merge again.
                tokio::time::sleep(INDEX_SETTLE).await;
                let now = bucket.get_text(INDEX_NAME, INDEX_LIMIT).await?;
                let listed = now
                    .as_ref()
                    .map(|(text, _)| merge(text, entries).map(|m| m.added.is_empty()))
                    .transpose()?
                    .unwrap_or(false);
                if listed {
                    detail(format!("{INDEX_NAME}: added {}", merged.added.join(", ")));
                    return Ok(());
                }
                detail(format!(
                    "{INDEX_NAME} lost our lines to a concurrent write; merging again (attempt {attempt} of {CONDITIONAL_ATTEMPTS})"
                ));
            }
            Written::PreconditionFailed => contention.wait(INDEX_NAME, "merging", attempt).await,
        }
    }
    bail!(
        "{INDEX_NAME} kept changing under us for {CONDITIONAL_ATTEMPTS} attempts; the images are uploaded, run publish again to list them"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use xtask::util::checksums::hash_bytes;

    fn entry(name: &str, content: &str) -> SumLine {
        SumLine {
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
