//! `cargo xtask missing`.

use clap::Args;
use xshell::Shell;

use super::args::{BaseUrlArgs, GithubArgs};
use crate::release::missing::{self, DEFAULT_SINCE};
use crate::util::http::Http;
use crate::version::Version;

/// List the Alloy releases on GitHub that the bucket does not hold yet, per channel: stable
/// X.Y.Z (at the top) and release candidates X.Y.Z-rc.N (under rc/) whose release is not out.
///
/// Compares GitHub's release list (every page, drafts excluded) with each channel's SHA256SUMS
/// at the public URL; a release whose zips or SHA256SUMS are not attached yet is listed as
/// waiting. Prints a table, or with --json what a workflow builds (`missing`, newest first).
#[derive(Args, Debug)]
pub struct Missing {
    /// The oldest version to consider; every line from it on is watched for patches
    #[arg(long, value_name = "VERSION", default_value = DEFAULT_SINCE)]
    pub since: Version,

    /// Print JSON: {since, base_url, missing: [{version, channel, archs}], waiting: [{version,
    /// channel, lacks}], published: [{channel, index, versions}]}
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub base_url: BaseUrlArgs,

    #[command(flatten)]
    pub github: GithubArgs,
}

impl Missing {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let base_url = self.base_url.checked()?;
        let report = missing::find(&Http::new(), &self.github.github(), base_url, &self.since)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            print!("{}", report.text());
        }
        Ok(())
    }
}
