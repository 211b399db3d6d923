//! alloy-sysext: Grafana Alloy releases -> verified, reproducible systemd-sysext images for
//! Flatcar, and what hosts need to install them and stay current.
//!
//! The modules follow the pipeline, data flowing forward:
//! release ([`latest`], [`build::fetch`]) -> verified zip ([`build::archive`], [`build::elf`])
//! -> staged tree ([`build::stage`]) -> image ([`image`]) -> checksum -> bucket (the
//! `xtask-publish` crate) -> [`verify`] -> hosts ([`host`]). [`contract`] holds every name and
//! path they share; [`util`] the plumbing (HTTP, checksums, files, progress, tools).

pub mod arch;
pub mod build;
pub mod check;
pub mod cli;
pub mod contract;
pub mod host;
pub mod image;
pub mod latest;
pub mod signing;
pub mod util;
pub mod verify;
pub mod version;

use std::path::{Path, PathBuf};

/// The repository root: the workspace above this crate.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The default output directory of `build` and input of `publish` and `butane`.
pub fn default_dist() -> PathBuf {
    project_root().join("dist")
}
