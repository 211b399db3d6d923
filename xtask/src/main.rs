//! `cargo xtask`: parses the command line, makes one `Shell`, and dispatches. Nothing else.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use xtask::cli::{exit_code, refuse_secrets_on_argv, Cli, SECRET_ARGS};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    exit_code(
        refuse_secrets_on_argv(&matches, &SECRET_ARGS)
            .and_then(|()| Ok(Cli::from_arg_matches(&matches)?))
            .and_then(|cli| cli.command.run(&xshell::Shell::new()?)),
    )
}
