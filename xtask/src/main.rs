//! `cargo xtask`: parses the command line, makes one `Shell`, and dispatches; a signal ends it
//! through [`interrupt`], which cleans up first.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use xtask::cmd::{Cli, SECRET_ARGS};
use xtask::runtime::{exit_code, forget_secrets, refuse_secrets_on_argv};
use xtask::util::interrupt;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    exit_code(
        refuse_secrets_on_argv(&matches, &SECRET_ARGS)
            .and_then(|()| Ok(Cli::from_arg_matches(&matches)?))
            .and_then(|cli| {
                if !cli.command.is_member() {
                    forget_secrets();
                }
                interrupt::install()?;
                cli.command.run(&xshell::Shell::new()?)
            }),
    )
}
