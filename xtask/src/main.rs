//! `cargo xtask`: parses the command line, makes one `Shell`, and dispatches. Nothing else.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use xtask::cli::{refuse_secrets_on_argv, Cli};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let result = refuse_secrets_on_argv(&matches)
        .and_then(|()| Ok(Cli::from_arg_matches(&matches)?))
        .and_then(|cli| cli.command.run(&xshell::Shell::new()?));
    match result {
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
