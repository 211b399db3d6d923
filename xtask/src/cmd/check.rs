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

/// The packages with end-to-end suites: each has one integration-test binary, `it`, whose
/// modules (`tests/it/<suite>.rs`) are the suites.
const PACKAGES: [&str; 3] = ["xtask", "publish", "bench"];

/// One end-to-end suite `check` leaves to the test command.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Suite {
    package: &'static str,
    name: String,
    /// It has tests that need root (it calls `require_root`).
    needs_root: bool,
}

/// Every suite of the workspace: the modules of each package's `tests/it/`, but its `main.rs`
/// and `support` modules.
fn suites(root: &Path) -> Vec<Suite> {
    let mut suites = Vec::new();
    for package in PACKAGES {
        for file in list(&root.join(package).join("tests/it"), &["rs"]) {
            let name = file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name == "main" || name == "support" {
                continue;
            }
            let needs_root = std::fs::read_to_string(&file)
                .map(|text| text.contains("require_root("))
                .unwrap_or(false);
            suites.push(Suite {
                package,
                name,
                needs_root,
            });
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

/// Where the checks run, and with which linters.
struct Checks<'a> {
    sh: &'a Shell,
    root: PathBuf,
    venv: PathBuf,
}

impl Check {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let root = crate::project_root();
        let _cwd = sh.push_dir(&root);
        let venv = self
            .home
            .map(|h| h.join(".cache/alloy-sysext-tests/venv/bin"))
            .unwrap_or_default();
        let checks = Checks { sh, root, venv };
        let outcomes: Vec<Outcome> = Checks::all()
            .into_iter()
            .map(|(name, check)| timed(name, || check(&checks)))
            .collect();

        println!();
        for outcome in &outcomes {
            let result = match &outcome.result {
                Ok(()) => "ok".to_string(),
                Err(why) => format!("FAILED: {why}"),
            };
            println!("{:<40} {:>6.1}s  {result}", outcome.name, outcome.seconds);
        }
        println!("\n{}", not_run_here(&suites(&checks.root)));
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

/// Runs one check, announcing it and timing it.
fn timed(name: &'static str, check: impl FnOnce() -> Result<(), String>) -> Outcome {
    step(name);
    let started = Instant::now();
    let result = check();
    if let Err(why) = &result {
        detail(format!("FAILED: {why}"));
    }
    Outcome {
        name,
        seconds: started.elapsed().as_secs_f64(),
        result,
    }
}

fn run(command: xshell::Cmd) -> Result<(), String> {
    command.run().map_err(|e| e.to_string())
}

/// One check: `Err` says what failed.
type CheckFn<'a> = fn(&Checks<'a>) -> Result<(), String>;

impl<'a> Checks<'a> {
    /// Every check, named, in the order they run.
    fn all() -> [(&'static str, CheckFn<'a>); 5] {
        [
            ("cargo fmt --check", Checks::fmt),
            ("cargo clippy -D warnings", Checks::clippy),
            ("unit tests", Checks::unit_tests),
            ("workflow linters (actionlint, zizmor)", Checks::workflows),
            ("shellcheck", Checks::shellcheck),
        ]
    }

    fn fmt(&self) -> Result<(), String> {
        let sh = self.sh;
        run(cmd!(sh, "cargo fmt --all -- --check")).map_err(|e| {
            format!("{e} (run `cargo fmt --all`; rustfmt: `rustup component add rustfmt`)")
        })
    }

    fn clippy(&self) -> Result<(), String> {
        let sh = self.sh;
        run(cmd!(
            sh,
            "cargo clippy --workspace --all-targets --locked -- -D warnings"
        ))
    }

    fn unit_tests(&self) -> Result<(), String> {
        let sh = self.sh;
        run(cmd!(sh, "cargo test --workspace --locked --lib --bins"))
    }

    fn workflows(&self) -> Result<(), String> {
        let sh = self.sh;
        let actionlint = find(sh, &self.venv, "actionlint")?;
        let zizmor = find(sh, &self.venv, "zizmor")?;
        let workflows: Vec<PathBuf> = list(&self.root.join(".github/workflows"), &["yml", "yaml"]);
        run(cmd!(sh, "{actionlint} -no-color {workflows...}"))?;
        run(cmd!(
            sh,
            "{zizmor} --offline --no-progress .github/workflows"
        ))
    }

    /// The shell scripts, and the shell inside the units we generate, each checked as the sh
    /// script it is.
    fn shellcheck(&self) -> Result<(), String> {
        let sh = self.sh;
        let shellcheck = find(sh, &self.venv, "shellcheck")?;
        let mut scripts = list(&self.root.join("scripts"), &["sh"]);
        scripts.push(self.root.join(".ci/run"));
        scripts.push(self.root.join("bench/src/plain-pipeline.sh"));
        // The script hosts run to update (bash, as its first line says).
        scripts.push(self.root.join("xtask/src/host/alloy-sysupdate.sh"));
        run(cmd!(sh, "{shellcheck} {scripts...}"))?;
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
    }
}

/// What `check` leaves to the test command, and how to run it.
fn not_run_here(suites: &[Suite]) -> String {
    let (root_only, others): (Vec<&Suite>, Vec<&Suite>) =
        suites.iter().partition(|suite| suite.needs_root);
    let names = |suites: &[&Suite]| {
        suites
            .iter()
            .map(|s| format!("{}::{}", s.package, s.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let filters: String = root_only
        .iter()
        .filter(|s| s.package == "xtask")
        .map(|s| format!(" {}::", s.name))
        .collect();
    format!(
        "not run here (end to end, minutes): {}; and, with tests that need root, {}. Run them \
         all with `bash scripts/test.sh`, or the root-only ones with \
         `sudo -E cargo test -p xtask --test it --{filters}`.",
        names(&others),
        names(&root_only)
    )
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
        let has = |package: &str, name: &str, needs_root: bool| {
            suites
                .iter()
                .any(|s| s.package == package && s.name == name && s.needs_root == needs_root)
        };
        assert!(has("xtask", "boot", true), "{suites:?}");
        assert!(has("xtask", "merge", true), "{suites:?}");
        assert!(has("xtask", "formats", false), "{suites:?}");
        assert!(
            suites
                .iter()
                .any(|s| s.package == "publish" && !s.needs_root),
            "{suites:?}"
        );
        let said = not_run_here(&suites);
        assert!(said.contains(" boot::"), "{said}");
        assert!(said.contains("xtask::formats"), "{said}");
    }
}
