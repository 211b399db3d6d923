//! `cargo xtask`: turns Grafana Alloy releases into systemd-sysext images for Flatcar.

mod arch;
mod archive;
mod bench;
mod build;
mod checksums;
mod cli;
mod download;
mod elf;
mod fetch;
mod files;
mod image;
mod progress;
mod stage;
mod timings;
mod tools;
mod version;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

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
            build::run(build::BuildOptions {
                version: args.version,
                archs,
                out_dir: args.out_dir.unwrap_or_else(|| project_root().join("dist")),
                releases_url: args.releases_url,
                format: args.format,
                local_zip,
            })?;
            timings::write_if_asked()?;
        }
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
