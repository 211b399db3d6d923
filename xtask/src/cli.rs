//! The command line: what each command and flag means. Nothing here does work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::arch::Arch;
use crate::checksums::Digest;
use crate::fetch::DEFAULT_RELEASES_URL;
use crate::fleet::{Channel, DEFAULT_BASE_URL};
use crate::image::ImageFormat;
use crate::latest::DEFAULT_GITHUB_API_URL;
use crate::version::Version;

/// Build, publish and verify systemd-sysext images of Grafana Alloy for Flatcar Container Linux.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Build(BuildArgs),
    Publish(PublishArgs),
    Verify(VerifyArgs),
    Latest(LatestArgs),
    Sysupdate(SysupdateArgs),
    Butane(ButaneArgs),
    Inspect(InspectArgs),
    Bench(BenchArgs),
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

/// Where `latest` is looked up.
#[derive(Args, Debug)]
pub struct GithubArgs {
    /// GitHub API root, for `latest` (GITHUB_TOKEN, when set, is sent to it)
    #[arg(long, env = "GITHUB_API_URL", default_value = DEFAULT_GITHUB_API_URL, value_name = "URL")]
    pub github_api_url: String,
}

/// Print the highest stable Alloy version (vX.Y.Z, no draft, no prerelease), by version not date.
///
/// Lists every release of grafana/alloy through the GitHub API, following pagination; sends
/// GITHUB_TOKEN when set (for the rate limit).
#[derive(Args, Debug)]
pub struct LatestArgs {
    #[command(flatten)]
    pub github: GithubArgs,
}

/// Print the systemd-sysupdate transfer file that keeps /etc/extensions/alloy.raw up to date.
///
/// Install it as /etc/sysupdate.alloy.d/alloy.conf and run `systemd-sysupdate -C alloy update`.
#[derive(Args, Debug)]
pub struct SysupdateArgs {
    /// Architecture of the host
    #[arg(long, value_enum, default_value = "amd64")]
    pub arch: Arch,

    /// Public base URL of the published images and SHA256SUMS
    #[arg(long, env = "SYSEXT_BASE_URL", default_value = DEFAULT_BASE_URL, value_name = "URL")]
    pub base_url: String,

    /// Which index the host follows: stable (<URL>/SHA256SUMS) or rc (<URL>/rc/SHA256SUMS,
    /// release candidates, which systemd orders above their release: never mix them)
    #[arg(long, value_enum, default_value = "stable")]
    pub channel: Channel,

    /// Verify=yes (SHA256SUMS.gpg must be valid) or no [default: yes when the channel's SHA256SUMS.gpg exists]
    #[arg(long, value_name = "yes|no", value_parser = parse_yes_no)]
    pub verify: Option<bool>,
}

fn parse_yes_no(input: &str) -> Result<bool, String> {
    match input {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        other => Err(format!("{other:?} is not yes or no")),
    }
}

/// Print a Butane config (variant flatcar) that installs one image, pinned by its sha256.
///
/// The digest comes from <DIST>/alloy-<VERSION>-<ARCH>.raw.sha256 when that file exists, else
/// from <URL>/alloy-<VERSION>-<ARCH>.raw.sha256. Translate with `butane --strict`.
#[derive(Args, Debug)]
pub struct ButaneArgs {
    /// Alloy version (X.Y.Z), or `latest`
    pub version: VersionArg,

    /// Architecture of the host
    #[arg(long, value_enum, default_value = "amd64")]
    pub arch: Arch,

    /// Public base URL of the published images
    #[arg(long, env = "SYSEXT_BASE_URL", default_value = DEFAULT_BASE_URL, value_name = "URL")]
    pub base_url: String,

    /// Local build output to read the .sha256 from [default: dist/ at the repository root]
    #[arg(long, value_name = "DIR")]
    pub dist: Option<PathBuf>,

    /// Also install the sysupdate transfer file and enable systemd-sysupdate.timer, so the host
    /// picks up new releases and merges them
    #[arg(long)]
    pub sysupdate: bool,

    /// With --sysupdate: which index the host follows, stable (<URL>/) or rc (<URL>/rc/,
    /// release candidates only). An rc VERSION needs --channel rc
    #[arg(long, value_enum, default_value = "stable")]
    pub channel: Channel,

