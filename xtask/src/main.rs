//! `cargo xtask`: turns Grafana Alloy releases into systemd-sysext images for Flatcar.

mod arch;
mod archive;
mod bench;
mod bucket;
mod build;
mod checksums;
mod cli;
mod download;
mod elf;
mod fetch;
mod files;
mod fleet;
mod image;
mod index;
mod latest;
mod multipart;
mod progress;
mod publish;
mod service;
mod signing;
mod stage;
mod timings;
mod tools;
mod verify;
mod version;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, VersionArg};
use version::Version;

/// `latest` looked up on GitHub (printing what it found), or the version as given.
fn resolve_version(arg: VersionArg, github_api_url: &str) -> anyhow::Result<Version> {
    match arg {
        VersionArg::Exact(version) => Ok(version),
        VersionArg::Latest => {
            progress::step(format!(
                "Looking up the latest Alloy release at {github_api_url}"
            ));
            let version = latest::latest(
                &download::Http::new(),
                github_api_url,
                latest::token_from_env().as_deref(),
            )?;
            progress::detail(format!("latest is {}", version.tag()));
            Ok(version)
        }
    }
}

/// The repository root: the workspace above this crate.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build(args) => {
            let local_zip = args.zip.map(|zip| {
                let digest = match (args.sha256, args.sha256sums) {
                    (Some(digest), _) => build::LocalDigest::Digest(digest),
                    (None, Some(sums)) => build::LocalDigest::Sha256Sums(sums),
                    (None, None) => unreachable!("clap requires one of --sha256, --sha256sums"),
                };
                (zip, digest)
            });
            let mut archs = args.archs;
            archs.sort();
            archs.dedup();
            let version = resolve_version(args.version, &args.github.github_api_url)?;
            build::run(build::BuildOptions {
                version,
                archs,
                out_dir: args.out_dir.unwrap_or_else(|| project_root().join("dist")),
                releases_url: args.releases_url,
                format: args.format,
                local_zip,
                autostart: !args.no_autostart,
            })?;
            timings::write_if_asked()?;
        }
        Command::Latest(args) => {
            let version = latest::latest(
                &download::Http::new(),
                &args.github.github_api_url,
                latest::token_from_env().as_deref(),
            )?;
            println!("{version}");
        }
        Command::Sysupdate(args) => {
            print!(
                "{}",
                fleet::sysupdate(
                    &download::Http::new(),
                    args.arch,
                    &args.base_url,
                    args.channel,
                    args.verify
                )?
            );
        }
        Command::Butane(args) => {
            let version = resolve_version(args.version, &args.github.github_api_url)?;
            print!(
                "{}",
                fleet::butane(
                    &download::Http::new(),
                    &fleet::ButaneOptions {
                        version,
                        arch: args.arch,
                        base_url: args.base_url,
                        dist: args.dist.unwrap_or_else(|| project_root().join("dist")),
                        sysupdate: args.sysupdate,
                        channel: args.channel,
                        verify: args.verify,
                        keyring: args.keyring,
                    },
                )?
            );
        }
        Command::Publish(args) => {
            let mut archs = args.archs;
            archs.sort();
            archs.dedup();
            publish::run(publish::PublishOptions {
                version: args.version,
                archs,
                dir: args.dir.unwrap_or_else(|| project_root().join("dist")),
                endpoint: args.endpoint,
                bucket: args.bucket,
                prefix: args.prefix,
                multipart_threshold: args.multipart_threshold,
                part_size: args.part_size,
                verbose: args.verbose,
            })?;
        }
        Command::Verify(args) => verify::run(verify::VerifyOptions {
            version: args.version,
            arch: args.arch,
            base_url: args.base_url,
            keyring: args.keyring,
        })?,
        Command::Inspect(args) => {
            let contents = image::inspect(&args.image)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&contents.to_json())?);
            } else {
                print!("{}", contents.summary());
            }
        }
        Command::Bench(args) => bench::run(bench::BenchOptions {
            size_mb: args.size_mb,
            runs: args.runs,
            out_dir: args
                .out
                .unwrap_or_else(|| project_root().join("target").join("bench")),
        })?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
