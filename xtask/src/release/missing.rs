//! Which upstream releases the bucket does not hold yet, per channel: GitHub's release list
//! (drafts excluded, every page) against each channel's `SHA256SUMS` as hosts read it.
//!
//! What counts, from [`DEFAULT_SINCE`] up (or another floor):
//! - a published `vX.Y.Z` that is not a prerelease goes to the stable channel, whatever line it
//!   patches (1.10.5 after 1.12.0 included: operators pin lines);
//! - a `vX.Y.Z-rc.N` goes to the rc channel while its release `vX.Y.Z` is not out: once it is,
//!   the candidate is superseded and hosts on rc wait for the next line's candidates anyway;
//! - a version is on the bucket when its channel's index lists an image for every architecture
//!   we build; a half-published one is missing the architectures it lacks;
//! - a release whose assets (both zips and `SHA256SUMS`) are not all attached yet is waiting,
//!   not missing: a build now would fail, and the next check picks it up.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context};
use serde_json::json;

use super::github::{channel_of, Github, ReleaseInfo};
use crate::arch::Arch;
use crate::contract::{Channel, ImageName, INDEX_LIMIT, INDEX_NAME};
use crate::util::checksums;
use crate::util::http::{Http, NotFound};
use crate::version::Version;

/// The oldest version considered: the 1.10 line, the first this project's payload was checked
/// against (upstream's packaged unit at v1.10.2). Every line from there on is watched for
/// patches, so a backport on an older line is still built; lines before it are not.
pub const DEFAULT_SINCE: &str = "1.10.0";

/// The release's own checksum list, which every build reads besides the zip.
const RELEASE_SUMS_ASSET: &str = "SHA256SUMS";

/// A release the bucket lacks, with the architectures it lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub version: Version,
    pub channel: Channel,
    pub archs: Vec<Arch>,
}

/// A release the bucket lacks whose assets GitHub does not have yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub version: Version,
    pub channel: Channel,
    /// The asset names not attached yet.
    pub lacks: Vec<String>,
}

/// What one channel's index lists: for each version, the architectures it has an image of.
pub type Published = BTreeMap<Version, BTreeSet<Arch>>;

/// Reads a channel's index: images of the channel's own versions only (an rc listed in the
/// stable index is not published there as far as hosts of either channel are concerned).
pub fn published_in(index_text: &str, channel: Channel) -> anyhow::Result<Published> {
    let mut published = Published::new();
    for line in checksums::parse(index_text)? {
        if let Some(image) = ImageName::parse(&line.name) {
            if Channel::of(&image.version) == channel {
                published
                    .entry(image.version)
                    .or_default()
                    .insert(image.arch);
            }
        }
    }
    Ok(published)
}

/// What the bucket lacks, from `since` up: missing (newest first) and waiting for assets.
pub fn compare(
    releases: &[ReleaseInfo],
    published: &BTreeMap<Channel, Published>,
    since: &Version,
) -> (Vec<Missing>, Vec<Waiting>) {
    let upstream: BTreeMap<Version, (Channel, &ReleaseInfo)> = releases
        .iter()
        .filter_map(|r| channel_of(r).map(|(v, c)| (v, (c, r))))
        .filter(|(version, _)| version >= since)
        .collect();
    let released: BTreeSet<&Version> = upstream
        .iter()
        .filter(|(_, (channel, _))| *channel == Channel::Stable)
        .map(|(version, _)| version)
        .collect();
    let (mut missing, mut waiting) = (Vec::new(), Vec::new());
    for (version, (channel, release)) in upstream.iter().rev() {
        if *channel == Channel::Rc && released.contains(&version.release()) {
            continue;
        }
        let have = published
            .get(channel)
            .and_then(|p| p.get(version))
            .cloned()
            .unwrap_or_default();
        let archs: Vec<Arch> = Arch::ALL
            .into_iter()
            .filter(|a| !have.contains(a))
            .collect();
        if archs.is_empty() {
            continue;
        }
        let lacks = lacking_assets(release, &archs);
        if lacks.is_empty() {
            missing.push(Missing {
                version: version.clone(),
                channel: *channel,
                archs,
            });
        } else {
            waiting.push(Waiting {
                version: version.clone(),
                channel: *channel,
                lacks,
            });
        }
    }
    (missing, waiting)
}

/// The assets a build of `archs` needs that the release does not list yet.
fn lacking_assets(release: &ReleaseInfo, archs: &[Arch]) -> Vec<String> {
    let attached: BTreeSet<&str> = release.assets.iter().map(|a| a.name.as_str()).collect();
    archs
        .iter()
        .map(|arch| arch.release_zip())
        .chain([RELEASE_SUMS_ASSET.to_string()])
        .filter(|name| !attached.contains(name.as_str()))
        .collect()
}

