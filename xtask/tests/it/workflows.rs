//! The GitHub workflows pass actionlint (with shellcheck on `run:` scripts) and zizmor, and pin
//! every action by commit. The linters come from scripts/install-deps.sh --test; without them
//! this test skips, saying so, except in CI (CI=true), where that is a failure. And what the
//! release workflows promise, read from their YAML: the hourly check's schedule and bound, one
//! publisher per version, the daily audit with the project's key, and no write permission.

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
    assert_eq!(files.len(), 4, "{files:?}");
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
            // This repository's own workflow at the running commit: pinned by what it is.
            if reference.starts_with("$/") {
                continue;
            }
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

/// A workflow as data (PyYAML, as in the other suites).
fn workflow(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(workflows_dir().join(name)).unwrap();
    crate::support::parse_yaml(&text)
}

/// The `on:` block: YAML 1.1 (PyYAML) reads the key `on` as `true`.
fn triggers(doc: &serde_json::Value) -> &serde_json::Value {
    doc.get("on")
        .or_else(|| doc.get("true"))
        .expect("a workflow has triggers")
}

/// The one schedule's cron fields.
fn cron(doc: &serde_json::Value) -> Vec<String> {
    let schedule = triggers(doc)["schedule"].as_array().expect("a schedule");
    assert_eq!(schedule.len(), 1, "{schedule:?}");
    let fields: Vec<String> = schedule[0]["cron"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(fields.len(), 5, "{fields:?}");
    fields
}

/// Every permission a workflow grants, top level and per job, as (where, scope, level).
fn grants(doc: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    let mut add = |at: String, permissions: &serde_json::Value| match permissions {
        serde_json::Value::Object(scopes) => {
            for (scope, level) in scopes {
                found.push((
                    at.clone(),
                    scope.clone(),
                    level.as_str().unwrap().to_string(),
                ));
            }
        }
        serde_json::Value::String(all) => found.push((at, "*".into(), all.clone())),
        serde_json::Value::Null => {}
        other => panic!("{at}: permissions {other}"),
    };
    add("workflow".into(), &doc["permissions"]);
    for (job, body) in doc["jobs"].as_object().unwrap() {
        add(job.clone(), &body["permissions"]);
    }
    found
}

/// The `run:` scripts of a job, joined.
fn scripts(job: &serde_json::Value) -> String {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|step| step["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_hourly_check_builds_a_bounded_number_at_a_time_and_writes_nothing() {
    let check = workflow("check-new-releases.yml");
    let fields = cron(&check);
    let minute: u32 = fields[0].parse().expect("a fixed minute");
    assert!(
        minute < 60 && fields[1..] == ["*", "*", "*", "*"],
        "not hourly: {fields:?}"
    );

    // Nothing gets write permission: not the check, not the builds it calls (whose R2 keys are
    // secrets of their environment), and no secret is passed on.
    assert_eq!(check["permissions"], serde_json::json!({}));
    for (at, scope, level) in grants(&check) {
        assert!(
            level == "read" || level == "none",
            "{at} gets {scope}: {level}"
        );
    }
    for (job, body) in check["jobs"].as_object().unwrap() {
        assert!(body.get("secrets").is_none(), "{job} passes secrets on");
    }

    // One run at a time, never cancelled half-way: a run still building holds the next back.
    assert_eq!(check["concurrency"]["cancel-in-progress"], false);
    assert!(check["concurrency"]["group"].is_string());

    // What is missing, as JSON, at most so many a run; built by the publishing workflow, a
    // bounded number at once, one release per matrix leg.
    let script = scripts(&check["jobs"]["check"]);
    assert!(script.contains("cargo xtask missing --json"), "{script}");
    let cap: usize = script
        .split(".missing[:")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no cap on the matrix in:\n{script}"));
    let build = &check["jobs"]["build"];
    assert_eq!(build["uses"], "$/.github/workflows/build-and-publish.yml");
    assert_eq!(build["with"]["version"], "${{ matrix.version }}");
    assert_eq!(
        build["strategy"]["matrix"],
        "${{ fromJSON(needs.check.outputs.matrix) }}"
    );
    assert_eq!(build["strategy"]["fail-fast"], false);
    let parallel = build["strategy"]["max-parallel"]
        .as_u64()
        .expect("max-parallel");
    assert!((1..=4).contains(&parallel), "max-parallel {parallel}");
    // GitHub allows 256 legs; the cap keeps a run within about an hour of builds.
    assert!(
        cap > 0 && cap <= 6 * parallel as usize,
        "cap {cap} for {parallel} at a time"
    );
}

#[test]
fn one_publisher_per_version_whoever_starts_it() {
    let publish = workflow("build-and-publish.yml");
    let on = triggers(&publish);
    assert_eq!(on["workflow_call"]["inputs"]["version"]["required"], true);
    assert!(on.get("workflow_dispatch").is_some() && on.get("release").is_some());
    // No workflow-wide group (versions publish side by side), one per version on the job
    // holding the keys, with the version checked before it names the group.
    assert!(publish.get("concurrency").is_none());
    let release = &publish["jobs"]["release"];
    assert_eq!(release["environment"], "release");
    assert_eq!(
        release["concurrency"]["group"],
        "publish-alloy-${{ needs.version.outputs.version }}"
    );
    assert_eq!(release["concurrency"]["cancel-in-progress"], false);
    assert!(
        scripts(&publish["jobs"]["version"]).contains(r"=~ ^[0-9]+\.[0-9]+\.[0-9]+(-rc\.[0-9]+)?$")
    );
    for (at, scope, level) in grants(&publish) {
        assert!(
            level == "read" || level == "none",
            "{at} gets {scope}: {level}"
        );
    }
}

#[test]
fn the_daily_audit_verifies_the_whole_bucket_with_the_project_key() {
    let audit = workflow("audit.yml");
    let fields = cron(&audit);
    assert!(
        fields[0].parse::<u32>().is_ok()
            && fields[1].parse::<u32>().is_ok()
            && fields[2..] == ["*", "*", "*"],
        "not daily: {fields:?}"
    );
    for (at, scope, level) in grants(&audit) {
        assert!(
            level == "read" || level == "none",
            "{at} gets {scope}: {level}"
        );
    }
    let key = audit["env"]["SIGNING_KEY"].as_str().unwrap();
    assert_eq!(key, "keys/alloy-sysext-signing-key.asc");
    let script = scripts(&audit["jobs"]["audit"]);
    assert!(
        script.contains(r#"cargo xtask verify --all --keyring "$SIGNING_KEY""#),
        "{script}"
    );
    // Without the key in the repository it still audits, then fails saying so.
    assert!(
        script.contains("exit 1") && script.contains("signing key"),
        "{script}"
    );

    // The key's place is documented, and nothing private is ever kept there.
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys");
    let readme = std::fs::read_to_string(keys.join("README.md")).unwrap();
    assert!(readme.contains("alloy-sysext-signing-key.asc"), "{readme}");
    for entry in std::fs::read_dir(&keys).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        assert!(
            !text.contains("PRIVATE KEY BLOCK"),
            "{} holds a private key",
            path.display()
        );
    }
}
