//! `cargo xtask bench` runs end to end on a small generated release (it measures the `xtask`
//! binary beside its own, which `cargo test --workspace` builds).

use std::process::Command;

use xtask_testkit::Run;

/// A quick benchmark run completes and writes results that parse. No timing is asserted.
#[test]
fn bench_smoke_run_writes_markdown_and_json() {
    let out = tempfile::tempdir().unwrap();
    let run = Run::from_command(
        Command::new(env!("CARGO_BIN_EXE_xtask-bench"))
            .args(["--size-mb", "4", "--runs", "1", "--out"])
            .arg(out.path()),
    );
    run.assert_ok();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = json["contenders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "xtask cold ext4",
            "xtask cold ext4 (debugfs -n)",
            "xtask warm ext4",
            "plain ext4",
            "xtask cold squashfs",
            "plain squashfs (xz)",
            "xtask cold erofs"
        ]
    );
    for c in json["contenders"].as_array().unwrap() {
        assert!(c["wall_s"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["image_bytes"].as_u64().unwrap() > 100_000, "{c}");
        assert!(c["phases_s"]["pack"].as_f64().is_some(), "{c}");
    }
    assert_eq!(json["targets"].as_array().unwrap().len(), 10);
    // The debugfs contender fills the same image the in-process fill does.
    let image = |name: &str| {
        json["contenders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["image_bytes"].clone())
    };
    assert_eq!(
        image("xtask cold ext4"),
        image("xtask cold ext4 (debugfs -n)")
    );
    assert!(json["inflate_floor_s"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["hash_floor_s"].as_f64().unwrap() > 0.0, "{json}");
    // Staged: the 4 MB binary, its metadata and the service files.
    let staged = json["staged_bytes"].as_u64().unwrap();
    assert!(staged > 4_000_000 && staged < 4_100_000, "{staged}");
    let markdown = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(markdown.contains("| xtask cold erofs |"), "{markdown}");
    assert!(
        run.stdout.contains("| plain squashfs (xz) |"),
        "{}",
        run.stdout
    );
}

/// `cargo xtask bench audit` on a small bucket completes, and measures what the audit's two
/// ways cost: hashed as they stream (nothing on disk) against downloaded and looked inside.
#[test]
fn bench_audit_smoke_run_writes_nothing_to_disk_where_a_signature_vouches() {
    let out = tempfile::tempdir().unwrap();
    let run = Run::from_command(
        Command::new(env!("CARGO_BIN_EXE_xtask-bench"))
            .args([
                "audit",
                "--releases",
                "3",
                "--size-mb",
                "4",
                "--runs",
                "1",
                "--out",
            ])
            .arg(out.path()),
    );
    run.assert_ok();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("audit.json")).unwrap())
            .unwrap();
    assert_eq!(json["images"], 6);
    let ways = json["ways"].as_array().unwrap();
    assert_eq!(ways.len(), 2);
    let (signed, unsigned) = (&ways[0], &ways[1]);
    assert_eq!(signed["keyring"], true);
    let image = signed["bytes_per_image"].as_f64().unwrap();
    assert!(image > 4e6, "{signed}");
    // Counted as block output: the way that keeps copies writes every image once, the other
    // none (a few KiB of signature checking at most).
    let total = json["image_bytes"].as_f64().unwrap();
    assert!(
        unsigned["written_bytes"].as_f64().unwrap() >= total,
        "{unsigned}: is target/ on a tmpfs, where writes are not counted?"
    );
    assert!(
        signed["written_bytes"].as_f64().unwrap() < image,
        "{signed}"
    );
    for way in ways {
        assert!(way["wall_s"].as_f64().unwrap() > 0.0, "{way}");
        assert!(way["peak_rss_kib"].as_f64().unwrap() > 1000.0, "{way}");
    }
    let markdown = std::fs::read_to_string(out.path().join("audit.md")).unwrap();
    assert!(markdown.contains("| with --keyring"), "{markdown}");
}
