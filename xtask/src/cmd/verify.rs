//! `cargo xtask verify`.

use std::path::PathBuf;

use clap::Args;
use xshell::Shell;

use super::args::{BaseUrlArgs, DownloadArgs};
use crate::arch::Arch;
use crate::contract::{check_channel, Channel};
use crate::util::tools;
use crate::verify::{self, Audit, Request, Verdict};
use crate::version::Version;

/// Check published images from their public URL: digest against the .raw.sha256 and the
/// SHA256SUMS line, extension-release fields, and usr/bin/alloy (present, executable, an ELF
/// of the right architecture). Reads images without mounting them; prints one row per image
/// (and one for SHA256SUMS.gpg with --keyring) and fails if any check fails.
///
/// With --all, the whole bucket: both channels, both architectures. Where --keyring proves a
/// channel's SHA256SUMS, each image is only hashed as it streams by (no copy on disk);
/// otherwise each is downloaded and looked inside too.
#[derive(Args, Debug)]
pub struct Verify {
    /// Version to verify; without it, every image of --arch listed in the channel's SHA256SUMS
    pub version: Option<Version>,

    /// Audit the whole bucket: every image in SHA256SUMS and rc/SHA256SUMS, every architecture
    #[arg(long, conflicts_with_all = ["version", "arch", "channel"])]
    pub all: bool,

    /// Architecture to verify
    #[arg(long, value_enum, default_value = "amd64")]
    pub arch: Arch,

    #[command(flatten)]
    pub base_url: BaseUrlArgs,

    /// The channel to verify: stable (<BASE_URL>/) or rc (<BASE_URL>/rc/) [default: the
    /// VERSION's own, else stable]
    #[arg(long, value_enum)]
    pub channel: Option<Channel>,

    /// Also check SHA256SUMS.gpg, the signature of SHA256SUMS, against this public keyring
    /// (binary or armored: gpg --export KEYID > FILE); a missing or bad one fails
    #[arg(long, value_name = "FILE")]
    pub keyring: Option<PathBuf>,

    #[command(flatten)]
    pub downloads: DownloadArgs,
}

impl Verify {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let verdict = if self.all {
            let audit = Audit {
                base: self.base_url.checked()?.trim_end_matches('/').to_string(),
                keyring: self.keyring,
            };
            tools::preflight(sh, &audit.tools())?;
            verify::audit(&self.downloads.http(), &audit)?
        } else {
            self.one_channel(sh)?
        };
        println!();
        print!("{}", verdict.table());
        verdict.result()
    }

    /// VERSION, or every image of --arch, in one channel.
    fn one_channel(self, sh: &Shell) -> anyhow::Result<Verdict> {
        let channel = match (&self.version, self.channel) {
            (Some(version), Some(channel)) => {
                check_channel(version, channel)?;
                channel
            }
            (Some(version), None) => Channel::of(version),
            (None, channel) => channel.unwrap_or_default(),
        };
        let request = Request {
            base: channel.base_url(self.base_url.checked()?),
            version: self.version,
            arch: self.arch,
            keyring: self.keyring,
        };
        tools::preflight(sh, &request.tools())?;
        verify::verify(&self.downloads.http(), &request)
    }
}