/// What `cargo xtask missing` found.
#[derive(Debug)]
pub struct Report {
    pub since: Version,
    /// The bucket's public base URL.
    pub base_url: String,
    pub missing: Vec<Missing>,
    pub waiting: Vec<Waiting>,
    /// How many versions each channel's index lists.
    pub published: BTreeMap<Channel, usize>,
}

/// Reads a channel's index from the public URL; a channel with no index yet has published
/// nothing. Any other failure is an error: a check that cannot read the bucket must not
/// report everything as missing.
fn read_published(http: &Http, base_url: &str, channel: Channel) -> anyhow::Result<Published> {
    let url = format!("{}/{INDEX_NAME}", channel.base_url(base_url));
    match http.get_text(&url, INDEX_LIMIT) {
        Ok(text) => published_in(&text, channel).with_context(|| {
            format!("reading {url}: it is not in sha256sum format, so what is published is unknown")
        }),
        Err(e) if e.downcast_ref::<NotFound>().is_some() => Ok(Published::new()),
        Err(e) => Err(e.context(format!(
            "reading {url} (check --base-url / SYSEXT_BASE_URL)"
        ))),
    }
}

/// Lists GitHub's releases and reads both channels' indexes at `base_url`.
pub fn find(
    http: &Http,
    github: &Github,
    base_url: &str,
    since: &Version,
) -> anyhow::Result<Report> {
    if since.is_release_candidate() {
        bail!("--since {since} is a release candidate: give the release X.Y.Z to start from (its candidates count too)");
    }
    let releases = github.releases(http)?;
    let mut published = BTreeMap::new();
    for channel in Channel::ALL {
        published.insert(channel, read_published(http, base_url, channel)?);
    }
    let (missing, waiting) = compare(&releases, &published, since);
    Ok(Report {
        since: since.clone(),
        base_url: base_url.to_string(),
        missing,
        waiting,
        published: published.iter().map(|(c, p)| (*c, p.len())).collect(),
    })
}

fn arch_names(archs: &[Arch]) -> Vec<&'static str> {
    archs.iter().map(|a| a.name()).collect()
}

impl Report {
    /// For people: one line per missing release, then those waiting for their assets.
    pub fn text(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        let counts: Vec<String> = self
            .published
            .iter()
            .map(|(channel, n)| format!("{channel}: {n} version(s)"))
            .collect();
        let mut out = format!(
            "Alloy releases from {} on GitHub against {base} ({})\n",
            self.since,
            counts.join(", ")
        );
        if self.missing.is_empty() {
            out.push_str("Nothing is missing.\n");
        } else {
            out.push_str(&format!(
                "\n{} missing:\n{:<8} {:<16} architectures\n",
                self.missing.len(),
                "channel",
                "version"
            ));
            for m in &self.missing {
                out.push_str(&format!(
                    "{:<8} {:<16} {}\n",
                    m.channel.name(),
                    m.version.to_string(),
                    arch_names(&m.archs).join(" ")
                ));
            }
        }
        if !self.waiting.is_empty() {
            out.push_str("\nWaiting for their assets on GitHub (checked again next time):\n");
            for w in &self.waiting {
                out.push_str(&format!(
                    "{:<8} {:<16} no {} yet\n",
                    w.channel.name(),
                    w.version.to_string(),
                    w.lacks.join(", ")
                ));
            }
        }
        out
    }

