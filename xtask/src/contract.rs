//! The names the steps share: the extension's name, the published file names, the bucket's
//! index and channels, where things come from, and where they live on a host. The files inside
//! the image are listed in [`crate::payload`].

use std::str::FromStr;

use anyhow::bail;

use crate::arch::Arch;
use crate::util::http::check_url;
use crate::version::Version;

/// The extension's name: the image is merged as `alloy.raw`, and its metadata file is
/// `extension-release.alloy`.
pub const EXTENSION_NAME: &str = "alloy";

/// The bucket's index of published images, in `sha256sum` format, that systemd-sysupdate reads.
pub const INDEX_NAME: &str = "SHA256SUMS";

/// The detached signature of the index that `Verify=yes` requires.
pub const SIGNATURE_NAME: &str = "SHA256SUMS.gpg";

/// The most of an index read: a line per image; anything larger is not ours.
pub const INDEX_LIMIT: u64 = 16 << 20;
/// The most of a signature read: it is a few hundred bytes.
pub const SIGNATURE_LIMIT: u64 = 1 << 20;

/// The page people read in each channel's folder, every release with its Butane snippet, and
/// the same data for scripts. R2 serves no directory index: link to `<base>/index.html`.
pub const PAGE_NAME: &str = "index.html";
pub const PAGE_DATA_NAME: &str = "index.json";

/// Where hosts download published images from: the bucket's public domain.
pub const DEFAULT_BASE_URL: &str = "https://ghost-sysext-images.separationofconcerns.dev";

/// Where Alloy's release assets live: `<URL>/v<VERSION>/<asset>`.
pub const DEFAULT_RELEASES_URL: &str = "https://github.com/grafana/alloy/releases/download";

/// On the host: where versioned images live; `/etc/extensions/alloy.raw` links to one of them.
pub const IMAGES_DIR: &str = "/opt/extensions/alloy";
/// On the host: the link systemd-sysext merges, which sysupdate moves (`CurrentSymlink=`).
pub const CURRENT_LINK: &str = "/etc/extensions/alloy.raw";
/// On the host: systemd-sysupdate reads component `alloy` (`-C alloy`) from here, under two
/// names with the same text: systemd 257 and later read `*.transfer` (and `*.conf` only when no
/// `*.transfer` exists, with a warning), systemd 252 reads only `*.conf`. With both, each reads
/// exactly one.
pub const TRANSFER_PATHS: [&str; 2] = [
    "/etc/sysupdate.alloy.d/alloy.transfer",
    "/etc/sysupdate.alloy.d/alloy.conf",
];
/// On the host: the units that apply updates, alloy's own rather than a drop-in on the host's
/// systemd-sysupdate.service.
pub const UPDATE_SERVICE: &str = "alloy-sysupdate.service";
pub const UPDATE_TIMER: &str = "alloy-sysupdate.timer";
/// On the host: the script alloy-sysupdate.service runs, which operators also use to hold a
/// version. In /opt/bin, Flatcar's place for binaries of one's own (in root's PATH), not in the
/// image: it must work when no image is merged, and with images built before it existed.
pub const UPDATE_SCRIPT: &str = "/opt/bin/alloy-sysupdate";
/// On the host: what the script records (the image last applied, a hold, rolled-back releases).
pub const UPDATE_STATE_DIR: &str = "/var/lib/alloy-sysupdate";
/// On the host: the image last applied, which the next update compares the link with.
pub const APPLIED_RECORD: &str = "/var/lib/alloy-sysupdate/applied";
/// On the host: where Flatcar (and systemd's own units) have the client.
pub const SYSUPDATE: &str = "/usr/lib/systemd/systemd-sysupdate";
/// On the host: the keyring systemd-sysupdate checks `SHA256SUMS.gpg` against. systemd-pull
/// uses the first keyring that exists, this one before the vendor's
/// /usr/lib/systemd/import-pubring.gpg: writing it replaces the vendor keyring for every
/// `Verify=yes` download on the host, it does not add to it.
pub const HOST_KEYRING: &str = "/etc/systemd/import-pubring.gpg";
/// On the host: the static system user (and group) Alloy runs as, as in Grafana's packages.
pub const USER: &str = "alloy";
/// On the host: the editable copies of Alloy's configuration and environment.
pub const CONFIG_FILE: &str = "/etc/alloy/config.alloy";
pub const ENVIRONMENT_FILE: &str = "/etc/default/alloy";

