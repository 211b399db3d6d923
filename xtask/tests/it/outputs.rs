//! The output directory: builds with different options racing into it always leave an image
//! beside its own checksum, and what is already there (the old `.sha256`, a FIFO or a link to
//! /dev/zero) is never read blindly: no build hangs on it or grows on it.

use std::process::{Command, Stdio};
use std::time::Duration;

use xtask_testkit::fixture::{self, Release};
use xtask_testkit::mirror::Mirror;
use xtask_testkit::{Run, Workspace};

use crate::support::{workspace, CHECKSUM, IMAGE, UNREADABLE_CHECKSUMS, VERSION};

/// Rounds of two builds racing into one output directory.
const RACES: usize = 30;

/// The peak memory a build may reach, whatever it finds: the tool's budget.
const MEMORY_BUDGET_KIB: u64 = 64 << 10;

/// Fails unless the output directory holds exactly the image and the checksum that is its own.
fn assert_matching_pair(ws: &Workspace, case: &str) -> String {
    assert_eq!(ws.out_names(), [IMAGE, CHECKSUM], "{case}");
    let image = std::fs::read(ws.image(IMAGE)).unwrap();
    let digest = fixture::sha256_hex(&image);
    assert_eq!(
        std::fs::read_to_string(ws.image(CHECKSUM)).unwrap(),
        format!("{digest}  {IMAGE}\n"),
        "{case}: the checksum is not its image's"
    );
    digest
}

/// Two builds of one release with different options (so different images: one without the
/// autostart drop-in, one with another epoch) started together into one output directory,
/// again and again: both succeed, and the directory always holds one image beside its own
/// checksum, never one build's image beside the other's checksum.
#[test]
fn builds_racing_into_one_output_directory_leave_a_matching_pair() {
    let mirror = Mirror::with_release(&Release::new(VERSION));
    let ws = workspace();
    // Warm the cache: the builds then race from the first step to the install.
    ws.build(&mirror.base_url, VERSION, &[]).assert_ok();
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..RACES {
        let case = format!("round {round}");
        let mut first = ws.build_command(&mirror.base_url, VERSION, &["--no-autostart"]);
        let mut second = ws.build_command(&mirror.base_url, VERSION, &[]);
        second.env("SOURCE_DATE_EPOCH", "1700000000");
        let runs = [&mut first, &mut second].map(|command| {
            command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        });
        for child in runs {
            let output = child.wait_with_output().unwrap();
            Run::from_output(&output).case(&case).assert_ok();
        }
        seen.insert(assert_matching_pair(&ws, &case));
    }
    assert!(seen.len() <= 2, "more images than builds: {seen:?}");
}

/// Runs `xtask build` in `ws` with an address-space cap (so that a build reading /dev/zero
/// fails instead of taking the machine's memory), killing it after `deadline`; returns the
/// run and its peak memory in KiB, as `--timings` reports it.
fn build_capped(ws: &Workspace, mirror: &Mirror, deadline: Duration) -> (Run, u64) {
    let timings = ws.tmp.path().join("timings.json");
    let mut command = Command::new("prlimit");
    command.arg(format!("--as={}", 2u64 << 30)).arg("--");
    let build = ws.build_command(&mirror.base_url, VERSION, &[]);
    command
        .arg(build.get_program())
        .args(build.get_args())
        .arg("--timings")
        .arg(&timings)
        .envs(build.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env_remove("SOURCE_DATE_EPOCH");
    let (run, _) = Run::within(&mut command, deadline);
    let timings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&timings).unwrap_or_default())
            .unwrap_or_else(|e| panic!("no --timings ({e}):\n{}", run.stderr));
    let peak = timings["peak_rss_kib"].as_u64().unwrap();
    (run, peak)
}

/// The old `.sha256` beside an earlier image is a FIFO (which would hang a reader) or a link
/// to /dev/zero (which would fill its memory): the build neither hangs nor grows, says why it
/// replaces the image, and leaves a regular checksum file that matches the new image.
#[test]
fn an_old_checksum_that_is_a_fifo_or_a_link_to_dev_zero_is_not_read() {
    let mirror = Mirror::with_release(&Release::new(VERSION));
    for (name, make, said) in UNREADABLE_CHECKSUMS {
        let ws = workspace();
        std::fs::create_dir_all(&ws.out).unwrap();
        std::fs::write(ws.image(IMAGE), b"an earlier image").unwrap();
        make(&ws.image(CHECKSUM));
        let (run, peak_kib) = build_capped(&ws, &mirror, Duration::from_secs(60));
        run.case(name)
            .assert_ok_saying(&[&format!("replacing {IMAGE}"), said]);
        assert!(
            peak_kib < MEMORY_BUDGET_KIB,
            "{name}: peak memory {peak_kib} KiB"
        );
        let checksum = std::fs::symlink_metadata(ws.image(CHECKSUM)).unwrap();
        assert!(checksum.file_type().is_file(), "{name}: {checksum:?}");
        assert_matching_pair(&ws, name);
    }
}
