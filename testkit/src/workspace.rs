//! A private place for `xtask build` to work in.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Run;

/// A private place to build in: its own cache and output directory, and the `xtask` to run.
pub struct Workspace {
    pub tmp: tempfile::TempDir,
    pub cache: PathBuf,
    pub out: PathBuf,
    xtask: PathBuf,
}

impl Workspace {
    /// A workspace that runs the `xtask` binary at `xtask`.
    pub fn new(xtask: impl AsRef<Path>) -> Workspace {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let out = tmp.path().join("out");
        Workspace {
            tmp,
            cache,
            out,
            xtask: xtask.as_ref().to_path_buf(),
        }
    }

    /// An `xtask` command with this workspace's cache, and nothing inherited that matters.
    pub fn command(&self, releases_url: &str) -> Command {
        let mut command = Command::new(&self.xtask);
        command
            .env("XDG_CACHE_HOME", &self.cache)
            .env("ALLOY_RELEASES_URL", releases_url)
            .env_remove("SOURCE_DATE_EPOCH");
        command
    }

    /// [`Workspace::command`] for `xtask build VERSION --out-dir OUT ARGS...`, not yet run.
    pub fn build_command(&self, releases_url: &str, version: &str, args: &[&str]) -> Command {
        let mut command = self.command(releases_url);
        command
            .arg("build")
            .arg(version)
            .arg("--out-dir")
            .arg(&self.out)
            .args(args);
        command
    }

    /// `xtask build VERSION --out-dir OUT ARGS...` against `releases_url`.
    pub fn build(&self, releases_url: &str, version: &str, args: &[&str]) -> Run {
        Run::from_command(&mut self.build_command(releases_url, version, args))
    }

    /// Every name in the output directory, hidden ones too, sorted.
    pub fn out_names(&self) -> Vec<String> {
        let mut names: Vec<String> = match std::fs::read_dir(&self.out) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    pub fn image(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }
}
