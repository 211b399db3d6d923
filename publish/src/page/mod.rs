//! The page a person reads in each channel's folder (`index.html`) and its data for scripts
//! (`index.json`): every release the channel's `SHA256SUMS` lists, the newest first, with its
//! architectures, sizes, SHA-256, publication date, whether the index is signed, and a Butane
//! snippet pinned by digest. Both are made from what the bucket holds (the index, the listing,
//! the signature's presence), never from what one publisher thinks it added, and written with
//! the index's conditional writes: a publisher that loses a race, or whose index changes under
//! it, makes them again from the bucket as it is then.

mod html;

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde_json::json;
use xtask::contract::{
    Channel, ImageName, INDEX_LIMIT, INDEX_NAME, PAGE_DATA_NAME, PAGE_NAME, SIGNATURE_NAME,
};
use xtask::host::butane::ButaneConfig;
use xtask::util::checksums::{self, Digest, SumLine};
use xtask::util::progress::detail;
use xtask::version::Version;

use crate::bucket::{
    self, Bucket, Contention, Listed, Metadata, Precondition, Written, CONDITIONAL_ATTEMPTS,
};
use crate::index::INDEX_SETTLE;

/// One published image, as the page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub name: ImageName,
    pub digest: Digest,
    /// From the listing; `None` when the index lists an object the bucket does not hold.
    pub size: Option<u64>,
    pub published: Option<String>,
}

/// One release: its images, by architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub version: Version,
    pub images: Vec<Image>,
}

impl Release {
    /// When its first image was published.
    pub fn published(&self) -> Option<&str> {
        self.images
            .iter()
            .filter_map(|i| i.published.as_deref())
            .min()
    }
}

/// The most releases the page shows, the newest; a hundred releases is a few hundred KiB of
/// page. An index listing more (anyone who can write to the bucket could make one) does not
/// make publish build a page of hundreds of megabytes: the rest are counted, not shown.
const MAX_RELEASES: usize = 500;
/// The most other index lines the page shows.
const MAX_OTHERS: usize = 100;

/// Everything both files show, for one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub channel: Channel,
    /// The channel's folder at the public base URL, without a trailing slash.
    pub url: String,
    /// Whether `SHA256SUMS.gpg` sits beside the index.
    pub signed: bool,
    /// Newest (highest version) first.
    pub releases: Vec<Release>,
    /// Index lines that name no image of this channel, shown as they are (escaped).
    pub others: Vec<SumLine>,
    /// Releases and other lines the index lists beyond what the page shows.
    pub omitted_releases: usize,
    pub omitted_others: usize,
}

impl Page {
    /// The page of `channel` from its index, the folder's listing and whether it is signed.
    pub fn new(
        channel: Channel,
        public_base: &str,
        index: &[SumLine],
        listing: &[Listed],
        signed: bool,
    ) -> Page {
        let listed: BTreeMap<&str, &Listed> =
            listing.iter().map(|l| (l.name.as_str(), l)).collect();
        let mut releases: BTreeMap<Version, Vec<Image>> = BTreeMap::new();
        let mut others = Vec::new();
        for line in index {
            match ImageName::parse(&line.name).filter(|i| Channel::of(&i.version) == channel) {
                Some(name) => {
                    let object = listed.get(line.name.as_str());
                    releases
                        .entry(name.version.clone())
                        .or_default()
                        .push(Image {
                            name,
                            digest: line.digest,
                            size: object.map(|o| o.size),
                            published: object.and_then(|o| o.last_modified.clone()),
                        });
                }
                None => others.push(line.clone()),
            }
        }
        let omitted_releases = releases.len().saturating_sub(MAX_RELEASES);
        let releases = releases
            .into_iter()
            .rev()
            .take(MAX_RELEASES)
            .map(|(version, mut images)| {
                images.sort_by_key(|i| i.name.arch);
                images.dedup_by(|a, b| a.name == b.name);
                Release { version, images }
            })
            .collect();
        let omitted_others = others.len().saturating_sub(MAX_OTHERS);
        others.truncate(MAX_OTHERS);
        Page {
            channel,
            url: channel.base_url(public_base),
            signed,
            releases,
            others,
            omitted_releases,
            omitted_others,
        }
    }

    /// The Butane config that installs `image` from this channel, pinned by its digest.
    pub fn butane(&self, image: &Image) -> String {
        ButaneConfig {
            image: image.name.clone(),
            image_base_url: self.url.clone(),
            digest: image.digest,
            updates: None,
        }
        .render()
    }

