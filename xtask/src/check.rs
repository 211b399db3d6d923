//! `cargo xtask check`: what a contributor runs before pushing, in one command: formatting,
//! clippy, the unit tests, the workflow linters, and shellcheck on every shell script and every
//! shell snippet the generated units carry. Fast when warm; the end-to-end suites (several of
//! which need root) stay with the README's test command.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use xshell::{cmd, Shell};

use crate::util::progress::{detail, step};

/// Run the local checks: cargo fmt --check, clippy -D warnings, the unit tests, actionlint and
/// zizmor on the workflows, shellcheck on scripts/ and on the shell in generated units
#[derive(Args, Debug)]
pub struct Check {
    /// The directory of the workflow linters' virtualenv (made by install-deps.sh --test)
    #[arg(long, env = "HOME", hide = true)]
    pub home: Option<PathBuf>,
}

/// The end-to-end suites `check` leaves to the test command: every integration test file of
/// the workspace, and whether it has tests that need root (it calls `require_root`).
fn suites(root: &Path) -> Vec<(String, bool)> {
    let mut suites = Vec::new();
    for dir in ["xtask/tests", "publish/tests", "bench/tests"] {
        for file in list(&root.join(dir), &["rs"]) {
            let name = file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let needs_root = std::fs::read_to_string(&file)
                .map(|text| text.contains("require_root("))
                .unwrap_or(false);
            suites.push((name, needs_root));
        }
    }
    suites
}

/// One check's outcome.
struct Outcome {
    name: &'static str,
    seconds: f64,
    result: Result<(), String>,
}

impl Check {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let root = crate::project_root();
        let _cwd = sh.push_dir(&root);
        let venv = self
            .home
            .map(|h| h.join(".cache/alloy-sysext-tests/venv/bin"))
            .unwrap_or_default();
        let mut outcomes = Vec::new();
        let mut time = |name: &'static str, work: &dyn Fn() -> Result<(), String>| {
            step(name);
            let started = Instant::now();
            let result = work();
            if let Err(why) = &result {
                detail(format!("FAILED: {why}"));
            }
            outcomes.push(Outcome {
                name,
                seconds: started.elapsed().as_secs_f64(),
                result,
            });
        };
        let run = |command: xshell::Cmd| command.run().map_err(|e| e.to_string());
        time("cargo fmt --check", &|| {
            run(cmd!(sh, "cargo fmt --all -- --check")).map_err(|e| {
                format!("{e} (run `cargo fmt --all`; rustfmt: `rustup component add rustfmt`)")
            })
        });
        time("cargo clippy -D warnings", &|| {
            run(cmd!(
                sh,
                "cargo clippy --workspace --all-targets --locked -- -D warnings"
            ))
        });
        time("unit tests", &|| {
            run(cmd!(sh, "cargo test --workspace --locked --lib --bins"))
        });
        time("workflow linters (actionlint, zizmor)", &|| {
            let actionlint = find(sh, &venv, "actionlint")?;
            let zizmor = find(sh, &venv, "zizmor")?;
            let workflows: Vec<PathBuf> = list(&root.join(".github/workflows"), &["yml", "yaml"]);
            run(cmd!(sh, "{actionlint} -no-color {workflows...}"))?;
            run(cmd!(
                sh,
                "{zizmor} --offline --no-progress .github/workflows"
            ))
        });
        time("shellcheck", &|| {
            let shellcheck = find(sh, &venv, "shellcheck")?;
            let mut scripts = list(&root.join("scripts"), &["sh"]);
            scripts.push(root.join(".ci/run"));
            scripts.push(root.join("bench/src/plain-pipeline.sh"));
            run(cmd!(sh, "{shellcheck} {scripts...}"))?;
            // The shell inside the units we generate, each checked as the sh script it is.
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let mut snippets = Vec::new();
            for (i, (unit, body)) in crate::host::shell_snippets().into_iter().enumerate() {
                let path = dir
                    .path()
                    .join(format!("{i}-{}.sh", unit.replace('/', "_")));
                std::fs::write(&path, format!("#!/bin/sh\n# from {unit}\n{body}\n"))
                    .map_err(|e| e.to_string())?;
                snippets.push(path);
            }
            if snippets.is_empty() {
                return Err("found no shell snippets in the generated units".into());
            }
            run(cmd!(sh, "{shellcheck} --shell=sh {snippets...}"))
        });

        println!();
        for outcome in &outcomes {
            let result = match &outcome.result {
                Ok(()) => "ok".to_string(),
                Err(why) => format!("FAILED: {why}"),
            };
            println!("{:<40} {:>6.1}s  {result}", outcome.name, outcome.seconds);
        }
        let (root_only, others): (Vec<_>, Vec<_>) =
            suites(&root).into_iter().partition(|(_, root)| *root);
        let names = |suites: &[(String, bool)]| {
            suites
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let root_args: String = root_only
            .iter()
            .map(|(n, _)| format!(" --test {n}"))
            .collect();
        println!(
            "\nnot run here (end to end, minutes): {}; and, with tests that need root, {}. Run them \
             all with `bash scripts/test.sh`, or the root-only ones with \
             `sudo -E cargo test -p xtask{root_args}`.",
            names(&others),
            names(&root_only)
        );
        let failed: Vec<&str> = outcomes
            .iter()
            .filter(|o| o.result.is_err())
            .map(|o| o.name)
            .collect();
        if !failed.is_empty() {
            bail!("{} check(s) failed: {}", failed.len(), failed.join(", "));
        }
        Ok(())
    }
}

/// A linter from the test virtualenv, else from PATH; its absence names what installs it.
fn find(sh: &Shell, venv: &Path, name: &str) -> Result<PathBuf, String> {
    let in_venv = venv.join(name);
    if in_venv.is_file() {
        return Ok(in_venv);
    }
    let found = sh
        .var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    found.ok_or_else(|| {
        let package = if name == "shellcheck" {
            "the shellcheck package (apt-get install shellcheck)"
        } else {
            "the workflow linters"
        };
        format!("{name} is not installed: `bash scripts/install-deps.sh --test` installs {package}")
    })
}

/// The files in `dir` with one of `extensions`, sorted.
fn list(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| extensions.contains(&e))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_is_named_and_the_root_only_ones_are_told_apart() {
        let suites = suites(&crate::project_root());
        let has = |name: &str, root: bool| suites.contains(&(name.to_string(), root));
        assert!(has("boot", true), "{suites:?}");
        assert!(has("merge", true), "{suites:?}");
        assert!(has("formats", false), "{suites:?}");
        assert!(has("publish", false), "{suites:?}");
    }
}
