//! A real `xtask build` signalled while it packs: its packer stops, its work directory goes,
//! it exits 128 + signal. Work directories belong to whoever holds their lock, not to a pid;
//! an image left without its checksum is noticed and replaced.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use xtask_testkit::fixture::{self, Release};
use xtask_testkit::mirror::{Fault, Mirror};
use xtask_testkit::process::{
    environ, path_with_first, slow_wrapper, wait_for, wait_for_file, Group, Mark,
};
use xtask_testkit::{checked_output, tool, Workspace, XorShift};

use crate::support::{assert_sha256sum_accepts, files_under, workspace, CHECKSUM, IMAGE, VERSION};

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

/// The signals that end a build, and their numbers (it exits 128 + the number).
const ENDING_SIGNALS: [(&str, i32); 3] = [("INT", 2), ("TERM", 15), ("HUP", 1)];

/// Signals sent per format by [`builds_signalled_at_random_moments_leave_a_whole_pair_or_nothing`].
const SIGNALS_PER_FORMAT: u64 = 60;

/// An install already under way when the signal came ends after it by at most this (two
/// renames and a directory fsync on a busy disk); anything later was started after it.
const INSTALL_UNDER_WAY: Duration = Duration::from_millis(500);

/// What one signalled build left: `None` when nothing was installed, else the time its checksum
/// was moved into place. Fails the test unless the output directory holds nothing at all, or
/// exactly the image and the checksum that matches it, the image whole: `xtask inspect` reads
/// the binary at its full size (and, for squashfs, `unsquashfs -lls` lists it at that size).
fn check_what_a_build_left(ws: &Workspace, format: &str, binary_len: usize) -> Option<SystemTime> {
    let names = ws.out_names();
    if names.is_empty() {
        return None;
    }
    assert_eq!(names, [IMAGE, CHECKSUM], "{format}: half an install");
    let image = std::fs::read(ws.image(IMAGE)).unwrap();
    let checksum = std::fs::read_to_string(ws.image(CHECKSUM)).unwrap();
    assert_eq!(
        checksum,
        format!("{}  {IMAGE}\n", fixture::sha256_hex(&image)),
        "{format}: a checksum that is not its image's"
    );
    let inspected = checked_output(
        Command::new(crate::support::XTASK)
            .args(["inspect", "--json"])
            .arg(ws.image(IMAGE)),
    );
    let inspected: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["format"], format, "{inspected}");
    assert_eq!(
        inspected["alloy"]["size"], binary_len,
        "{format}: {inspected}"
    );
    if format == "squashfs" {
        let listing = checked_output(
            Command::new(tool("unsquashfs"))
                .arg("-lls")
                .arg(ws.image(IMAGE)),
        );
        let alloy = listing
            .lines()
            .find(|l| l.ends_with("squashfs-root/usr/bin/alloy"))
            .unwrap_or_else(|| panic!("no usr/bin/alloy in\n{listing}"));
        assert!(
            alloy
                .split_whitespace()
                .any(|w| w == binary_len.to_string()),
            "{alloy}"
        );
    }
    let meta = std::fs::symlink_metadata(ws.image(CHECKSUM)).unwrap();
    Some(SystemTime::UNIX_EPOCH + Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32))
}

/// Builds of every format, each signalled (SIGINT, SIGTERM or SIGHUP, to xtask alone or to its
/// whole process group) at a random moment of its run, from the download to the install:
/// afterwards the output directory holds nothing, or a whole image and its matching checksum
/// moved into place before the signal came; no work directory, no partial download, no
/// process of the build is left; and it exits 128 + the signal (or 0, if it was done first).
#[test]
fn builds_signalled_at_random_moments_leave_a_whole_pair_or_nothing() {
    let release = Release::new(VERSION);
    let binary_len = release.binary("amd64").len();
    let mirror = Mirror::with_release(&release);
    let (mut moments, seed) = XorShift::seeded();
    let started = Instant::now();
    let (mut sent, mut installed, mut done_first) = (0, 0, 0);
    let mut steps = std::collections::BTreeMap::new();
    for format in crate::support::FORMATS {
        let ws = workspace();
        let args = ["--format", format];
        // How long a whole build takes, from an empty cache and from a warm one: the signals
        // fall within it.
        let takes = [(); 2].map(|()| {
            let _ = std::fs::remove_dir_all(&ws.out);
            let build_started = Instant::now();
            ws.build(&mirror.base_url, VERSION, &args).assert_ok();
            build_started.elapsed().as_micros() as u64
        });
        for round in 0..SIGNALS_PER_FORMAT {
            let case = format!("{format}, round {round}, seed {seed}");
            let _ = std::fs::remove_dir_all(&ws.out);
            // Every third round from an empty cache: signals land in downloads too.
            let cold = round % 3 == 0;
            if cold {
                let _ = std::fs::remove_dir_all(&ws.cache);
            }
            let build_takes = takes[usize::from(!cold)];
            let mark = Mark::new(&ws.tmp.path().join(round.to_string()));
            let mut command = ws.build_command(&mirror.base_url, VERSION, &args);
            let mut xtask = Group::spawn(mark.on(&mut command));
            let wait = Duration::from_micros(moments.below(build_takes * 11 / 10));
            let (signal, number) = ENDING_SIGNALS[moments.below(3) as usize];
            let code = 128 + number;
            let whole_group = moments.below(2) == 0;
            std::thread::sleep(wait);
            let received = xtask.try_signal(signal, whole_group);
            let signalled_at = SystemTime::now();
            sent += u64::from(received);
            let status = xtask.wait(60);
            let log = xtask.log();
            // The step it was in: the word after its last "==>".
            let step = log
                .rsplit("==> ")
                .next()
                .and_then(|l| l.split_whitespace().next());
            *steps
                .entry(step.unwrap_or("(none)").to_string())
                .or_insert(0) += 1;
            wait_for(10, "the build's processes ending", || {
                mark.processes().is_empty()
            });
            let left = check_what_a_build_left(&ws, format, binary_len);
            match (status.code(), left) {
                (Some(0), Some(_)) => done_first += 1,
                (Some(c), None) if c == code => {}
                // Killed before its handler was installed (the first milliseconds): nothing
                // had started.
                (None, None) if status.signal() == Some(number) => {}
                (Some(c), Some(moved)) if c == code => {
                    installed += 1;
                    assert!(
                        moved <= signalled_at + INSTALL_UNDER_WAY,
                        "{case}: installed {:?} after SIG{signal}\n{log}",
                        moved.duration_since(signalled_at)
                    );
                }
                (code, left) => panic!(
                    "{case}: SIG{signal} after {wait:?}: exit {code:?}, left {:?}\n{log}",
                    left.map(|_| ws.out_names())
                ),
            }
            for cached in files_under(&ws.cache) {
                assert!(cached.ends_with(ZIP), "{case}: the cache holds {cached:?}");
            }
        }
    }
    eprintln!(
        "{sent} signals in {:?} (seed {seed}): {installed} builds had installed their pair before the signal, {done_first} had exited; the step each was in: {steps:?}",
        started.elapsed()
    );
}

