//! `cargo xtask inspect`.

use std::path::PathBuf;

use clap::Args;
use xshell::Shell;

use crate::image::inspect;

/// Show what a built image holds, without mounting it: its filesystem, extension-release, and
/// /usr/bin/alloy's owner, mode, size and first bytes
#[derive(Args, Debug)]
pub struct Inspect {
    /// The image (.raw) to look into
    pub image: PathBuf,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

impl Inspect {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let contents = inspect(&self.image)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&contents.to_json())?);
        } else {
            print!("{}", contents.summary());
        }
        Ok(())
    }
}
