//! `cargo xtask butane`.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use xshell::Shell;

use super::args::{parse_yes_no, BaseUrlArgs, GithubArgs, VersionArg};
use crate::arch::Arch;
use crate::contract::{Channel, ImageName, HOST_KEYRING, INDEX_NAME};
use crate::host::butane::{image_digest, read_keyring, ButaneConfig, DigestSource, Updates};
use crate::host::sysupdate::{transfer_file, verify_setting};
use crate::util::http::Http;
use crate::util::progress::detail;

/// Print a Butane config (variant flatcar) that installs one image, pinned by its sha256.
///
/// The digest comes from <DIST>/alloy-<VERSION>-<ARCH>.raw.sha256 when that file exists, else
/// from the bucket's .sha256. Translate with `butane --strict`.
#[derive(Args, Debug)]
pub struct Butane {
    /// Alloy version (X.Y.Z), or `latest`
    pub version: VersionArg,

    /// Architecture of the host
    #[arg(long, value_enum, default_value = "amd64")]
    pub arch: Arch,

    #[command(flatten)]
    pub base_url: BaseUrlArgs,

    /// Local build output to read the .sha256 from [default: dist/ at the repository root]
    #[arg(long, value_name = "DIR")]
    pub dist: Option<PathBuf>,

    /// Also install the sysupdate transfer file, the alloy-sysupdate script and its timer, so
    /// the host picks up new releases, runs them, and rolls back one that does not come up
    #[arg(long)]
    pub sysupdate: bool,

    /// With --sysupdate: which index the host follows, stable (<URL>/) or rc (<URL>/rc/,
    /// release candidates only). An rc VERSION needs --channel rc
    #[arg(long, value_enum, default_value = "stable")]
    pub channel: Channel,

    /// With --sysupdate: Verify=yes or no [default: yes; a channel without SHA256SUMS.gpg is
    /// refused unless given --verify no, which trusts whoever can write the bucket with root
    /// on every host]
    #[arg(long, value_name = "yes|no", value_parser = parse_yes_no, requires = "sysupdate")]
    pub verify: Option<bool>,

    /// With --sysupdate: a binary public keyring (gpg --export KEYID) to install as
    /// /etc/systemd/import-pubring.gpg, which Verify=yes checks SHA256SUMS.gpg against. It
    /// REPLACES the vendor keyring /usr/lib/systemd/import-pubring.gpg for every Verify=yes
    /// download on the host (systemd-pull reads the first that exists): include any other key
    /// the host needs in FILE
    #[arg(long, value_name = "FILE", requires = "sysupdate")]
    pub keyring: Option<PathBuf>,

    #[command(flatten)]
    pub github: GithubArgs,
}

impl Butane {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let base_url = self.base_url.checked()?.to_string();
        let version = self.version.clone().resolve(&self.github)?;
        if self.sysupdate && version.is_release_candidate() && self.channel == Channel::Stable {
            bail!(
                "{version} is a release candidate, published only in the rc channel: pass --channel rc \
                 (a stable host on an rc would never take the release, which systemd orders below it)"
            );
        }
        let http = Http::new();
        let image = ImageName::new(&version, self.arch);
        let dist = self.dist.clone().unwrap_or_else(crate::default_dist);
        // The keyring is read (and a secret key refused) before it checks anything.
        let updates = match self.sysupdate {
            true => Some(self.updates(&http, &base_url)?),
            false => None,
        };
        let (digest, source) =
            image_digest(&http, &dist, &base_url, &image, self.keyring.as_deref())?;
        detail(format!("{image}: sha256 {digest} (from {source})"));
        if let DigestSource::Unsigned(_) = source {
            detail(format!(
                "nothing signs that digest: whoever can write the bucket chooses what new hosts boot; build {image} here, or pass --sysupdate --keyring FILE to take it from the signed {INDEX_NAME}"
            ));
        }
        let config = ButaneConfig {
            image_base_url: Channel::of(&version).base_url(&base_url),
            image,
            digest,
            updates,
        };
        print!("{}", config.render());
        Ok(())
    }

    /// The transfer file for the channel (`Verify=` as given, else yes when the channel's index
    /// is signed; an unsigned one needs --verify no) and the keyring, if given.
    fn updates(&self, http: &Http, base_url: &str) -> anyhow::Result<Updates> {
        let channel_url = self.channel.base_url(base_url);
        let verify = verify_setting(self.verify, http, &channel_url)?;
        if verify && self.keyring.is_none() {
            detail(format!(
                "Verify=yes: hosts need the signing key in {HOST_KEYRING}; pass --keyring FILE to install it"
            ));
        }
        let keyring = match &self.keyring {
            Some(path) => {
                let bytes = read_keyring(path)?;
                detail(format!(
                    "--keyring: {HOST_KEYRING} replaces the vendor keyring /usr/lib/systemd/import-pubring.gpg for every Verify=yes download on the host"
                ));
                Some(bytes)
            }
            None => None,
        };
        Ok(Updates {
            transfer: transfer_file(&channel_url, self.arch, verify),
            keyring,
        })
    }
}
