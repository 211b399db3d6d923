//! The GitHub workflows pass actionlint (with shellcheck on `run:` scripts) and zizmor, and pin
//! every action by commit. The linters come from scripts/install-deps.sh --test; without them
//! this test skips, saying so, except in CI (CI=true), where that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workflows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join(".github/workflows")
}

fn workflows() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workflows_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The linter from the test venv, else from PATH; None (skip) outside CI when missing.
fn linter(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let venv = home.join(".cache/alloy-sysext-tests/venv/bin").join(name);
    let candidates = std::iter::once(venv).chain(
        std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(name))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    );
    for candidate in candidates {
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let reason = format!("{name} is not installed: run bash scripts/install-deps.sh --test");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason}");
    }
    eprintln!("SKIPPED: {reason}");
    None
}

fn run(tool: &Path, args: &[&str], files: &[PathBuf]) -> (bool, String) {
    let output = Command::new(tool)
        .args(args)
        .args(files)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A workflow with the mistakes both linters exist for: an unpinned action, and an event field
/// expanded into a shell script (template injection), which also breaks shellcheck.
const BAD_WORKFLOW: &str = r#"name: bad
on:
  pull_request:
jobs:
  bad:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}" && ls $UNQUOTED
"#;

fn actionlint_args() -> Vec<String> {
    let mut args = vec!["-no-color".to_string()];
    match which("shellcheck") {
        Some(shellcheck) => args.push(format!("-shellcheck={}", shellcheck.display())),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("shellcheck is not installed: run bash scripts/install-deps.sh --test")
        }
        None => eprintln!("note: shellcheck missing, actionlint will not check run: scripts"),
    }
    args
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[test]
fn workflows_pass_actionlint() {
    let Some(actionlint) = linter("actionlint") else {
        return;
    };
    let args = actionlint_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let files = workflows();
    assert_eq!(files.len(), 3, "{files:?}");
    let (ok, text) = run(&actionlint, &args, &files);
    assert!(ok, "actionlint found problems:\n{text}");

    // And it does find problems: a bad workflow fails.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        BAD_WORKFLOW.replace("ubuntu-24.04", "ubuntu-nonexistent"),
    )
    .unwrap();
    let (ok, text) = run(&actionlint, &args, &[bad]);
    assert!(!ok, "actionlint accepted a bad workflow:\n{text}");
    assert!(text.contains("ubuntu-nonexistent"), "{text}");
}

#[test]
fn workflows_pass_zizmor() {
    let Some(zizmor) = linter("zizmor") else {
        return;
    };
    let dir = workflows_dir();
    let (ok, text) = run(
        &zizmor,
        &["--offline", "--persona", "auditor", "--no-progress"],
        &[dir],
    );
    assert!(ok, "zizmor found problems:\n{text}");

    // And it does find problems: the template injection in a bad workflow.
    let bad_dir = tempfile::tempdir().unwrap();
    let workflows = bad_dir.path().join(".github/workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    std::fs::write(workflows.join("bad.yml"), BAD_WORKFLOW).unwrap();
    let (ok, text) = run(&zizmor, &["--offline", "--no-progress"], &[workflows]);
    assert!(!ok, "zizmor accepted a bad workflow:\n{text}");
    assert!(text.contains("template-injection"), "{text}");
}

#[test]
fn every_action_is_pinned_by_full_commit() {
    let mut seen = 0;
    for file in workflows() {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let Some(uses) = line
                .trim()
                .strip_prefix("- uses:")
                .or(line.trim().strip_prefix("uses:"))
            else {
                continue;
            };
            let reference = uses.split('#').next().unwrap().trim();
            let (action, pin) = reference
                .rsplit_once('@')
                .unwrap_or_else(|| panic!("{}: {reference} has no @", file.display()));
            assert!(
                pin.len() == 40 && pin.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}: {action} is pinned to {pin:?}, not a full commit SHA",
                file.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 3, "found only {seen} uses: lines");
}
