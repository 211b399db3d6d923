//! A real `xtask build` signalled while it packs: its packer stops, its work directory goes,
//! it exits 128 + signal. Work directories belong to whoever holds their lock, not to a pid;
//! an image left without its checksum is noticed and replaced.

mod support;

use std::os::unix::process::CommandExt;
use std::process::Command;

use support::fixture::Release;
use support::mirror::Mirror;
use support::{
    path_with_first, processes_with_env, send_signal, wait_for_file, wait_with_deadline,
    write_script, KillGroupOnDrop, Workspace,
};

const VERSION: &str = "1.10.2";
const IMAGE: &str = "alloy-1.10.2-amd64.raw";
const CHECKSUM: &str = "alloy-1.10.2-amd64.raw.sha256";

/// Signals a `format` build once its (wrapped, sleeping) `tool` runs (a packer, or ext4's
/// e2fsck, which runs while the image is hashed), and checks that
/// nothing of it is left. `group`: signal the whole process group, as a terminal's Ctrl-C
/// does; otherwise xtask alone, as `kill` or a service manager does.
fn interrupt_a_build_while_it_packs(
    format: &str,
    tool: &str,
    signal: &str,
    group: bool,
    expected_code: i32,
) {
    let mirror = Mirror::start();
    mirror.add_release(&Release::new(VERSION));
    let ws = Workspace::new();
    let wrappers = ws.tmp.path().join("bin");
    let packing = ws.tmp.path().join("packing");
    // A packer that takes its time (and starts a child of its own), so the signal finds it busy.
    write_script(
        &wrappers,
        tool,
        &format!(
            "#!/bin/sh\ntouch '{}'\nsleep 60\nexec '{}' \"$@\"\n",
            packing.display(),
            support::tool(tool).display()
        ),
    );
    // Every process of this build inherits the mark, whoever its parent is by now.
    let mark = format!("ALLOY_SYSEXT_TEST_RUN={}", ws.tmp.path().display());
    let (mark_name, mark_value) = mark.split_once('=').unwrap();
    let mut command = ws.command(&mirror.base_url);
    command
        .args(["build", VERSION, "--format", format, "--out-dir"])
        .arg(&ws.out)
        .env("PATH", path_with_first(&wrappers))
        .env(mark_name, mark_value)
        // Secrets a build never needs: no tool it runs may see them.
        .env("R2_SECRET_ACCESS_KEY", "r2-secret-for-the-test")
        .env("SYSEXT_GPG_KEY", "-----BEGIN PGP PRIVATE KEY BLOCK-----")
        .env("AWS_ACCESS_KEY_ID", "aws-key-for-the-test")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut xtask = command.spawn().unwrap();
    let pid = xtask.id() as i32;
    let _group = KillGroupOnDrop(pid);

    wait_for_file(&packing, 120, "packing");
    assert!(
        ws.out_names()
            .iter()
            .any(|n| n.starts_with(".alloy-sysext-tmp-")),
        "no work directory while packing: {:?}",
        ws.out_names()
    );
    let packer = processes_with_env(&mark);
    assert!(packer.len() >= 2, "packer not running: {packer:?}");
    // xtask's own /proc environ is what it was started with; what it passes on is what counts.
    for (pid, command) in packer.iter().filter(|(p, _)| *p != pid) {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        for secret in [
            "R2_SECRET_ACCESS_KEY",
            "SYSEXT_GPG_KEY",
            "AWS_ACCESS_KEY_ID",
        ] {
            assert!(!environ.contains(secret), "{secret} reached {command}");
        }
    }
    send_signal(signal, if group { -pid } else { pid });
    let status = wait_with_deadline(&mut xtask, 30);

    assert_eq!(status.code(), Some(expected_code), "{status}");
    let left = processes_with_env(&mark);
    assert!(left.is_empty(), "processes left running: {left:?}");
    assert_eq!(ws.out_names(), Vec::<String>::new(), "left in the out dir");
}

#[test]
fn sigterm_to_xtask_alone_stops_the_packer_and_removes_the_work_dir() {
    interrupt_a_build_while_it_packs("squashfs", "mksquashfs", "TERM", false, 143);
    interrupt_a_build_while_it_packs("erofs", "mkfs.erofs", "TERM", false, 143);
    interrupt_a_build_while_it_packs("ext4", "e2fsck", "TERM", false, 143);
}

#[test]
fn ctrl_c_stops_the_build_and_removes_the_work_dir() {
    interrupt_a_build_while_it_packs("squashfs", "mksquashfs", "INT", true, 130);
}

/// Holds `path`'s lock in a process of its own, as a build in another PID namespace would;
/// the lock goes when the returned child is killed.
fn hold_lock(path: &std::path::Path) -> std::process::Child {
    let ready = path.with_extension("locked");
    let child = Command::new("sh")
        .arg("-c")
        .arg("exec 9<\"$0\" && flock --exclusive 9 && touch \"$1\" && exec sleep 60")
        .arg(path)
        .arg(&ready)
        .spawn()
        .unwrap();
    wait_for_file(&ready, 10, "flock");
    std::fs::remove_file(&ready).unwrap();
    child
}

#[test]
fn a_build_keeps_work_dirs_whose_lock_is_held_and_removes_the_others() {
    let mirror = Mirror::start();
    mirror.add_release(&Release::new(VERSION));
    let ws = Workspace::new();
    std::fs::create_dir_all(&ws.out).unwrap();
    // A pid that cannot run here, but a live lock: a build in another PID namespace.
    let live = ws.out.join(".alloy-sysext-tmp-4294967294-live");
    // A pid that always runs here (init), but no lock: a killed build's.
    let dead = ws.out.join(".alloy-sysext-tmp-1-dead");
    for dir in [&live, &dead] {
        std::fs::create_dir(dir).unwrap();
        std::fs::write(dir.join(IMAGE), "half an image").unwrap();
    }
    let mut holder = hold_lock(&live);

    let run = ws.build(&mirror.base_url, VERSION, &["--format", "squashfs"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    run.assert_ok();
    assert_eq!(
        ws.out_names(),
        [".alloy-sysext-tmp-4294967294-live", IMAGE, CHECKSUM]
    );
    assert!(live.join(IMAGE).is_file());
}

#[test]
fn an_image_left_without_its_checksum_is_noticed_and_replaced() {
    let mirror = Mirror::start();
    mirror.add_release(&Release::new(VERSION));
    let ws = Workspace::new();
    std::fs::create_dir_all(&ws.out).unwrap();
    // What a kill between the two renames used to leave, at worst: a new image, no checksum.
    std::fs::write(ws.image(IMAGE), "an image whose checksum never arrived").unwrap();

    let run = ws.build(&mirror.base_url, VERSION, &["--format", "squashfs"]);
    run.assert_ok();
    assert!(
        run.stderr
            .contains(&format!("replacing {IMAGE}: it has no {CHECKSUM}")),
        "{}",
        run.stderr
    );
    assert_eq!(ws.out_names(), [IMAGE, CHECKSUM]);
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg(CHECKSUM)
        .current_dir(&ws.out)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}
