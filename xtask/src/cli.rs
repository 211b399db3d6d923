//! The command line: which commands there are, and how each is dispatched. Every command's
//! flags live with the command (`build::Build`, `verify::Verify`, ...), each with its `run`.
//! `publish` and `bench` are workspace members of their own, built on first use: the S3 SDK
//! alone is most of the workspace's compile time, and `build` never uploads.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{ArgMatches, Args, Parser, Subcommand};
use xshell::Shell;

use crate::{build, check, host, image, latest, verify};

/// Build, publish and verify systemd-sysext images of Grafana Alloy for Flatcar Container Linux.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Build(build::Build),
    Publish(Publish),
    Verify(verify::Verify),
    Latest(latest::Latest),
    Sysupdate(host::sysupdate::Sysupdate),
    Butane(host::butane::Butane),
    Inspect(image::inspect::Inspect),
    Bench(Bench),
    Check(check::Check),
}

impl Command {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        match self {
            Command::Build(command) => command.run(sh).map(drop),
            Command::Publish(command) => command.member.run(sh, "xtask-publish"),
            Command::Verify(command) => command.run(sh),
            Command::Latest(command) => command.run(sh),
            Command::Sysupdate(command) => command.run(sh),
            Command::Butane(command) => command.run(sh),
            Command::Inspect(command) => command.run(sh),
            Command::Bench(command) => command.member.run(sh, "xtask-bench"),
            Command::Check(command) => command.run(sh),
        }
    }
}

/// Upload built images to the R2 bucket, create-only, then list them in its SHA256SUMS
/// (`cargo xtask publish --help` for its options; its S3 client is compiled on first use)
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Publish {
    #[command(flatten)]
    pub member: Member,
}

/// Measure `cargo xtask build` against the plain-tools pipeline on a generated Alloy-sized
/// release (`cargo xtask bench --help` for its options)
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Bench {
    #[command(flatten)]
    pub member: Member,
}

/// A command that lives in a workspace member of its own: its arguments, passed on as given.
#[derive(Args, Debug)]
pub struct Member {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,

    /// The cargo that runs us (cargo sets CARGO for `cargo run`)
    #[arg(long, env = "CARGO", hide = true)]
    pub cargo: Option<PathBuf>,
}

/// Tells a member (the bench) which `xtask` binary ran it.
pub const XTASK_ENV: &str = "ALLOY_SYSEXT_XTASK";

/// Variables that hold secrets: cargo, rustc and the tools we run never need them.
pub const SECRETS: [&str; 6] = [
    "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "SYSEXT_GPG_KEY",
    "GITHUB_TOKEN",
];

/// Removes [`SECRETS`] from our environment, once the command line (and its `env = ...`
/// defaults) is parsed: no child we start (packers, debugfs, gpg, gpg-agent) can inherit them.
/// Call before any other thread starts: the environment is not guarded against concurrent use.
pub fn forget_secrets() {
    for secret in SECRETS {
        std::env::remove_var(secret);
    }
}

impl Command {
    /// Whether the command runs a workspace member, which reads its own secrets from the
    /// environment we pass on (publish: the R2 keys and the signing key).
    pub fn is_member(&self) -> bool {
        matches!(self, Command::Publish(_) | Command::Bench(_))
    }
}

impl Member {
    /// Builds the member's binary (cargo's own progress shows on first use; cargo gets no
    /// secrets), then runs it in our place with our arguments and environment.
    fn run(self, sh: &Shell, package: &str) -> anyhow::Result<()> {
        let cargo = self.cargo.unwrap_or_else(|| "cargo".into());
        let manifest = crate::project_root().join("Cargo.toml");
        let xtask = std::env::current_exe().context("finding our own binary")?;
        // A target directory of its own (beside ours): the SDK turns on dependency features
        // that `xtask` alone does not, and sharing one directory would rebuild those crates
        // each time one switched between `cargo xtask build` and `cargo xtask publish`.
        let target_dir = xtask
            .parent()
            .and_then(Path::parent)
            .context("our binary is not in a cargo target directory")?
            .join("members");
        let mut build = std::process::Command::new(&cargo);
        build
            .args(["build", "--package", package, "--bin", package])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(sh.current_dir());
        for secret in SECRETS {
            build.env_remove(secret);
        }
        let status = build
            .status()
            .with_context(|| format!("running {} to build {package}", cargo.display()))?;
        if !status.success() {
            bail!("building {package} failed ({status}); see cargo's messages above");
        }
        let binary = target_dir.join("debug").join(package);
        use std::os::unix::process::CommandExt;
        // exec: the member becomes this process, so signals and the exit code are its own. The
        // bench measures this very xtask binary.
        let error = std::process::Command::new(&binary)
            .args(&self.args)
            .env(XTASK_ENV, &xtask)
            .exec();
        Err(error).with_context(|| format!("running {}", binary.display()))
    }
}

/// Ids of the arguments that carry secrets: environment only, never the command line, where
/// any local user can read them in the process list.
pub const SECRET_ARGS: [&str; 1] = ["github_token"];

/// Refuses any of the secret arguments `ids` given as a flag, in any subcommand.
pub fn refuse_secrets_on_argv(matches: &ArgMatches, ids: &[&str]) -> anyhow::Result<()> {
    for id in ids {
        if matches.try_contains_id(id).unwrap_or(false)
            && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        {
            bail!(
                "--{} is a secret: set it in the environment ({}), never on the command line; nothing was done",
                id.replace('_', "-"),
                id.to_uppercase()
            );
        }
    }
    match matches.subcommand() {
        Some((_, sub)) => refuse_secrets_on_argv(sub, ids),
        None => Ok(()),
    }
}

/// The one error printer of every binary of the workspace: the error, then each cause; nothing
/// after a signal (see [`crate::util::interrupt`]).
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    };
    // After Ctrl-C or SIGTERM, the failures it caused are not printed: the signal thread
    // cleans up and exits 128 + signal.
    crate::util::interrupt::exit_unless_interrupted(code, || {
        if let Err(error) = result {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
        }
    })
}

/// Parses `yes`/`no` (and true/false, 1/0).
pub fn parse_yes_no(input: &str) -> Result<bool, String> {
    match input {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        other => Err(format!("{other:?} is not yes or no")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_token_on_the_command_line_is_refused() {
        let matches = Cli::command()
            .try_get_matches_from(["x", "latest", "--github-token", "ghp_secret"])
            .unwrap();
        let err = refuse_secrets_on_argv(&matches, &SECRET_ARGS)
            .unwrap_err()
            .to_string();
        assert!(err.contains("GITHUB_TOKEN"), "{err}");
        assert!(!err.contains("ghp_secret"), "{err}");
        let matches = Cli::command()
            .try_get_matches_from(["x", "latest"])
            .unwrap();
        refuse_secrets_on_argv(&matches, &SECRET_ARGS).unwrap();
    }

    #[test]
    fn member_commands_pass_every_argument_on() {
        let cli = Cli::try_parse_from(["x", "publish", "1.10.2", "--help", "-v"]).unwrap();
        let Command::Publish(publish) = cli.command else {
            panic!("not publish")
        };
        assert_eq!(publish.member.args, ["1.10.2", "--help", "-v"]);
    }
}
