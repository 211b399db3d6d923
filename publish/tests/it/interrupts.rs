//! Signals during a signed publish and during verify: no key, agent, secret or download is
//! left behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use xtask_testkit::fixture::Release;
use xtask_testkit::gpg::TestKey;
use xtask_testkit::mirror::Mirror;
use xtask_testkit::process::{
    environ, path_with_first, processes_mentioning, processes_with_env, slow_wrapper, write_script,
    Group, Mark,
};
use xtask_testkit::s3::{S3, SECRET_KEY};
use xtask_testkit::{tool, Run, Workspace};

use crate::support::{fabricate, publish_command, XTASK};

/// Signals a signed publish while gpg signs (a wrapper that sleeps before the real gpg, first
/// in PATH), with the key imported and its agent running, then looks for what could be left:
/// the private GNUPGHOME in TMPDIR, gpg or gpg-agent processes, the R2 secret in their
/// environment. `group`: the whole process group, as a terminal's Ctrl-C; else publish alone.
fn interrupt_a_publish_while_it_signs(signal: &str, group: bool, expected_code: i32) {
    let s3 = S3::start();
    let key = TestKey::new("interrupted");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dist");
    fabricate(&dir, "1.10.2", "amd64", 4096, 1);
    let private_tmp = tmp.path().join("tmp");
    std::fs::create_dir(&private_tmp).unwrap();
    let bin = tmp.path().join("bin");
    let signing = tmp.path().join("signing");
    // gpg gets no variables of ours (not even this path), so the wrapper holds it literally.
    write_script(
        &bin,
        "gpg",
        &format!(
            "#!/bin/sh\ncase \" $* \" in *' --detach-sign '*) echo $$ > '{0}.new'; mv '{0}.new' '{0}'; sleep 60;; esac\nexec '{1}' \"$@\"\n",
            signing.display(),
            tool("gpg").display()
        ),
    );
    let mut command = publish_command(&s3.endpoint, &dir, &[]);
    command
        .env("SYSEXT_GPG_KEY", &key.secret)
        .env("TMPDIR", &private_tmp)
        .env("PATH", path_with_first(&bin));
    let mut publish = Group::spawn(&mut command);
    publish.until_file(&signing, 60, "signing");
    let gpg_pid: i32 = std::fs::read_to_string(&signing)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let homes: Vec<PathBuf> = std::fs::read_dir(&private_tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("alloy-sysext-gnupg.")
        })
        .collect();
    assert_eq!(homes.len(), 1, "{homes:?}");
    let home = &homes[0];
    // The key is on disk and an agent holds it: what the signal must not leave behind.
    assert!(
        std::fs::read_dir(home.join("private-keys-v1.d"))
            .unwrap()
            .count()
            > 0,
        "the key is not imported yet"
    );
    let agents: Vec<(i32, String)> = processes_mentioning("gpg-agent")
        .into_iter()
        .filter(|(p, _)| {
            processes_with_env(&format!("GNUPGHOME={}", home.display()))
                .iter()
                .any(|(q, _)| q == p)
        })
        .collect();
    assert!(
        !agents.is_empty(),
        "no gpg-agent runs for {}",
        home.display()
    );
    // Neither gpg nor its agent has any variable but GNUPGHOME and PATH.
    for pid in std::iter::once(gpg_pid).chain(agents.iter().map(|(p, _)| *p)) {
        let environ = environ(pid);
        for secret in [
            "R2_SECRET_ACCESS_KEY",
            SECRET_KEY,
            "SYSEXT_GPG_KEY",
            "R2_ACCESS_KEY_ID",
        ] {
            assert!(
                !environ.contains(secret),
                "{secret} in the environment of {pid}"
            );
        }
        let mut names: Vec<&str> = environ
            .split('\0')
            .filter_map(|v| v.split_once('=').map(|(n, _)| n))
            .collect();
        names.sort();
        names.retain(|n| *n != "PWD"); // sh sets it
        assert_eq!(names, ["GNUPGHOME", "PATH"], "environment of {pid}");
    }

    publish.signal(signal, group);
    let status = publish.wait(30);
    let log = publish.log();
    assert_eq!(status.code(), Some(expected_code), "{status}\n{log}");
    assert_empty(&private_tmp);
    let running = processes_mentioning(&home.display().to_string());
    assert!(running.is_empty(), "still running: {running:?}");
    let running = processes_with_env(&format!("GNUPGHOME={}", home.display()));
    assert!(running.is_empty(), "still running: {running:?}");
    assert!(!log.contains(SECRET_KEY), "{log}");
    assert_eq!(
        s3.keys(),
        Vec::<String>::new(),
        "uploaded despite the signal"
    );
}

#[test]
fn sigterm_during_signing_leaves_no_key_agent_or_secret_behind() {
    interrupt_a_publish_while_it_signs("TERM", false, 143);
}

#[test]
fn ctrl_c_during_signing_leaves_no_key_agent_or_secret_behind() {
    interrupt_a_publish_while_it_signs("INT", true, 130);
}

/// Inspection runs no tool any more (it reads images itself, in milliseconds); the signature
/// check still does: SIGTERM while gpgv checks `SHA256SUMS.gpg`, with the private GNUPGHOME
/// in TMPDIR.
#[test]
fn sigterm_during_verify_stops_the_signature_check_and_leaves_nothing_in_tmpdir() {
    let s3 = S3::start();
    let key = TestKey::new("verified");
    let mirror = Mirror::with_release(&Release::new("1.10.3"));
    let ws = Workspace::new(&*XTASK);
    ws.build(&mirror.base_url, "1.10.3", &["--format", "squashfs"])
        .assert_ok();
    let mut signed = publish_command(&s3.endpoint, &ws.out, &["1.10.3"]);
    signed.env("SYSEXT_GPG_KEY", &key.secret);
    Run::from_command(&mut signed).assert_ok();

    let tmp = tempfile::tempdir().unwrap();
    let private_tmp = tmp.path().join("tmp");
    std::fs::create_dir(&private_tmp).unwrap();
    let bin = tmp.path().join("bin");
    let checking = tmp.path().join("checking");
    slow_wrapper(&bin, "gpgv", &checking);
    let mark = Mark::new(tmp.path());
    let mut command = Command::new(&*XTASK);
    mark.on(&mut command)
        .arg("verify")
        .arg("--base-url")
        .arg(&s3.public_url)
        .arg("--keyring")
        .arg(&key.public)
        .env_remove("SYSEXT_BASE_URL")
        .env("TMPDIR", &private_tmp)
        .env("PATH", path_with_first(&bin));
    let mut verify = Group::spawn(&mut command);
    verify.until_file(&checking, 60, "the signature check");
    assert!(
        std::fs::read_dir(&private_tmp).unwrap().count() > 0,
        "verify checks in a GNUPGHOME in TMPDIR: nothing there to clean up?"
    );
    verify.signal("TERM", false);
    let status = verify.wait(30);

    assert_eq!(status.code(), Some(143), "{status}");
    assert_empty(&private_tmp);
    let running = mark.processes();
    assert!(running.is_empty(), "still running: {running:?}");
}

/// Nothing is left in `dir` (a private TMPDIR).
fn assert_empty(dir: &Path) {
    let left: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}