    /// `index.json`: the same data as the page, for scripts.
    pub fn json(&self) -> String {
        let releases: Vec<serde_json::Value> = self
            .releases
            .iter()
            .map(|release| {
                let images: Vec<serde_json::Value> = release
                    .images
                    .iter()
                    .map(|image| {
                        json!({
                            "arch": image.name.arch.name(),
                            "name": image.name.file_name(),
                            "url": format!("{}/{}", self.url, image.name.file_name()),
                            "size": image.size,
                            "sha256": image.digest.to_string(),
                            "published": image.published,
                            "butane": self.butane(image),
                        })
                    })
                    .collect();
                json!({
                    "version": release.version.to_string(),
                    "published": release.published(),
                    "images": images,
                })
            })
            .collect();
        let others: Vec<serde_json::Value> = self
            .others
            .iter()
            .map(|l| json!({"name": l.name, "sha256": l.digest.to_string()}))
            .collect();
        let value = json!({
            "channel": self.channel.name(),
            "url": format!("{}/", self.url),
            "index": format!("{}/{INDEX_NAME}", self.url),
            "signed": self.signed,
            "signature": self.signed.then(|| format!("{}/{SIGNATURE_NAME}", self.url)),
            "releases": releases,
            "other_entries": others,
            "omitted": {"releases": self.omitted_releases, "other_entries": self.omitted_others},
        });
        serde_json::to_string_pretty(&value).expect("JSON values always serialize") + "\n"
    }

    /// `index.html`: readable without JavaScript, on a phone and a desktop.
    pub fn html(&self) -> String {
        html::render(self)
    }
}

/// What the page is made from; when it changes while the page is written, it is made again.
#[derive(Debug, PartialEq, Eq)]
struct Source {
    index: Digest,
    signed: bool,
}

async fn read_source(bucket: &Bucket) -> anyhow::Result<(Source, Vec<SumLine>)> {
    let Some((text, _)) = bucket.get_text(INDEX_NAME, INDEX_LIMIT).await? else {
        bail!(
            "{} vanished before the page could be made from it; run publish again",
            bucket.url(INDEX_NAME)
        );
    };
    let lines = checksums::parse(&text).context("reading the bucket's SHA256SUMS for the page")?;
    let source = Source {
        index: checksums::hash_bytes(text.as_bytes()),
        signed: bucket.size_of(SIGNATURE_NAME).await?.is_some(),
    };
    Ok((source, lines))
}

/// What writing one file of the page did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    Written,
    Raced,
}

/// A small object can be this large; a page of a few hundred releases is well under it.
const PAGE_LIMIT: u64 = 16 << 20;

/// Writes `body` as `name` unless the bucket already holds exactly it: `If-Match` the ETag read,
/// or `If-None-Match: *` when there is none. A concurrent writer makes it [`Outcome::Raced`].
async fn write_if_changed(
    bucket: &Bucket,
    name: &str,
    body: String,
    metadata: Metadata,
    verbose: bool,
) -> anyhow::Result<Outcome> {
    let precondition = match bucket.get_bytes(name, PAGE_LIMIT).await? {
        Some((bytes, _)) if bytes == body.as_bytes() => return Ok(Outcome::Unchanged),
        Some((_, etag)) => Precondition::Matches(etag),
        None => Precondition::Absent,
    };
    if verbose {
        detail(format!(
            "PUT {} ({})",
            bucket.key(name),
            precondition.header()
        ));
    }
    let digest = checksums::hash_bytes(body.as_bytes());
    let written = bucket
        .put(
            name,
            body.into_bytes().into(),
            &digest,
            metadata,
            &precondition,
        )
        .await?;
    Ok(match written {
        Written::Done => Outcome::Written,
        Written::PreconditionFailed => Outcome::Raced,
    })
}

