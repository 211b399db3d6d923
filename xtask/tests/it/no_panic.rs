//! Every hostile server and every hostile file, in one place, against the real `xtask`: each
//! run ends within its deadline, its errors stay short, and it never panics (the testkit fails
//! any run whose output says it panicked). The other suites check what each case must say;
//! this one sweeps them all, and prints how many it drove.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xtask_testkit::fixture::{self, Release};
use xtask_testkit::mirror::{Fault, Mirror};
use xtask_testkit::{link_to_dev_zero, mkfifo, Run, Workspace};

use crate::downloads::{run_within, verify_with_fault};
use crate::support::{cached_zip, workspace, Make, CHECKSUM, IMAGE, VERSION, XTASK};

const ZIP: &str = "alloy-linux-amd64.zip";

/// Longer than any case takes: six progress windows of a second, and backoff.
const DEADLINE: Duration = Duration::from_secs(90);

/// An error, with the progress lines before it, is at most this long (a hostile server's
/// header or a file's line would otherwise be echoed whole).
const SHORT: usize = 16 << 10;

/// A run that ended in time and did not panic; its output short.
fn assert_clean(case: &str, run: &Run) {
    let case: String = case.chars().take(300).collect();
    assert!(
        run.stderr.len() < SHORT && run.stdout.len() < SHORT,
        "{case}: {} bytes on stderr, {} on stdout:\n{}",
        run.stderr.len(),
        run.stdout.len(),
        &run.stderr[..run.stderr.len().min(4000)]
    );
}

/// What a hostile server does: the faults of the testkit's mirror, with the values that make
/// them worst (a Location of 30 KB, a Content-Range of 16 KB, lengths beyond any size).
fn server_faults() -> Vec<Fault> {
    vec![
        Fault::NotFound,
        Fault::ServerErrors(3),
        Fault::ServerErrors(100),
        Fault::CutOnce,
        Fault::CutOnceNoRanges,
        Fault::NoRanges,
        Fault::Stall,
        Fault::StallOnce,
        Fault::Endless {
            claimed_length: None,
        },
        Fault::Endless {
            claimed_length: Some(3 << 30),
        },
        Fault::Endless {
            claimed_length: Some(u64::MAX),
        },
        Fault::Crawl { every_ms: 20 },
        Fault::CutOnceThenWrongRange { start: 0 },
        Fault::CutOnceThenWrongRange { start: 7 },
        Fault::WrongRange(5),
        Fault::RedirectTo("http://192.0.2.1/alloy.zip".into()),
        Fault::RedirectTo(format!("http://192.0.2.1/{}", "a".repeat(30_000))),
        Fault::RedirectTo("ftp://mirror.example/alloy.zip".into()),
        Fault::RedirectTo("http://[::1".into()),
        Fault::CutOnceThenHugeLength,
        Fault::HugeLength,
        Fault::Throttle {
            chunk: 8192,
            every_ms: 10,
        },
        Fault::CutOnceThenGarbledRange { length: 16_000 },
        Fault::GarbledRange { length: 16_000 },
    ]
}

/// Runs `jobs` on `workers` threads at once (they mostly wait: on windows, backoff and
/// deadlines); a job's failure fails the test, naming it.
fn in_parallel(jobs: Vec<Box<dyn FnOnce() + Send + '_>>, workers: usize) {
    let queue = std::sync::Mutex::new(jobs);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let job = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                match job {
                    Some(job) => job(),
                    None => return,
                }
            });
        }
    });
}

/// How many cases run at once.
const WORKERS: usize = 12;

/// A build against a mirror whose `asset` misbehaves as `fault`.
fn build_against(release: &Release, asset: &str, fault: &Fault) {
    let case = format!("build, {asset}: {fault:?}");
    let mirror = Mirror::with_release(release);
    mirror.fault(VERSION, asset, fault.clone());
    let ws = workspace();
    let mut command = ws.build_command(&mirror.base_url, VERSION, &[]);
    let (run, _) = run_within(&mut command, &ws.tmp.path().join("tmp"), DEADLINE);
    assert_clean(&case, &run);
}

