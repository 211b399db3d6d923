//! Flags more than one command takes, and how the command line names the domain's closed sets
//! (architectures, formats, channels): the domain's types know nothing of clap.

use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};

use crate::arch::Arch;
use crate::contract::{Channel, DEFAULT_BASE_URL};
use crate::image::{Ext4Fill, ImageFormat};
use crate::release::github::{Github, DEFAULT_GITHUB_API_URL};
use crate::util::http::{self, Http, Limits};
use crate::util::progress::{detail, step};
use crate::version::Version;

impl ValueEnum for Arch {
    fn value_variants<'a>() -> &'a [Self] {
        &Arch::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

impl ValueEnum for ImageFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &ImageFormat::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(self.summary()))
    }
}

impl ValueEnum for Ext4Fill {
    fn value_variants<'a>() -> &'a [Self] {
        &[Ext4Fill::InProcess, Ext4Fill::Debugfs]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(match self {
            Ext4Fill::InProcess => "in-process",
            Ext4Fill::Debugfs => "debugfs",
        }))
    }
}

impl ValueEnum for Channel {
    fn value_variants<'a>() -> &'a [Self] {
        &Channel::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(self.summary()))
    }
}

/// Parses `yes`/`no` (and true/false, 1/0).
pub fn parse_yes_no(input: &str) -> Result<bool, String> {
    match input {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        other => Err(format!("{other:?} is not yes or no")),
    }
}

/// The download limits of `build` and `verify`.
#[derive(Args, Debug, Clone)]
pub struct DownloadArgs {
    /// Largest release zip or image to download (bytes, or with KiB/MiB/GiB); a larger or
    /// endless one is refused
    #[arg(long, env = "ALLOY_SYSEXT_MAX_DOWNLOAD", value_name = "BYTES",
          default_value = "2GiB", value_parser = http::parse_size)]
    pub max_download_bytes: u64,

    /// Milliseconds over which a transfer must average --min-bytes-per-sec (tests shorten it)
    #[arg(
        long,
        env = "ALLOY_SYSEXT_PROGRESS_WINDOW_MS",
        hide = true,
        default_value_t = http::PROGRESS_WINDOW_MS
    )]
    pub progress_window_ms: u64,

    /// The slowest transfer worth waiting for, in bytes per second
    #[arg(
        long,
        env = "ALLOY_SYSEXT_MIN_BYTES_PER_SEC",
        hide = true,
        default_value_t = http::MIN_BYTES_PER_SEC
    )]
    pub min_bytes_per_sec: u64,
}

impl DownloadArgs {
    /// An HTTP client with these limits.
    pub fn http(&self) -> Http {
        Http::with_limits(Limits {
            max_download: self.max_download_bytes,
            min_bytes_per_sec: self.min_bytes_per_sec,
            window: std::time::Duration::from_millis(self.progress_window_ms.max(1)),
        })
    }
}

/// Where hosts download published images from.
#[derive(Args, Debug, Clone)]
pub struct BaseUrlArgs {
    /// Public base URL of the published images and SHA256SUMS; plain http only on loopback
    #[arg(long, env = "SYSEXT_BASE_URL", default_value = DEFAULT_BASE_URL, value_name = "URL")]
    pub base_url: String,
}

impl BaseUrlArgs {
    /// The base URL, checked (https, or plain http on loopback; no query or fragment).
    pub fn checked(&self) -> anyhow::Result<&str> {
        use anyhow::Context;
        crate::contract::check_base_url(&self.base_url).context("--base-url / SYSEXT_BASE_URL")?;
        Ok(&self.base_url)
    }
}

/// Where `latest` is looked up, and with which token.
#[derive(Args, Debug)]
pub struct GithubArgs {
    /// GitHub API root, where Alloy's releases are listed (GITHUB_TOKEN, when set, is sent to it)
    #[arg(long, env = "GITHUB_API_URL", default_value = DEFAULT_GITHUB_API_URL, value_name = "URL")]
    pub github_api_url: String,

    /// Raises GitHub's rate limit; from the environment only, never printed
    #[arg(long, env = "GITHUB_TOKEN", hide = true, hide_env_values = true)]
    pub github_token: Option<String>,
}

/// Ids of the arguments that carry secrets: environment only, never the command line.
pub const SECRET_ARGS: [&str; 1] = ["github_token"];

impl GithubArgs {
    pub fn github(&self) -> Github {
        Github::new(&self.github_api_url, self.github_token.clone())
    }
}

/// A version given on the command line: `latest`, or X.Y.Z / X.Y.Z-rc.N.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionArg {
    /// The highest stable release on GitHub, looked up before anything else is done.
    Latest,
    Exact(Version),
}

impl std::str::FromStr for VersionArg {
    type Err = anyhow::Error;

    fn from_str(input: &str) -> anyhow::Result<Self> {
        if input == "latest" {
            Ok(VersionArg::Latest)
        } else {
            input
                .parse()
                .map(VersionArg::Exact)
                .map_err(|e| anyhow::anyhow!("{e}; or `latest` for the highest stable release"))
        }
    }
}

impl VersionArg {
    /// `latest` looked up on GitHub (saying what it found), or the version as given.
    pub fn resolve(self, github: &GithubArgs) -> anyhow::Result<Version> {
        match self {
            VersionArg::Exact(version) => Ok(version),
            VersionArg::Latest => {
                step(format!(
                    "Looking up the latest Alloy release at {}",
                    github.github_api_url
                ));
                let version = github.github().latest(&Http::new())?;
                detail(format!("latest is {}", version.tag()));
                Ok(version)
            }
        }
    }
}
