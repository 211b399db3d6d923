//! A real `xtask build` signalled while it packs: its packer stops, its work directory goes,
//! it exits 128 + signal. Work directories belong to whoever holds their lock, not to a pid;
//! an image left without its checksum is noticed and replaced.

use std::process::Command;
use std::time::Duration;

use xtask_testkit::fixture::Release;
use xtask_testkit::mirror::{Fault, Mirror};
use xtask_testkit::process::{
    environ, path_with_first, slow_wrapper, wait_for, wait_for_file, Group, Mark,
};
use xtask_testkit::Workspace;

use crate::support::{assert_sha256sum_accepts, workspace, CHECKSUM, IMAGE, VERSION};

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
    let mirror = Mirror::with_release(&Release::new(VERSION));
    let ws = workspace();
    let wrappers = ws.tmp.path().join("bin");
    let packing = ws.tmp.path().join("packing");
    // A packer that takes its time (and starts a child of its own), so the signal finds it busy.
    slow_wrapper(&wrappers, tool, &packing);
    // Every process of this build inherits the mark, whoever its parent is by now.
    let mark = Mark::new(ws.tmp.path());
    let mut command = ws.build_command(&mirror.base_url, VERSION, &["--format", format]);
    mark.on(&mut command)
        .env("PATH", path_with_first(&wrappers))
        // Secrets a build never needs: no tool it runs may see them.
        .env("R2_SECRET_ACCESS_KEY", "r2-secret-for-the-test")
        .env("SYSEXT_GPG_KEY", "-----BEGIN PGP PRIVATE KEY BLOCK-----")
        .env("AWS_ACCESS_KEY_ID", "aws-key-for-the-test");
    let mut xtask = Group::spawn(&mut command);
    xtask.until_file(&packing, 120, "packing");
    assert!(
        ws.out_names()
            .iter()
            .any(|n| n.starts_with(".alloy-sysext-tmp-")),
        "no work directory while packing: {:?}",
        ws.out_names()
    );
    let packer = mark.processes();
    assert!(packer.len() >= 2, "packer not running: {packer:?}");
    // xtask's own /proc environ is what it was started with; what it passes on is what counts.
    for (pid, command) in packer.iter().filter(|(p, _)| *p != xtask.pid) {
        let environ = environ(*pid);
        for secret in [
            "R2_SECRET_ACCESS_KEY",
            "SYSEXT_GPG_KEY",
            "AWS_ACCESS_KEY_ID",
        ] {
            assert!(!environ.contains(secret), "{secret} reached {command}");
        }
    }
    xtask.signal(signal, group);
    let status = xtask.wait(30);

    assert_eq!(status.code(), Some(expected_code), "{status}");
    let left = mark.processes();
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

/// The fixture release on a mirror, and a workspace whose output directory exists already.
fn mirror_and_out_dir() -> (Mirror, Workspace) {
    let ws = workspace();
    std::fs::create_dir_all(&ws.out).unwrap();
    (Mirror::with_release(&Release::new(VERSION)), ws)
}

#[test]
fn a_build_keeps_work_dirs_whose_lock_is_held_and_removes_the_others() {
    let (mirror, ws) = mirror_and_out_dir();
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
    let (mirror, ws) = mirror_and_out_dir();
    // What a kill between the two renames used to leave, at worst: a new image, no checksum.
    std::fs::write(ws.image(IMAGE), "an image whose checksum never arrived").unwrap();

    let replacing = format!("replacing {IMAGE}: it has no {CHECKSUM}");
    ws.build(&mirror.base_url, VERSION, &["--format", "squashfs"])
        .assert_ok_saying(&[&replacing]);
    assert_eq!(ws.out_names(), [IMAGE, CHECKSUM]);
    assert_sha256sum_accepts(&ws);
}

const ZIP: &str = "alloy-linux-amd64.zip";
const ZIP_OBJECT: &str = "/objects/v1.10.2/alloy-linux-amd64.zip";

/// A build stopped (SIGSTOP: Ctrl-Z, a debugger, a frozen container) for three progress
/// windows in the middle of its download, then continued, finishes without a retry: the time
/// it was stopped is not the network's.
#[test]
fn a_download_stopped_for_longer_than_the_progress_window_finishes_after_it_continues() {
    let release = Release::new(VERSION);
    let mirror = Mirror::with_release(&release);
    // About 80 KB/s: the download lasts seconds, far above the 1 KiB/s floor.
    let throttle = Fault::Throttle {
        chunk: 4096,
        every_ms: 50,
    };
    mirror.fault(VERSION, ZIP, throttle);
    let ws = workspace();
    let mut command = ws.build_command(&mirror.base_url, VERSION, &[]);
    command
        .env("ALLOY_SYSEXT_PROGRESS_WINDOW_MS", "1000")
        .env("ALLOY_SYSEXT_MIN_BYTES_PER_SEC", "1024");
    let mut xtask = Group::spawn(&mut command);
    wait_for(30, "the download", || {
        !mirror.requests_for(ZIP_OBJECT).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    xtask.signal("STOP", false);
    std::thread::sleep(Duration::from_secs(3));
    xtask.signal("CONT", false);
    let status = xtask.wait(60);
    let log = xtask.log();
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(
        mirror.requests_for(ZIP_OBJECT).len(),
        1,
        "retried after the stop:\n{log}"
    );
    assert!(!log.contains("retrying"), "{log}");
    assert_eq!(ws.out_names(), [IMAGE, CHECKSUM]);
}