/// A verify of a bucket whose `asset` (the image or its `.sha256`) misbehaves as `fault`.
fn verify_against(asset: &str, fault: &Fault) {
    let case = format!("verify, {asset}: {fault:?}");
    let (_bucket, mut command) = verify_with_fault(asset, fault);
    let tmp = tempfile::tempdir().unwrap();
    let (run, _) = run_within(&mut command, tmp.path(), DEADLINE);
    assert_clean(&case, &run);
}

/// Every server fault on the release zip and on SHA256SUMS (build), and on an image and its
/// `.sha256` (verify): returns how many servers it ran against.
fn drive_hostile_servers() -> usize {
    let release = Release::new(VERSION);
    let release = &release;
    let mut jobs: Vec<Box<dyn FnOnce() + Send + '_>> = Vec::new();
    for fault in server_faults() {
        for asset in [ZIP, "SHA256SUMS"] {
            let fault = fault.clone();
            jobs.push(Box::new(move || build_against(release, asset, &fault)));
        }
        for asset in [IMAGE, CHECKSUM] {
            let fault = fault.clone();
            jobs.push(Box::new(move || verify_against(asset, &fault)));
        }
    }
    let servers = jobs.len();
    in_parallel(jobs, WORKERS);
    servers
}

/// The fixture's zip, made hostile in `how`.
type Spoil = fn(&mut Vec<u8>);

/// Offset of the last record with `signature` in `zip`.
fn last_record(zip: &[u8], signature: &[u8; 4]) -> usize {
    zip.windows(4)
        .rposition(|w| w == signature)
        .expect("a record")
}

/// Release zips no reader should trust: cut anywhere that matters, records that lie, records
/// that point outside the file or overlap, comments that hide records, sizes beyond any size.
const HOSTILE_ZIPS: &[(&str, Spoil)] = &[
    ("empty", |z| z.clear()),
    ("one byte", |z| z.truncate(1)),
    ("the end record only", |z| {
        let end = last_record(z, b"PK\x05\x06");
        z.drain(..end);
    }),
    ("cut before the end record", |z| {
        let end = last_record(z, b"PK\x05\x06");
        z.truncate(end);
    }),
    ("cut in the end record", |z| z.truncate(z.len() - 5)),
    ("cut in half", |z| z.truncate(z.len() / 2)),
    ("not a zip", |z| *z = b"<html>rate limited</html>".to_vec()),
    ("directory offset past the end", |z| {
        let end = last_record(z, b"PK\x05\x06");
        z[end + 16..end + 20].copy_from_slice(&u32::MAX.to_le_bytes());
    }),
    ("directory size past the end", |z| {
        let end = last_record(z, b"PK\x05\x06");
        z[end + 12..end + 16].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    }),
    ("65534 entries declared", |z| {
        let end = last_record(z, b"PK\x05\x06");
        z[end + 8..end + 12].copy_from_slice(&[0xfe, 0xff, 0xfe, 0xff]);
    }),
    ("deferred to a zip64 record that is not there", |z| {
        let end = last_record(z, b"PK\x05\x06");
        z[end + 8..end + 20].copy_from_slice(&[0xff; 12]);
    }),
    ("local header offset past the end", |z| {
        let central = last_record(z, b"PK\x01\x02");
        z[central + 42..central + 46].copy_from_slice(&u32::MAX.to_le_bytes());
    }),
    ("local header at the directory", |z| {
        let central = last_record(z, b"PK\x01\x02");
        let at = (central as u32).to_le_bytes();
        z[central + 42..central + 46].copy_from_slice(&at);
    }),
    ("size of 4 GiB - 1", |z| {
        let central = last_record(z, b"PK\x01\x02");
        z[central + 24..central + 28].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    }),
    ("compressed size past the end", |z| {
        let central = last_record(z, b"PK\x01\x02");
        z[central + 20..central + 24].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    }),
    ("name length past the directory", |z| {
        let central = last_record(z, b"PK\x01\x02");
        z[central + 28..central + 30].copy_from_slice(&u16::MAX.to_le_bytes());
    }),
    ("extra field length past the directory", |z| {
        let central = last_record(z, b"PK\x01\x02");
        z[central + 30..central + 32].copy_from_slice(&u16::MAX.to_le_bytes());
    }),
    ("data descriptor flag, no descriptor", |z| {
        z[6] |= 8;
        let central = last_record(z, b"PK\x01\x02");
        z[central + 8] |= 8;
    }),
    (
        "a data descriptor its sizes put 20 bytes before the end",
        |z| {
            let local_extra = usize::from(u16::from_le_bytes([z[28], z[29]]));
            let data_start = 30 + usize::from(u16::from_le_bytes([z[26], z[27]])) + local_extra;
            let central = last_record(z, b"PK\x01\x02");
            z[6] |= 8;
            z[central + 8] |= 8;
            let compressed = (z.len() - 20 - data_start) as u32;
            z[central + 20..central + 24].copy_from_slice(&compressed.to_le_bytes());
            z[central + 24..central + 28].copy_from_slice(&u32::MAX.to_le_bytes());
        },
    ),
    ("encrypted", |z| {
        z[6] |= 1;
        let central = last_record(z, b"PK\x01\x02");
        z[central + 8] |= 1;
    }),
    ("unknown method", |z| {
        z[8] = 99;
        let central = last_record(z, b"PK\x01\x02");
        z[central + 10] = 99;
    }),
    ("a comment hiding another end record", |z| {
        let end = last_record(z, b"PK\x05\x06");
        let record = z[end..end + 20].to_vec();
        z.truncate(end + 20);
        z.extend_from_slice(&24u16.to_le_bytes());
        z.extend_from_slice(&record);
        z.extend_from_slice(&[0, 0, 0, 0]);
    }),
    ("a comment longer than the file", |z| {
        let end = last_record(z, b"PK\x05\x06");
        z[end + 20..end + 22].copy_from_slice(&u16::MAX.to_le_bytes());
    }),
    ("part of a multi-disk archive", |z| {
        let end = last_record(z, b"PK\x05\x06");
        z[end + 4] = 2;
    }),
];