    /// For workflows: `missing` is what to build, newest first, one entry per release.
    pub fn to_json(&self) -> serde_json::Value {
        let base = self.base_url.trim_end_matches('/');
        json!({
            "since": self.since.to_string(),
            "base_url": base,
            "missing": self.missing.iter().map(|m| json!({
                "version": m.version.to_string(),
                "channel": m.channel.name(),
                "archs": arch_names(&m.archs),
            })).collect::<Vec<_>>(),
            "waiting": self.waiting.iter().map(|w| json!({
                "version": w.version.to_string(),
                "channel": w.channel.name(),
                "lacks": w.lacks,
            })).collect::<Vec<_>>(),
            "published": self.published.iter().map(|(channel, n)| json!({
                "channel": channel.name(),
                "index": format!("{}/{INDEX_NAME}", channel.base_url(base)),
                "versions": n,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::github::AssetInfo;

    fn release(tag: &str, draft: bool, prerelease: bool, archs: &[Arch]) -> ReleaseInfo {
        let mut assets: Vec<AssetInfo> = archs
            .iter()
            .map(|a| AssetInfo {
                name: a.release_zip(),
            })
            .collect();
        assets.push(AssetInfo {
            name: "SHA256SUMS".into(),
        });
        ReleaseInfo {
            tag_name: tag.into(),
            draft,
            prerelease,
            assets,
        }
    }

    fn ready(tag: &str) -> ReleaseInfo {
        release(tag, false, tag.contains("-rc."), &Arch::ALL)
    }

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    fn index(lines: &[&str]) -> String {
        lines
            .iter()
            .map(|name| checksums::line(&checksums::hash_bytes(name.as_bytes()), name))
            .collect()
    }

    fn shown(missing: &[Missing]) -> Vec<String> {
        missing
            .iter()
            .map(|m| {
                format!(
                    "{} {} {}",
                    m.channel,
                    m.version,
                    arch_names(&m.archs).join("+")
                )
            })
            .collect()
    }

    #[test]
    fn lists_every_release_and_candidate_the_bucket_lacks_newest_first() {
        let releases = [
            ready("v1.11.0-rc.1"),
            ready("v1.9.5"),
            ready("v1.10.1"),
            ready("v1.10.0-rc.0"),
            ready("v1.10.0"),
            ready("v1.9.4"),
            release("v2.0.0", true, false, &Arch::ALL),
            release("v1.10.2", false, true, &Arch::ALL),
            ready("helm-chart-1.0.0"),
            ready("1.10.3"),
        ];
        let stable = published_in(
            &index(&[
                "alloy-1.10.0-amd64.raw",
                "alloy-1.10.0-arm64.raw",
                "alloy-1.10.1-amd64.raw",
                "alloy-1.11.0-rc.1-amd64.raw",
                "notes.txt",
            ]),
            Channel::Stable,
        )
        .unwrap();
        let published =
            BTreeMap::from([(Channel::Stable, stable), (Channel::Rc, Published::new())]);
        let (missing, waiting) = compare(&releases, &published, &v("1.9.5"));
        assert_eq!(
            shown(&missing),
            [
                "rc 1.11.0-rc.1 amd64+arm64",
                "stable 1.10.1 arm64",
                "stable 1.9.5 amd64+arm64",
            ]
        );
        assert!(waiting.is_empty(), "{waiting:?}");
    }

    #[test]
    fn a_release_without_its_assets_waits_and_a_superseded_candidate_is_skipped() {
        let releases = [
            release("v1.12.0", false, false, &[Arch::Amd64]),
            ready("v1.12.0-rc.2"),
            ready("v1.13.0-rc.1"),
        ];
        let rc = published_in(&index(&["alloy-1.13.0-rc.1-amd64.raw"]), Channel::Rc).unwrap();
        let published = BTreeMap::from([(Channel::Rc, rc)]);
        let (missing, waiting) = compare(&releases, &published, &v("1.10.0"));
        assert_eq!(shown(&missing), ["rc 1.13.0-rc.1 arm64"]);
        assert_eq!(
            waiting,
            [Waiting {
                version: v("1.12.0"),
                channel: Channel::Stable,
                lacks: vec!["alloy-linux-arm64.zip".into()],
            }]
        );
    }

    #[test]
    fn nothing_missing_when_everything_is_published() {
        let releases = [ready("v1.10.0")];
        let stable = published_in(
            &index(&["alloy-1.10.0-amd64.raw", "alloy-1.10.0-arm64.raw"]),
            Channel::Stable,
        )
        .unwrap();
        let published = BTreeMap::from([(Channel::Stable, stable)]);
        assert_eq!(
            compare(&releases, &published, &v("1.10.0")),
            (vec![], vec![])
        );
    }

    #[test]
    fn a_malformed_index_is_an_error() {
        assert!(published_in("<html>\n", Channel::Stable).is_err());
    }

    #[test]
    fn the_json_lists_what_to_build() {
        let report = Report {
            since: v("1.10.0"),
            base_url: "https://b.example/".into(),
            missing: vec![Missing {
                version: v("1.11.0-rc.1"),
                channel: Channel::Rc,
                archs: vec![Arch::Arm64],
            }],
            waiting: vec![],
            published: BTreeMap::from([(Channel::Stable, 3), (Channel::Rc, 0)]),
        };
        let json = report.to_json();
        assert_eq!(
            json["missing"],
            serde_json::json!([{"version": "1.11.0-rc.1", "channel": "rc", "archs": ["arm64"]}])
        );
        assert_eq!(
            json["published"][1]["index"],
            "https://b.example/rc/SHA256SUMS"
        );
        assert!(
            report.text().contains("rc       1.11.0-rc.1      arm64"),
            "{}",
            report.text()
        );
    }
}