/// Refuses a public base URL that would not name the same folder everywhere it is written:
/// a `#` or `?` ends the path (`<base>/SHA256SUMS` would be fetched from elsewhere), and
/// anything but printable ASCII (a space, a newline that would start a line of its own in a
/// transfer file) is no URL. A `%` is allowed: it is escaped where systemd would expand it.
/// First, as every URL we fetch: https, or plain http on loopback ([`check_url`]).
pub fn check_base_url(url: &str) -> anyhow::Result<()> {
    check_url(url)?;
    if let Some(c) = url.chars().find(|c| matches!(c, '#' | '?')) {
        bail!(
            "the base URL {url:?} has a {c:?}, which would end its path: hosts would fetch <base>/SHA256SUMS from somewhere else. Give the folder's URL without a query or fragment"
        );
    }
    if let Some(c) = url.chars().find(|c| !c.is_ascii_graphic()) {
        bail!(
            "the base URL {url:?} has the character {c:?}: give it percent-encoded (a space is %20)"
        );
    }
    Ok(())
}

/// What an image file name says: `alloy-1.10.2-amd64.raw`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageName {
    pub version: Version,
    pub arch: Arch,
}

impl ImageName {
    pub fn new(version: &Version, arch: Arch) -> ImageName {
        ImageName {
            version: version.clone(),
            arch,
        }
    }

    /// Reads `alloy-<VERSION>-<ARCH>.raw`; anything else is `None`.
    pub fn parse(name: &str) -> Option<ImageName> {
        let rest = name
            .strip_prefix(EXTENSION_NAME)?
            .strip_prefix('-')?
            .strip_suffix(".raw")?;
        let (version, arch) = rest.rsplit_once('-')?;
        Some(ImageName {
            version: Version::from_str(version).ok()?,
            arch: Arch::from_str(arch).ok()?,
        })
    }

    /// The image file name: `alloy-1.10.2-amd64.raw`.
    pub fn file_name(&self) -> String {
        format!("{}.raw", self.identity())
    }

    /// The name without `.raw` (`alloy-1.10.2-amd64`): seeds the image's UUIDs.
    pub fn identity(&self) -> String {
        format!("{EXTENSION_NAME}-{}-{}", self.version, self.arch)
    }

    /// Its checksum file: `alloy-1.10.2-amd64.raw.sha256`.
    pub fn checksum_name(&self) -> String {
        checksum_name(&self.file_name())
    }

    /// The systemd-sysupdate pattern that matches every version's image for `arch`.
    pub fn match_pattern(arch: Arch) -> String {
        format!("{EXTENSION_NAME}-@v-{arch}.raw")
    }
}

impl std::fmt::Display for ImageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file_name())
    }
}

/// The checksum file that sits beside `file`: `<file>.sha256`.
pub fn checksum_name(file: &str) -> String {
    format!("{file}.sha256")
}