/// Every hostile zip, built from as a local `--zip` (verified by its own digest: the digest
/// check is not what refuses it); returns how many.
fn drive_hostile_zips(dir: &Path) -> usize {
    let good = Release::new(VERSION).assets[ZIP].clone();
    for (name, spoil) in HOSTILE_ZIPS {
        let mut zip = good.clone();
        spoil(&mut zip);
        let path = dir.join(ZIP);
        std::fs::write(&path, &zip).unwrap();
        let digest = fixture::sha256_hex(&zip);
        let ws = workspace();
        let args = ["--zip", path.to_str().unwrap(), "--sha256", &digest];
        let mut command = ws.build_command("http://127.0.0.1:9/unused", VERSION, &args);
        let (run, _) = run_within(&mut command, &ws.tmp.path().join("tmp"), DEADLINE);
        assert_clean(name, &run);
        assert!(!run.success, "{name}: built");
    }
    HOSTILE_ZIPS.len()
}

/// Files in the places the tool reads from: what they are made as.
const HOSTILE_FILES: &[(&str, Make)] = &[
    ("a FIFO", mkfifo),
    ("a link to /dev/zero", link_to_dev_zero),
    ("a dangling link", |p| {
        std::os::unix::fs::symlink("/nonexistent", p).unwrap()
    }),
    ("a directory", |p| {
        std::fs::create_dir_all(p.join("inside")).unwrap()
    }),
    ("15 TiB, sparse", |p| {
        std::fs::File::create(p).unwrap().set_len(15 << 40).unwrap()
    }),
    ("binary", |p| {
        std::fs::write(p, b"\xff\xfe\x00\x9f").unwrap()
    }),
    ("a 4 MB line", |p| {
        std::fs::write(p, "x".repeat(4_000_000)).unwrap()
    }),
];

/// Where in a workspace a hostile file is put.
type PlaceIn = fn(&Workspace) -> PathBuf;

