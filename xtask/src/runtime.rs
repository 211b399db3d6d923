//! What every binary of the workspace (`xtask`, `xtask-publish`, `xtask-bench`) does around its
//! command: keeps secrets off the command line and out of children's environments, and turns
//! the command's result into one printed error and an exit code.

use std::ffi::OsString;

use anyhow::bail;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

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

/// The command line `args` parsed as `C`, refusing any of the secret arguments `secret_ids`
/// given as a flag ([`refuse_secrets_on_argv`]). A command line clap does not take, `--help`
/// and `--version` end the process as clap ends it.
pub fn parse_args<C: CommandFactory + FromArgMatches>(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    secret_ids: &[&str],
) -> anyhow::Result<C> {
    let matches = C::command()
        .try_get_matches_from(args)
        .unwrap_or_else(|e| e.exit());
    refuse_secrets_on_argv(&matches, secret_ids)?;
    Ok(C::from_arg_matches(&matches)?)
}

/// Refuses any of the secret arguments `ids` (clap argument ids, e.g. `github_token`) given as
/// a flag, in any subcommand: secrets come from the environment only, never the command line,
/// where any local user can read them in the process list.
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