/// A release zip (stored, not deflated) whose binary is the fixture's Alloy followed by `mib`
/// MiB of pseudo-random bytes, which packers take seconds over: written to `path`; returns its
/// SHA-256.
fn large_release_zip(path: &Path, mib: usize) -> String {
    let mut binary = fixture::fake_alloy(VERSION, "amd64");
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    binary.reserve(mib << 20);
    for _ in 0..(mib << 17) {
        binary.extend_from_slice(&random.next_u64().to_le_bytes());
    }
    let mut writer = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(false);
    writer.start_file("alloy-linux-amd64", stored).unwrap();
    std::io::Write::write_all(&mut writer, &binary).unwrap();
    writer.finish().unwrap();
    drop(binary);
    fixture::sha256_hex(&std::fs::read(path).unwrap())
}

/// Waits until a process of the run marked `mark` runs a command line containing `program`.
fn until_running(xtask: &mut Group, mark: &Mark, program: &str) {
    let mut ended = None;
    wait_for(120, program, || {
        ended = xtask.child.try_wait().unwrap();
        ended.is_some() || mark.processes().iter().any(|(_, c)| c.contains(program))
    });
    assert!(
        ended.is_none(),
        "xtask ended first ({ended:?}):\n{}",
        xtask.log()
    );
}

/// How long a child of a killed xtask may take to go: SIGKILL from the kernel, then reaping.
const GONE_WITHIN: u64 = 3;

/// xtask SIGKILLed (no handler runs) while mkfs.erofs or mksquashfs packs a 160 MiB binary,
/// which takes them many seconds: the packer goes with it, at once.
#[test]
fn a_killed_build_leaves_no_packer_running() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("alloy-linux-amd64.zip");
    let digest = large_release_zip(&zip, 160);
    for (format, packer) in [("erofs", "mkfs.erofs"), ("squashfs", "mksquashfs")] {
        let ws = workspace();
        let mark = Mark::new(ws.tmp.path());
        let zip_arg = zip.to_str().unwrap();
        let args = ["--format", format, "--zip", zip_arg, "--sha256", &digest];
        let mut command = ws.build_command("http://127.0.0.1:9/unused", VERSION, &args);
        let mut xtask = Group::spawn(mark.on(&mut command));
        until_running(&mut xtask, &mark, packer);
        // SIGKILL to xtask alone: the packer is left to the kernel.
        xtask.signal("KILL", false);
        xtask.wait(30);
        wait_for(GONE_WITHIN, &format!("{packer} going with xtask"), || {
            mark.processes().is_empty()
        });
    }
}

/// Ctrl-C while the download stalls (with the default progress window of a minute, so the read
/// blocks): the build ends at once, not after its wait for the main thread (10 s), and leaves
/// no partial download in the cache and nothing in the output directory.
#[test]
fn a_signal_during_a_stalled_download_ends_the_build_at_once() {
    let mirror = Mirror::with_release(&Release::new(VERSION));
    mirror.fault(VERSION, ZIP, Fault::Stall);
    let ws = workspace();
    let mut command = ws.build_command(&mirror.base_url, VERSION, &[]);
    let mut xtask = Group::spawn(&mut command);
    wait_for(30, "the download", || {
        !mirror.requests_for(ZIP_OBJECT).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    xtask.signal("INT", false);
    let status = xtask.wait(30);
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(130), "{}", xtask.log());
    assert!(took < Duration::from_secs(3), "it took {took:?} to stop");
    assert_eq!(files_under(&ws.cache), Vec::<std::path::PathBuf>::new());
    assert_eq!(ws.out_names(), Vec::<String>::new());
}
