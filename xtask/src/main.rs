//! `cargo xtask`: parses the command line, makes one `Shell`, and dispatches; a signal ends it
//! through [`interrupt`], which cleans up first.

use std::process::ExitCode;

use xtask::cmd::{Cli, SECRET_ARGS};
use xtask::runtime::{exit_code, forget_secrets, parse_args};
use xtask::util::interrupt;

fn main() -> ExitCode {
    exit_code(
        parse_args::<Cli>(std::env::args_os(), &SECRET_ARGS).and_then(|cli| {
            if !cli.command.is_member() {
                forget_secrets();
            }
            interrupt::install()?;
            cli.command.run(&xshell::Shell::new()?)
        }),
    )
}
