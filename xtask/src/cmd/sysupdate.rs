//! `cargo xtask sysupdate`.

use clap::Args;
use xshell::Shell;

use super::args::{parse_yes_no, BaseUrlArgs};
use crate::arch::Arch;
use crate::contract::Channel;
use crate::host::sysupdate::{transfer_file, verify_setting};
use crate::util::http::Http;

/// Print the systemd-sysupdate transfer file that keeps /etc/extensions/alloy.raw up to date.
///
/// Install it as /etc/sysupdate.alloy.d/alloy.transfer (systemd 257+) and alloy.conf (252) and
/// run `systemd-sysupdate -C alloy update`. `butane --sysupdate` also installs what applies an
/// update to the running Alloy and rolls back a release that does not come up.
#[derive(Args, Debug)]
pub struct Sysupdate {
    /// Architecture of the host
    #[arg(long, value_enum, default_value = "amd64")]
    pub arch: Arch,

    #[command(flatten)]
    pub base_url: BaseUrlArgs,

    /// Which index the host follows: stable (<URL>/SHA256SUMS) or rc (<URL>/rc/SHA256SUMS,
    /// release candidates, which systemd orders above their release: never mix them)
    #[arg(long, value_enum, default_value = "stable")]
    pub channel: Channel,

    /// Verify=yes (SHA256SUMS.gpg must be valid) or no [default: yes; a channel without
    /// SHA256SUMS.gpg is refused unless given --verify no, which trusts whoever can write the
    /// bucket with root on every host]
    #[arg(long, value_name = "yes|no", value_parser = parse_yes_no)]
    pub verify: Option<bool>,
}

impl Sysupdate {
    /// The transfer file for the channel, `Verify=` as given, else yes when the channel's index
    /// is signed; an unsigned one needs --verify no.
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let channel_url = self.channel.base_url(self.base_url.checked()?);
        let verify = verify_setting(self.verify, &Http::new(), &channel_url)?;
        print!("{}", transfer_file(&channel_url, self.arch, verify));
        Ok(())
    }
}
