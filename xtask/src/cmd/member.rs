//! `cargo xtask publish` and `cargo xtask bench`: commands that live in workspace members of
//! their own, built on first use (the S3 SDK alone is most of the workspace's compile time, and
//! `build` never uploads), then run in our place.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use xshell::Shell;

use crate::runtime::{SECRETS, XTASK_ENV};

/// Upload built images to the R2 bucket, create-only, then list them in its SHA256SUMS
/// (`cargo xtask publish --help` for its options; its S3 client is compiled on first use)
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Publish {
    #[command(flatten)]
    pub member: Member,
}

/// Measure `cargo xtask build` against the plain-tools pipeline on a generated Alloy-sized
/// release (`cargo xtask bench --help` for its options)
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Bench {
    #[command(flatten)]
    pub member: Member,
}

/// A command that lives in a workspace member of its own: its arguments, passed on as given.
#[derive(Args, Debug)]
pub struct Member {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,

    /// The cargo that runs us (cargo sets CARGO for `cargo run`)
    #[arg(long, env = "CARGO", hide = true)]
    pub cargo: Option<PathBuf>,
}

impl Member {
    /// Builds the member's binary (cargo's own progress shows on first use; cargo gets no
    /// secrets), then runs it in our place with our arguments and environment.
    pub fn run(self, sh: &Shell, package: &str) -> anyhow::Result<()> {
        let cargo = self.cargo.unwrap_or_else(|| "cargo".into());
        let manifest = crate::project_root().join("Cargo.toml");
        let xtask = std::env::current_exe().context("finding our own binary")?;
        // A target directory of its own (beside ours): the SDK turns on dependency features
        // that `xtask` alone does not, and sharing one directory would rebuild those crates
        // each time one switched between `cargo xtask build` and `cargo xtask publish`.
        let target_dir = xtask
            .parent()
            .and_then(Path::parent)
            .context("our binary is not in a cargo target directory")?
            .join("members");
        let mut build = std::process::Command::new(&cargo);
        build
            .args(["build", "--package", package, "--bin", package])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(sh.current_dir());
        for secret in SECRETS {
            build.env_remove(secret);
        }
        let status = build
            .status()
            .with_context(|| format!("running {} to build {package}", cargo.display()))?;
        if !status.success() {
            bail!("building {package} failed ({status}); see cargo's messages above");
        }
        let binary = target_dir.join("debug").join(package);
        use std::os::unix::process::CommandExt;
        // exec: the member becomes this process, so signals and the exit code are its own. The
        // bench measures this very xtask binary.
        let error = std::process::Command::new(&binary)
            .args(&self.args)
            .env(XTASK_ENV, &xtask)
            .exec();
        Err(error).with_context(|| format!("running {}", binary.display()))
    }
}
