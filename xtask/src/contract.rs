//! The image contract: every name, path and metadata line that the build writes and that
//! inspection, verification, publishing and the host configuration read back. One place, so
//! that what stage writes and what verify expects can never drift apart.

use std::str::FromStr;

use anyhow::bail;
use clap::ValueEnum;

use crate::arch::Arch;
use crate::version::Version;

/// The extension's name: the image is merged as `alloy.raw`, and its metadata file is
/// `extension-release.alloy`.
pub const EXTENSION_NAME: &str = "alloy";

/// Where the binary lives inside the image (relative to its root).
pub const ALLOY_PATH: &str = "usr/bin/alloy";

/// Where the extension's metadata lives inside the image (relative to its root).
pub const EXTENSION_RELEASE_PATH: &str = "usr/lib/extension-release.d/extension-release.alloy";

/// The bucket's index of published images, in `sha256sum` format, that systemd-sysupdate reads.
pub const INDEX_NAME: &str = "SHA256SUMS";

/// The detached signature of the index that `Verify=yes` requires.
pub const SIGNATURE_NAME: &str = "SHA256SUMS.gpg";

/// Where hosts download published images from: the bucket's public domain.
pub const DEFAULT_BASE_URL: &str = "https://ghost-sysext-images.separationofconcerns.dev";

/// Where Alloy's release assets live: `<URL>/v<VERSION>/<asset>`.
pub const DEFAULT_RELEASES_URL: &str = "https://github.com/grafana/alloy/releases/download";

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
            arch: Arch::from_str(arch, false).ok()?,
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

/// The extension's metadata: systemd-sysext merges it only on a host whose os-release has the
/// same `ID` and `SYSEXT_LEVEL`, and whose architecture matches. `EXTENSION_RELOAD_MANAGER=1`
/// asks systemd-sysext (>= 255) to reload units after a merge, so the manager sees alloy.service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionRelease {
    pub id: String,
    pub sysext_level: String,
    /// systemd's architecture name (`x86-64`, `arm64`).
    pub architecture: String,
    pub reload_manager: bool,
}

/// The `ID=` and `SYSEXT_LEVEL=` of Flatcar's os-release.
pub const FLATCAR_ID: &str = "flatcar";
pub const FLATCAR_SYSEXT_LEVEL: &str = "1.0";

impl ExtensionRelease {
    /// What we ship for `arch`.
    pub fn for_arch(arch: Arch) -> ExtensionRelease {
        ExtensionRelease {
            id: FLATCAR_ID.into(),
            sysext_level: FLATCAR_SYSEXT_LEVEL.into(),
            architecture: arch.systemd_name().into(),
            reload_manager: true,
        }
    }

    pub fn render(&self) -> String {
        let mut text = format!(
            "ID={}\nSYSEXT_LEVEL={}\nARCHITECTURE={}\n",
            self.id, self.sysext_level, self.architecture
        );
        if self.reload_manager {
            text.push_str("EXTENSION_RELOAD_MANAGER=1\n");
        }
        text
    }

    /// One field of an os-release style text (`KEY=value`, quotes removed), as systemd reads it.
    pub fn field(text: &str, key: &str) -> Option<String> {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
    }

    /// What is wrong with `text` as the extension-release of an image for `arch`: each field we
    /// rely on, named with what it has and what it should have. Empty when it is right.
    pub fn problems(text: &str, arch: Arch) -> Vec<String> {
        let want = ExtensionRelease::for_arch(arch);
        let mut problems = Vec::new();
        for (key, want) in [
            ("ID", want.id.as_str()),
            ("SYSEXT_LEVEL", want.sysext_level.as_str()),
            ("ARCHITECTURE", want.architecture.as_str()),
        ] {
            match Self::field(text, key) {
                Some(value) if value == want => {}
                Some(value) => problems.push(format!(
                    "extension-release has {key}={value}, expected {key}={want}"
                )),
                None => problems.push(format!("extension-release lacks {key}={want}")),
            }
        }
        problems
    }
}

/// Which published stream a host follows. Release candidates never enter the stable index:
/// systemd orders `1.11.0-rc.1` above `1.11.0`, so one rc in the index hosts read would move
/// every auto-updating host onto it and then hold it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, ValueEnum)]
pub enum Channel {
    /// Releases only (X.Y.Z), at the bucket's top level
    #[default]
    Stable,
    /// Release candidates (X.Y.Z-rc.N), under `rc/`, with their own SHA256SUMS
    Rc,
}

impl Channel {
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
        f.write_str(match self {
            Channel::Stable => "stable",
            Channel::Rc => "rc",
        })
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
    fn extension_release_matches_flatcar_and_reads_back() {
        assert_eq!(
            ExtensionRelease::for_arch(Arch::Amd64).render(),
            "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\nEXTENSION_RELOAD_MANAGER=1\n"
        );
        let arm = ExtensionRelease::for_arch(Arch::Arm64).render();
        assert_eq!(
            arm,
            "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=arm64\nEXTENSION_RELOAD_MANAGER=1\n"
        );
        assert!(ExtensionRelease::problems(&arm, Arch::Arm64).is_empty());
        assert_eq!(
            ExtensionRelease::problems("ID=\"debian\"\nARCHITECTURE=arm64\n", Arch::Amd64),
            [
                "extension-release has ID=debian, expected ID=flatcar",
                "extension-release lacks SYSEXT_LEVEL=1.0",
                "extension-release has ARCHITECTURE=arm64, expected ARCHITECTURE=x86-64",
            ]
        );
        assert_eq!(
            EXTENSION_RELEASE_PATH,
            format!("usr/lib/extension-release.d/extension-release.{EXTENSION_NAME}")
        );
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