/// Which published stream a host follows. Release candidates never enter the stable index:
/// systemd orders `1.11.0-rc.1` above `1.11.0`, so one rc in the index hosts read would move
/// every auto-updating host onto it and then hold it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Channel {
    /// Releases only (X.Y.Z), at the bucket's top level.
    #[default]
    Stable,
    /// Release candidates (X.Y.Z-rc.N), under `rc/`, with their own SHA256SUMS.
    Rc,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Stable, Channel::Rc];

    pub fn name(self) -> &'static str {
        match self {
            Channel::Stable => "stable",
            Channel::Rc => "rc",
        }
    }

    /// What following it means, in a line (`--help` shows it).
    pub fn summary(self) -> &'static str {
        match self {
            Channel::Stable => "Releases only (X.Y.Z), at the bucket's top level",
            Channel::Rc => {
                "Release candidates (X.Y.Z-rc.N), under `rc/`, with their own SHA256SUMS"
            }
        }
    }

    pub fn of(version: &Version) -> Channel {
        if version.is_release_candidate() {
            Channel::Rc
        } else {
            Channel::Stable
        }
    }

    /// The folder of this channel under a base URL or bucket prefix (`""` or `rc/`).
    pub fn folder(self) -> &'static str {
        match self {
            Channel::Stable => "",
            Channel::Rc => "rc/",
        }
    }

    /// The URL of the channel's folder (its images and SHA256SUMS) under a base URL with or
    /// without its trailing slash: `<base>` or `<base>/rc`, without a trailing slash.
    pub fn base_url(self, base: &str) -> String {
        format!("{}/{}", base.trim_end_matches('/'), self.folder())
            .trim_end_matches('/')
            .to_string()
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Refuses a version outside `channel`, naming the channel it belongs to.
pub fn check_channel(version: &Version, channel: Channel) -> anyhow::Result<()> {
    let belongs = Channel::of(version);
    if belongs != channel {
        bail!(
            "{version} belongs to the {belongs} channel, not {channel}: pass --channel {belongs}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_round_trip_and_carry_version_and_arch() {
        let version: Version = "v1.11.0-rc.1".parse().unwrap();
        let name = ImageName::new(&version, Arch::Arm64);
        assert_eq!(name.file_name(), "alloy-1.11.0-rc.1-arm64.raw");
        assert_eq!(name.checksum_name(), "alloy-1.11.0-rc.1-arm64.raw.sha256");
        assert_eq!(name.identity(), "alloy-1.11.0-rc.1-arm64");
        assert_eq!(ImageName::parse(&name.file_name()), Some(name));
        for other in [
            "alloy-1.10.2-amd64.raw.sha256",
            "alloy-1.10.2-s390x.raw",
            "alloy-latest-amd64.raw",
            "other-1.10.2-amd64.raw",
            "SHA256SUMS",
        ] {
            assert_eq!(ImageName::parse(other), None, "{other}");
        }
        // The sysupdate pattern with @v replaced is exactly the image's name.
        assert_eq!(
            ImageName::match_pattern(Arch::Amd64).replace("@v", "1.10.2"),
            "alloy-1.10.2-amd64.raw"
        );
    }

    #[test]
    fn a_base_url_with_a_query_fragment_or_blank_is_refused() {
        check_base_url("https://b.example/a%20b/").unwrap();
        for bad in [
            "https://b.example/?x=1",
            "https://b.example/#top",
            "https://b.example/a b",
            "https://b.example/\nVerify=no",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn release_candidates_have_a_channel_of_their_own() {
        let rc: Version = "1.11.0-rc.1".parse().unwrap();
        let stable: Version = "1.11.0".parse().unwrap();
        assert_eq!(Channel::of(&rc), Channel::Rc);
        assert_eq!(Channel::of(&stable), Channel::Stable);
        assert_eq!(
            Channel::Rc.base_url("https://b.example/"),
            "https://b.example/rc"
        );
        assert_eq!(
            Channel::Stable.base_url("https://b.example"),
            "https://b.example"
        );
        assert_eq!(
            Channel::Stable.base_url("https://b.example/a/"),
            "https://b.example/a"
        );
        assert!(check_channel(&stable, Channel::Stable).is_ok());
        let err = check_channel(&rc, Channel::Stable).unwrap_err().to_string();
        assert!(err.contains("--channel rc"), "{err}");
    }
}