/// Each hostile file as the `--sha256sums` given, as the cached zip, as the old `.sha256`
/// beside the output and as butane's `.sha256` in the dist: returns how many runs.
fn drive_hostile_files(dir: &Path) -> usize {
    let release = Release::new(VERSION);
    let mirror = Mirror::with_release(&release);
    let zip = dir.join(ZIP);
    std::fs::write(&zip, &release.assets[ZIP]).unwrap();
    let mut runs = 0;
    for (what, make) in HOSTILE_FILES {
        let places: [(&str, PlaceIn); 4] = [
            ("--sha256sums", |ws| ws.tmp.path().join("SHA256SUMS")),
            ("the cached zip", cached_zip),
            ("the old .sha256", |ws| {
                ws.image("alloy-1.10.2-amd64.raw.sha256")
            }),
            ("butane's .sha256", |ws| {
                ws.tmp.path().join("dist/alloy-1.10.2-amd64.raw.sha256")
            }),
        ];
        for (place, path_in) in places {
            let case = format!("{what} as {place}");
            let ws = workspace();
            let path = path_in(&ws);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            make(&path);
            if place == "the old .sha256" {
                std::fs::write(ws.image(IMAGE), b"an earlier image").unwrap();
            }
            let mut command = match place {
                "--sha256sums" => {
                    let args = ["--zip", zip.to_str().unwrap(), "--sha256sums"];
                    let mut command = ws.build_command(&mirror.base_url, VERSION, &args);
                    command.arg(&path);
                    command
                }
                "butane's .sha256" => {
                    let mut command = Command::new(XTASK);
                    command
                        .args(["butane", VERSION, "--base-url", "https://b.example/a/"])
                        .arg("--dist")
                        .arg(path.parent().unwrap());
                    command
                }
                _ => ws.build_command(&mirror.base_url, VERSION, &[]),
            };
            let (run, _) = run_within(&mut command, &ws.tmp.path().join("tmp"), DEADLINE);
            assert_clean(&case, &run);
            runs += 1;
        }
    }
    runs
}

/// Command-line values at and beyond their limits: sizes, epochs, versions, base URLs.
fn drive_hostile_arguments() -> usize {
    let release = Release::new(VERSION);
    let mirror = Mirror::with_release(&release);
    let long_url = format!("https://b.example/{}", "a".repeat(100_000));
    let cases: Vec<Vec<String>> = [
        vec![
            "build",
            VERSION,
            "--max-download-bytes",
            "18446744073709551615",
        ],
        vec![
            "build",
            VERSION,
            "--max-download-bytes",
            "18446744073709551616",
        ],
        vec!["build", VERSION, "--max-download-bytes", "17179869184GiB"],
        vec!["build", VERSION, "--max-download-bytes", "0"],
        vec![
            "build",
            VERSION,
            "--source-date-epoch",
            "18446744073709551615",
        ],
        vec!["build", "99999999999999999999.0.0"],
        vec!["build", "1.10.2-rc.99999999999999999999"],
        vec!["sysupdate", "--base-url", "https://b.example/%m%H%b"],
        vec!["sysupdate", "--base-url", "https://b.example/a\nVerify=no"],
        vec!["sysupdate", "--base-url", &long_url],
        vec!["verify", VERSION, "--base-url", "https://b.example/?x"],
    ]
    .iter()
    .map(|case| case.iter().map(|s| s.to_string()).collect())
    .collect();
    for args in &cases {
        let ws = workspace();
        let mut command = ws.command(&mirror.base_url);
        command.args(args);
        if args[0] == "build" {
            command.arg("--out-dir").arg(&ws.out);
        }
        let (run, _) = run_within(&mut command, &ws.tmp.path().join("tmp"), DEADLINE);
        assert_clean(&args.join(" "), &run);
    }
    cases.len()
}

/// Every hostile server fault (on the zip, SHA256SUMS, an image and its checksum), every
/// hostile zip, every hostile file in every place the tool reads one, and hostile
/// command-line values: no panic, no hang, no long error.
#[test]
fn no_hostile_server_or_file_panics_hangs_or_floods_the_tool() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let servers = drive_hostile_servers();
    let zips = drive_hostile_zips(dir.path());
    let files = drive_hostile_files(dir.path());
    let arguments = drive_hostile_arguments();
    eprintln!(
        "{servers} hostile servers, {zips} hostile zips, {files} hostile files in place, {arguments} hostile arguments, in {:?}",
        started.elapsed()
    );
}
