//! What the image carries, listed once: [`PAYLOAD`] names every file with its mode, where its
//! bytes come from and when it is included. Staging ([`stage`]) lays the table out, `inspect`
//! and `verify` read their paths and expectations from it, and a test holds the README's table
//! of the image's files to it. The texts themselves (units, defaults) are in [`service`].
//!
//! A sysext may only add to `/usr` (and `/opt`, which we do not use): every path here is
//! relative to the image's root and starts with `usr/`.

pub mod service;
pub mod stage;

use crate::arch::Arch;

/// Where the binary lives inside the image.
pub const ALLOY_PATH: &str = "usr/bin/alloy";
/// The extension's metadata: systemd-sysext reads `extension-release.<NAME>`, NAME being the
/// image's name without `.raw` (`alloy`).
pub const EXTENSION_RELEASE_PATH: &str = "usr/lib/extension-release.d/extension-release.alloy";
pub const UNIT_PATH: &str = "usr/lib/systemd/system/alloy.service";
/// The oneshot that creates the user and seeds /etc before each start of alloy.service.
pub const SETUP_UNIT_PATH: &str = "usr/lib/systemd/system/alloy-setup.service";
pub const SYSUSERS_PATH: &str = "usr/lib/sysusers.d/alloy.conf";
pub const TMPFILES_PATH: &str = "usr/lib/tmpfiles.d/alloy.conf";
pub const DEFAULT_CONFIG_PATH: &str = "usr/share/alloy/config.alloy";
pub const DEFAULT_ENVIRONMENT_PATH: &str = "usr/share/alloy/environment";
/// The drop-in that makes `multi-user.target` uphold (start, and restart if it stops) Alloy.
pub const AUTOSTART_PATH: &str = "usr/lib/systemd/system/multi-user.target.d/10-alloy.conf";

/// Where a file's bytes come from.
#[derive(Clone, Copy, Debug)]
pub enum Content {
    /// Alloy itself: the one entry of the verified release zip, inflated while packing.
    Binary,
    /// The extension's metadata for the image's architecture ([`ExtensionRelease`]).
    ExtensionRelease,
    /// A fixed text: a unit, a drop-in, a default.
    Text(fn() -> String),
}

/// When a file is in the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Always,
    /// Unless the build asks for `--no-autostart`.
    Autostart,
}

/// One file of the image.
#[derive(Clone, Copy, Debug)]
pub struct PayloadFile {
    /// Relative to the image's root (`usr/bin/alloy`).
    pub path: &'static str,
    /// Permission bits; owner and group are always 0:0.
    pub mode: u32,
    pub content: Content,
    pub when: When,
}

/// Every file the image carries, in the order it is staged (and packed). Directories are
/// implied by the paths (mode 0755).
pub const PAYLOAD: &[PayloadFile] = &[
    PayloadFile {
        path: ALLOY_PATH,
        mode: 0o755,
        content: Content::Binary,
        when: When::Always,
    },
    PayloadFile {
        path: EXTENSION_RELEASE_PATH,
        mode: 0o644,
        content: Content::ExtensionRelease,
        when: When::Always,
    },
    PayloadFile {
        path: UNIT_PATH,
        mode: 0o644,
        content: Content::Text(service::unit),
        when: When::Always,
    },
    PayloadFile {
        path: SETUP_UNIT_PATH,
        mode: 0o644,
        content: Content::Text(service::setup_unit),
        when: When::Always,
    },
    PayloadFile {
        path: SYSUSERS_PATH,
        mode: 0o644,
        content: Content::Text(service::sysusers),
        when: When::Always,
    },
    PayloadFile {
        path: TMPFILES_PATH,
        mode: 0o644,
        content: Content::Text(service::tmpfiles),
        when: When::Always,
    },
    PayloadFile {
        path: DEFAULT_CONFIG_PATH,
        mode: 0o644,
        content: Content::Text(service::default_config),
        when: When::Always,
    },
    PayloadFile {
        path: DEFAULT_ENVIRONMENT_PATH,
        mode: 0o644,
        content: Content::Text(service::default_environment),
        when: When::Always,
    },
    PayloadFile {
        path: AUTOSTART_PATH,
        mode: 0o644,
        content: Content::Text(service::autostart_dropin),
        when: When::Autostart,
    },
];

/// The files of an image built with or without `autostart`, in staging order.
pub fn files(autostart: bool) -> impl Iterator<Item = &'static PayloadFile> {
    PAYLOAD
        .iter()
        .filter(move |file| autostart || file.when == When::Always)
}

/// The table's row for `path`. Asking for a path that is not in the table is a bug.
pub fn file(path: &str) -> &'static PayloadFile {
    PAYLOAD
        .iter()
        .find(|file| file.path == path)
        .unwrap_or_else(|| panic!("{path} is not in the payload table"))
}

/// The `ID=` and `SYSEXT_LEVEL=` of Flatcar's os-release.
pub const FLATCAR_ID: &str = "flatcar";
pub const FLATCAR_SYSEXT_LEVEL: &str = "1.0";

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

    /// What is wrong with `text` as the extension-release of an image for `arch`: each field a
    /// host relies on to merge it, named with what it has and what it should have. Empty when
    /// it is right. (`EXTENSION_RELOAD_MANAGER` is ours to choose, not a host's condition.)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_unique_under_usr_and_never_under_usr_sbin() {
        for (i, file) in PAYLOAD.iter().enumerate() {
            stage::check_path(file.path).unwrap();
            assert!(
                PAYLOAD[i + 1..].iter().all(|other| other.path != file.path),
                "{} twice",
                file.path
            );
        }
        assert_eq!(file(ALLOY_PATH).mode, 0o755);
        let without: Vec<&str> = files(false).map(|f| f.path).collect();
        assert!(!without.contains(&AUTOSTART_PATH), "{without:?}");
        assert_eq!(files(true).count(), without.len() + 1);
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
            format!(
                "usr/lib/extension-release.d/extension-release.{}",
                crate::contract::EXTENSION_NAME
            )
        );
    }

    /// The README's table of the image's files ("in the image") lists exactly the payload.
    #[test]
    fn the_readme_lists_every_file_of_the_image() {
        let readme = std::fs::read_to_string(crate::project_root().join("README.md")).unwrap();
        let listed: Vec<&str> = readme
            .lines()
            .filter_map(|line| line.strip_prefix("| `/usr/"))
            .filter_map(|rest| rest.split('`').next())
            .collect();
        let table: Vec<&str> = PAYLOAD
            .iter()
            .map(|file| file.path.strip_prefix("usr/").unwrap())
            .collect();
        assert_eq!(listed, table, "README's table of the image's files");
    }
}