/// Makes `index.json` and `index.html` of `channel`'s folder match the bucket: made from the
/// index as it is, written conditionally, then checked against the index read again.
pub async fn update_page(
    bucket: &Bucket,
    channel: Channel,
    public_base: &str,
    verbose: bool,
) -> anyhow::Result<bool> {
    let mut contention = Contention::new();
    for attempt in 1..=CONDITIONAL_ATTEMPTS {
        let (source, lines) = read_source(bucket).await?;
        let page = Page::new(
            channel,
            public_base,
            &lines,
            &bucket.list().await?,
            source.signed,
        );
        let mut changed = false;
        let mut raced = false;
        for (name, body, metadata) in [
            (PAGE_DATA_NAME, page.json(), bucket::PAGE_JSON),
            (PAGE_NAME, page.html(), bucket::PAGE_HTML),
        ] {
            match write_if_changed(bucket, name, body, metadata, verbose).await? {
                Outcome::Unchanged => {}
                Outcome::Written => changed = true,
                Outcome::Raced => {
                    raced = true;
                    break;
                }
            }
        }
        if !raced {
            if changed {
                // As for the index: a store whose conditional writes are not atomic may let an
                // older page land after ours; whoever changed the index then writes again.
                tokio::time::sleep(INDEX_SETTLE).await;
            }
            if read_source(bucket).await?.0 == source {
                return Ok(changed);
            }
            detail(format!(
                "{INDEX_NAME} changed while the page was written (another publisher?); making it again (attempt {attempt} of {CONDITIONAL_ATTEMPTS})"
            ));
            continue;
        }
        contention.wait("the page", "making it", attempt).await;
    }
    bail!(
        "the page kept changing under us for {CONDITIONAL_ATTEMPTS} attempts; the images and {INDEX_NAME} are published, run publish again to update {PAGE_NAME}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use xtask::arch::Arch;
    use xtask::util::checksums::hash_bytes;

    fn line(name: &str) -> SumLine {
        SumLine {
            digest: hash_bytes(name.as_bytes()),
            name: name.into(),
        }
    }

    fn listed(name: &str, size: u64, when: &str) -> Listed {
        Listed {
            name: name.into(),
            size,
            last_modified: Some(when.into()),
        }
    }

    fn sample() -> Page {
        let index = [
            line("alloy-1.9.5-amd64.raw"),
            line("alloy-1.10.0-arm64.raw"),
            line("alloy-1.10.0-amd64.raw"),
            line("alloy-1.11.0-rc.1-amd64.raw"),
            line("<b>notes</b>.txt"),
        ];
        let listing = [
            listed("alloy-1.10.0-amd64.raw", 4 << 20, "2026-01-02T03:04:05Z"),
            listed("alloy-1.10.0-arm64.raw", 3 << 20, "2026-01-02T03:04:09Z"),
            listed("alloy-1.9.5-amd64.raw", 1000, "2026-02-01T00:00:00Z"),
        ];
        Page::new(
            Channel::Stable,
            "https://b.example/",
            &index,
            &listing,
            true,
        )
    }

    #[test]
    fn releases_newest_version_first_with_their_images_and_dates() {
        let page = sample();
        let versions: Vec<String> = page
            .releases
            .iter()
            .map(|r| r.version.to_string())
            .collect();
        assert_eq!(versions, ["1.10.0", "1.9.5"]);
        let archs: Vec<Arch> = page.releases[0]
            .images
            .iter()
            .map(|i| i.name.arch)
            .collect();
        assert_eq!(archs, [Arch::Amd64, Arch::Arm64]);
        assert_eq!(page.releases[0].published(), Some("2026-01-02T03:04:05Z"));
        // An rc in the stable index and a name that is no image are shown apart, as they are.
        let others: Vec<&str> = page.others.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(others, ["alloy-1.11.0-rc.1-amd64.raw", "<b>notes</b>.txt"]);
        assert_eq!(page.url, "https://b.example");
    }

    #[test]
    fn a_huge_index_makes_a_bounded_page() {
        let index: Vec<SumLine> = (0..MAX_RELEASES + 7)
            .map(|patch| line(&format!("alloy-1.10.{patch}-amd64.raw")))
            .chain((0..MAX_OTHERS + 3).map(|n| line(&format!("junk-{n}"))))
            .collect();
        let page = Page::new(Channel::Stable, "https://b.example", &index, &[], false);
        assert_eq!(page.releases.len(), MAX_RELEASES);
        assert_eq!(
            page.releases[0].version.to_string(),
            format!("1.10.{}", MAX_RELEASES + 6)
        );
        assert_eq!(
            (
                page.omitted_releases,
                page.others.len(),
                page.omitted_others
            ),
            (7, MAX_OTHERS, 3)
        );
        assert!(
            page.html().contains("7 older releases"),
            "{}",
            page.html().len()
        );
        let json: serde_json::Value = serde_json::from_str(&page.json()).unwrap();
        assert_eq!(json["omitted"]["releases"], 7);
    }

    #[test]
    fn the_json_has_every_field_and_a_butane_snippet_pinned_by_digest() {
        let page = sample();
        let json: serde_json::Value = serde_json::from_str(&page.json()).unwrap();
        assert_eq!(json["signed"], true);
        assert_eq!(json["signature"], "https://b.example/SHA256SUMS.gpg");
        let image = &json["releases"][0]["images"][1];
        assert_eq!(image["arch"], "arm64");
        assert_eq!(image["url"], "https://b.example/alloy-1.10.0-arm64.raw");
        assert_eq!(image["size"], 3 << 20);
        let digest = hash_bytes(b"alloy-1.10.0-arm64.raw").to_string();
        assert_eq!(image["sha256"], digest.as_str());
        let butane = image["butane"].as_str().unwrap();
        assert!(
            butane.contains(&format!("hash: sha256-{digest}")),
            "{butane}"
        );
        assert!(
            butane.contains("source: https://b.example/alloy-1.10.0-arm64.raw"),
            "{butane}"
        );
        assert_eq!(json["other_entries"][1]["name"], "<b>notes</b>.txt");
        // A listed image the bucket lacks has no size or date, rather than a made-up one.
        let unlisted = Page::new(
            Channel::Stable,
            "https://b.example",
            &[line("alloy-1.10.0-amd64.raw")],
            &[],
            false,
        );
        let json: serde_json::Value = serde_json::from_str(&unlisted.json()).unwrap();
        assert_eq!(
            json["releases"][0]["images"][0]["size"],
            serde_json::Value::Null
        );
        assert_eq!(json["signature"], serde_json::Value::Null);
    }
}
