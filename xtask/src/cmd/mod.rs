//! The command layer: which commands there are, each with its flags and its `run` in a module
//! of its own, and nothing else. Commands turn flags into the domain's values and call the
//! pipeline steps below them; nothing below imports from here.

pub mod args;
pub mod build;
pub mod butane;
pub mod check;
pub mod inspect;
pub mod latest;
pub mod member;
pub mod missing;
pub mod sysupdate;
pub mod verify;

use clap::{Parser, Subcommand};
use xshell::Shell;

pub use args::SECRET_ARGS;

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
    Publish(member::Publish),
    Verify(verify::Verify),
    Latest(latest::Latest),
    Missing(missing::Missing),
    Sysupdate(sysupdate::Sysupdate),
    Butane(butane::Butane),
    Inspect(inspect::Inspect),
    Bench(member::Bench),
    Check(check::Check),
}

impl Command {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        match self {
            Command::Build(command) => command.run(sh),
            Command::Publish(command) => command.member.run(sh, "xtask-publish"),
            Command::Verify(command) => command.run(sh),
            Command::Latest(command) => command.run(sh),
            Command::Missing(command) => command.run(sh),
            Command::Sysupdate(command) => command.run(sh),
            Command::Butane(command) => command.run(sh),
            Command::Inspect(command) => command.run(sh),
            Command::Bench(command) => command.member.run(sh, "xtask-bench"),
            Command::Check(command) => command.run(sh),
        }
    }

    /// Whether the command runs a workspace member, which reads its own secrets from the
    /// environment we pass on (publish: the R2 keys and the signing key).
    pub fn is_member(&self) -> bool {
        matches!(self, Command::Publish(_) | Command::Bench(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::parse_args;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_token_on_the_command_line_is_refused() {
        let refused = parse_args::<Cli>(
            ["x", "latest", "--github-token", "ghp_secret"],
            &SECRET_ARGS,
        );
        let err = refused.unwrap_err().to_string();
        assert!(err.contains("GITHUB_TOKEN"), "{err}");
        assert!(!err.contains("ghp_secret"), "{err}");
        parse_args::<Cli>(["x", "latest"], &SECRET_ARGS).unwrap();
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