    /// With --sysupdate: Verify=yes or no [default: yes when the channel's SHA256SUMS.gpg exists]
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

/// Show what a built image holds, without mounting it: its filesystem, extension-release, and
/// /usr/bin/alloy's owner, mode, size and first bytes
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The image (.raw) to look into
    pub image: PathBuf,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Measure `cargo xtask build` (each format, cold and warm cache) against the plain-tools
/// pipeline (curl, unzip, mkfs.ext4 or mksquashfs -comp xz, sha256sum), on a generated
/// Alloy-sized release served on loopback. Prints a table; writes results.md and results.json
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Size of the generated Alloy binary, in MB (Alloy's is ~420)
    #[arg(long, default_value_t = 420, value_name = "MB")]
    pub size_mb: u64,

    /// Runs of each contender (the table shows medians)
    #[arg(long, default_value_t = 3)]
    pub runs: usize,

    /// Where to write results.md and results.json [default: target/bench]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Fetch an Alloy release, verify it, and pack it into a sysext image with its SHA-256.
///
/// Writes <OUT_DIR>/alloy-<VERSION>-<ARCH>.raw and .raw.sha256 (sha256sum format). Image
/// timestamps come from SOURCE_DATE_EPOCH, or 2024-01-01T00:00:00Z when unset, so the same
/// release always gives the same bytes. Downloads are cached in $XDG_CACHE_HOME/alloy-sysext
/// (default ~/.cache/alloy-sysext) and verified again before each use.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Alloy version: X.Y.Z or X.Y.Z-rc.N, with or without a leading v (e.g. 1.10.2), or
    /// `latest` for the highest stable release
    pub version: VersionArg,

    /// Architecture to build; repeat for several
    #[arg(long = "arch", value_enum, default_value = "amd64")]
    pub archs: Vec<Arch>,

    /// Filesystem of the image. The file is alloy-<VERSION>-<ARCH>.raw whatever the format:
    /// systemd-sysext tells them apart by their superblock
    #[arg(long, value_enum, default_value_t = ImageFormat::Ext4)]
    pub format: ImageFormat,

    /// Where to write images [default: dist/ at the repository root]
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,

    /// Base URL of Alloy's release assets (<URL>/v<VERSION>/<asset>); plain http only on loopback
    #[arg(long, env = "ALLOY_RELEASES_URL", default_value = DEFAULT_RELEASES_URL, value_name = "URL")]
    pub releases_url: String,

    /// Build from a local release zip instead of downloading (air-gapped machines); needs
    /// --sha256 or --sha256sums
    #[arg(long, value_name = "PATH", requires = "zip_digest")]
    pub zip: Option<PathBuf>,

    /// Expected SHA-256 of --zip
    #[arg(long, value_name = "HEX", group = "zip_digest", requires = "zip")]
    pub sha256: Option<Digest>,

    /// A local SHA256SUMS listing the expected digest of --zip
    #[arg(long, value_name = "PATH", group = "zip_digest", requires = "zip")]
    pub sha256sums: Option<PathBuf>,

    #[command(flatten)]
    pub github: GithubArgs,
    /// Leave out the drop-in that starts alloy.service at boot (the unit is still shipped:
    /// start it yourself)
    #[arg(long)]
    pub no_autostart: bool,
}

/// Upload built images to the R2 bucket, create-only, then list them in its SHA256SUMS.
///
/// Order: each image, then its .raw.sha256, then SHA256SUMS, so no reader sees a checksum for
/// an object that is not there. A key that exists already is never overwritten: identical
/// bytes are skipped, different bytes are refused. Credentials come from R2_ACCESS_KEY_ID and
/// R2_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), never from flags.
#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Version to publish (every image of it in --dir); without it, every image in --dir
    pub version: Option<Version>,

    /// Architecture to publish; repeat for several [default: every one present]
    #[arg(long = "arch", value_enum)]
    pub archs: Vec<Arch>,

    /// Where the built images are [default: dist/ at the repository root]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// S3 endpoint [default: $R2_ENDPOINT, else https://$R2_ACCOUNT_ID.r2.cloudflarestorage.com]
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Bucket name [default: $R2_BUCKET]
    #[arg(long, value_name = "NAME")]
    pub bucket: Option<String>,

    /// Folder inside the bucket to publish under (e.g. sysext/)
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,

    /// Say more about each request (never the secret key)
    #[arg(long, short)]
    pub verbose: bool,

    /// Images larger than this many bytes go up in parts
    #[arg(long, env = "ALLOY_SYSEXT_MULTIPART_THRESHOLD", hide = true,
          default_value_t = crate::multipart::DEFAULT_THRESHOLD)]
    pub multipart_threshold: u64,

    /// Size of each multipart part in bytes (at least 5 MiB)
    #[arg(long, env = "ALLOY_SYSEXT_PART_SIZE", hide = true,
          default_value_t = crate::multipart::DEFAULT_PART_SIZE)]
    pub part_size: u64,
}

/// Check published images from their public URL: digest against the .raw.sha256 and the
/// SHA256SUMS line, extension-release fields, and usr/bin/alloy (present, executable, an ELF
/// of the right architecture). Reads images without mounting them; prints one row per image
/// (and one for SHA256SUMS.gpg with --keyring) and fails if any check fails.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Version to verify; without it, every image of --arch listed in <BASE_URL>/SHA256SUMS
    pub version: Option<Version>,

    /// Architecture to verify
    #[arg(long, value_enum, default_value = "amd64")]
    pub arch: Arch,

    /// Where hosts download images from; plain http only on loopback
    #[arg(long, env = "SYSEXT_BASE_URL", default_value = crate::verify::DEFAULT_BASE_URL,
          value_name = "URL")]
    pub base_url: String,

    /// Also check <BASE_URL>/SHA256SUMS.gpg, the signature of SHA256SUMS, against this public
    /// keyring (binary or armored: gpg --export KEYID > FILE); a missing or bad one fails
    #[arg(long, value_name = "FILE")]
    pub keyring: Option<PathBuf>,
}
