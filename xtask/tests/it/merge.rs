//! The real thing: the real `systemd-sysext` merges a built image into a fake Flatcar root, in a
//! private mount namespace, and the merged `/usr/bin/alloy` runs; a host whose os-release does not
//! match refuses the image; for each image format. Needs root (loop devices, mounts): CI runs it as root.

use std::path::{Path, PathBuf};
use std::process::Command;

use xtask_testkit::process::require_root;
use xtask_testkit::{Run, Workspace};

use crate::support::{built, FORMATS, VERSION};

/// Runs inside `unshare --mount`: a private tmpfs on /run keeps the host's /run/extensions and
/// sysext state out of it; the root is made a shared bind mount, or the merge would stay inside
/// systemd-sysext's own namespace. systemd 252 does not follow /etc/extensions symlinks under
/// --root, so the image is copied in under its extension name (the boot test covers the link).
const MERGE_SCRIPT: &str = r#"
set -eu
root=$1 image=$2 id=$3 level=$4
mount -t tmpfs tmpfs /run
mkdir -p "$root/usr/lib" "$root/etc/extensions"
printf 'NAME="Fake host"\nID=%s\nSYSEXT_LEVEL=%s\n' "$id" "$level" > "$root/usr/lib/os-release"
cp "$image" "$root/etc/extensions/alloy.raw"
mount --bind "$root" "$root"
mount --make-shared "$root"
systemd-sysext --root="$root" merge
echo "--- merged"
ls "$root/usr/lib/extension-release.d/" 2>/dev/null || true
echo "--- run"
if [ -x "$root/usr/bin/alloy" ]; then "$root/usr/bin/alloy" --version; else echo "no merged alloy"; fi
"#;

fn merge(image: &Path, id: &str, level: &str) -> Run {
    let root = tempfile::tempdir().unwrap();
    let run = Run::from_command(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "bash",
                "-c",
                MERGE_SCRIPT,
                "merge",
            ])
            .arg(root.path())
            .arg(image)
            .args([id, level]),
    );
    // The namespace is gone: nothing stays mounted on the host.
    assert!(!root.path().join("usr/bin/alloy").exists());
    run
}

/// The fixture release built for `arch` in `format`: the workspace and the image's path.
fn built_image(arch: &str, format: &str) -> (Workspace, PathBuf) {
    let ws = built(&["--arch", arch, "--format", format]);
    let image = ws.image(&format!("alloy-{VERSION}-{arch}.raw"));
    (ws, image)
}

#[test]
fn systemd_sysext_merges_the_image_on_a_flatcar_host_and_alloy_runs() {
    if !require_root("systemd_sysext_merges_the_image_on_a_flatcar_host_and_alloy_runs") {
        return;
    }
    for format in FORMATS {
        let run = merge(&built_image("amd64", format).1, "flatcar", "1.0").case(format);
        run.assert_ok_saying(&["Merged extensions into"]);
        let merged = run.stdout.split("--- merged").nth(1).unwrap_or_default();
        assert!(
            merged.contains("extension-release.alloy"),
            "{format}: the extension's metadata is merged:\n{}",
            run.stdout
        );
        let output = run.stdout.split("--- run").nth(1).unwrap_or_default();
        assert!(
            output
                .trim_start()
                .starts_with("alloy, version v1.10.2 (branch: HEAD"),
            "{format}: the merged /usr/bin/alloy runs:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn systemd_sysext_refuses_the_image_on_hosts_it_was_not_built_for() {
    if !require_root("systemd_sysext_refuses_the_image_on_hosts_it_was_not_built_for") {
        return;
    }
    for format in FORMATS {
        let (_ws, amd64) = built_image("amd64", format);
        for (id, level) in [("debian", "1.0"), ("flatcar", "2.0")] {
            let case = format!("{format} on ID={id} SYSEXT_LEVEL={level}");
            assert_ignored(&amd64, id, level, &case);
        }
    }
    // An arm64 image on this x86-64 host is refused for its ARCHITECTURE=.
    if std::env::consts::ARCH == "x86_64" {
        let (_ws, arm64) = built_image("arm64", "ext4");
        assert_ignored(&arm64, "flatcar", "1.0", "arm64 on x86-64");
    }
}

/// systemd-sysext ignores `image` on a host of `id` and `level`: nothing is merged.
fn assert_ignored(image: &Path, id: &str, level: &str, case: &str) {
    let run = merge(image, id, level).case(case);
    run.assert_ok_saying(&["ignored due to incompatible version"]);
    assert!(
        run.stdout.contains("no merged alloy"),
        "{case}:\n{}",
        run.stdout
    );
}
