//! `cargo xtask latest`.

use clap::Args;
use xshell::Shell;

use super::args::GithubArgs;
use crate::util::http::Http;

/// Print the highest stable Alloy version (vX.Y.Z, no draft, no prerelease), by version not date.
///
/// Lists every release of grafana/alloy through the GitHub API, following pagination; sends
/// GITHUB_TOKEN when set (for the rate limit).
#[derive(Args, Debug)]
pub struct Latest {
    #[command(flatten)]
    pub github: GithubArgs,
}

impl Latest {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        println!("{}", self.github.github().latest(&Http::new())?);
        Ok(())
    }
}
