//! alloy-sysext: Grafana Alloy releases -> verified, reproducible systemd-sysext images for
//! Flatcar, and what hosts need to install them and stay current.
//!
//! Layers, each importing only from those below it:
//! - [`cmd`]: the commands, each with its flags and `run`;
//! - [`pipeline`]: `build`'s flow, one image at a time;
//! - the pipeline's steps, data flowing forward: release ([`release`]) -> staged tree
//!   ([`payload`], which lists everything the image carries) -> image ([`image`]) -> bucket
//!   (the `xtask-publish` crate, with [`signing`]) -> [`verify`] -> hosts ([`host`]);
//! - the contract the steps share: names ([`contract`]), [`version`]s and [`arch`]s;
//! - [`util`]: plumbing (HTTP, checksums, files, processes, signals) that knows nothing of
//!   Alloy; [`runtime`]: what every binary of the workspace does around its command.

pub mod arch;
pub mod cmd;
pub mod contract;
pub mod host;
pub mod image;
pub mod payload;
pub mod pipeline;
pub mod release;
pub mod runtime;
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
