//! What the image brings to run Alloy as a service, checked with systemd's own tools on files
//! taken out of built images.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::fixture::Release;
use support::mirror::Mirror;
use support::{ext4_cat, ext4_inodes, Workspace};

const VERSION: &str = "1.10.2";
const UNIT: &str = "/usr/lib/systemd/system/alloy.service";
const AUTOSTART: &str = "/usr/lib/systemd/system/multi-user.target.d/10-alloy.conf";
const TMPFILES: &str = "/usr/lib/tmpfiles.d/alloy.conf";
const DEFAULT_CONFIG: &str = "/usr/share/alloy/config.alloy";
const DEFAULT_ENVIRONMENT: &str = "/usr/share/alloy/environment";
const RELEASE_FILE: &str = "/usr/lib/extension-release.d/extension-release.alloy";
const SERVICE_FILES: [&str; 4] = [UNIT, TMPFILES, DEFAULT_CONFIG, DEFAULT_ENVIRONMENT];

fn built(args: &[&str]) -> (Workspace, Release) {
    let release = Release::new(VERSION);
    let mirror = Mirror::start();
    mirror.add_release(&release);
    let ws = Workspace::new();
    ws.build(&mirror.base_url, VERSION, args).assert_ok();
    (ws, release)
}

fn text(image: &Path, path: &str) -> String {
    String::from_utf8(ext4_cat(image, path)).unwrap()
}

/// Copies `paths` out of the image into `root`, keeping their place and a 0644 mode.
fn extract(image: &Path, root: &Path, paths: &[&str]) {
    for path in paths {
        let disk = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
        std::fs::write(&disk, ext4_cat(image, path)).unwrap();
    }
}

#[test]
fn both_architectures_carry_the_service_its_defaults_and_the_autostart() {
    let (ws, _) = built(&["--arch", "amd64", "--arch", "arm64"]);
    let amd64 = ws.image("alloy-1.10.2-amd64.raw");
    for arch in ["amd64", "arm64"] {
        let image = ws.image(&format!("alloy-1.10.2-{arch}.raw"));
        let inodes = ext4_inodes(&image);
        for path in SERVICE_FILES.iter().chain([&AUTOSTART]) {
            let inode = inodes
                .iter()
                .find(|i| i.path == *path)
                .unwrap_or_else(|| panic!("{path} missing from the {arch} image"));
            assert_eq!(
                (inode.mode, inode.uid, inode.gid),
                (0o100644, 0, 0),
                "{inode:?}"
            );
            // The texts do not depend on the architecture.
            assert_eq!(text(&image, path), text(&amd64, path), "{arch}: {path}");
        }
        assert!(
            text(&image, RELEASE_FILE)
                .lines()
                .any(|l| l == "EXTENSION_RELOAD_MANAGER=1"),
            "{arch}"
        );
    }
    let unit = text(&amd64, UNIT);
    for line in [
        "DynamicUser=yes",
        "StateDirectory=alloy",
        "SupplementaryGroups=systemd-journal adm",
        "EnvironmentFile=-/etc/default/alloy",
        "ExecStart=/usr/bin/alloy run $CUSTOM_ARGS --storage.path=/var/lib/alloy/data $CONFIG_FILE",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    assert_eq!(text(&amd64, AUTOSTART), "[Unit]\nUpholds=alloy.service\n");
}

#[test]
fn no_autostart_leaves_out_only_the_drop_in() {
    let (ws, _) = built(&["--no-autostart"]);
    let image = ws.image("alloy-1.10.2-amd64.raw");
    let paths: Vec<String> = ext4_inodes(&image).into_iter().map(|i| i.path).collect();
    for path in SERVICE_FILES {
        assert!(paths.iter().any(|p| p == path), "{path} missing: {paths:?}");
    }
    assert!(
        !paths.iter().any(|p| p.contains("multi-user.target")),
        "{paths:?}"
    );
    // The unit is still shipped, so the manager should still learn about it after a merge.
    assert!(text(&image, RELEASE_FILE).contains("EXTENSION_RELOAD_MANAGER=1\n"));
}

/// A root for `systemd-analyze verify --root`: the host's own units (so that sysinit.target and
/// friends exist), a shell for ExecReload, and the image's files, binary included.
fn verify_root(image: &Path, root: &Path) {
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system/.")
        .arg(&units)
        .status()
        .unwrap();
    assert!(copied.success(), "copying the host's units");
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    // The unit's other commands: the shell for ExecReload, tmpfiles for ExecStartPre.
    for (host, inside) in [
        ("/bin/sh", "usr/bin/sh"),
        ("/usr/bin/systemd-tmpfiles", "usr/bin/systemd-tmpfiles"),
    ] {
        std::fs::copy(std::fs::canonicalize(host).unwrap(), root.join(inside)).unwrap();
    }
    extract(image, root, &[UNIT, AUTOSTART, "/usr/bin/alloy"]);
    std::fs::set_permissions(
        root.join("usr/bin/alloy"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

fn analyze_verify(root: &Path) -> (bool, String) {
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(["alloy.service", "multi-user.target"])
        .output()
        .expect("running systemd-analyze (bash scripts/install-deps.sh --test installs systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_and_the_drop_in() {
    let (ws, _) = built(&[]);
    let image = ws.image("alloy-1.10.2-amd64.raw");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    verify_root(&image, &root);

    // Silence means systemd (252 here) knows every key, Upholds= in the drop-in included.
    let (ok, said) = analyze_verify(&root);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );

    // The check bites: a key systemd does not know, or a missing binary, is reported.
    let dropin = root.join(AUTOSTART.trim_start_matches('/'));
    std::fs::write(&dropin, "[Unit]\nUphold=alloy.service\n").unwrap();
    let (_, said) = analyze_verify(&root);
    assert!(said.contains("Unknown key"), "{said}");
    std::fs::remove_file(root.join("usr/bin/alloy")).unwrap();
    let (ok, said) = analyze_verify(&root);
    assert!(!ok && said.contains("/usr/bin/alloy"), "{said}");
}

fn tmpfiles_create(root: &Path) {
    let output = Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", root.display()))
        .arg("--create")
        .output()
        .expect("running systemd-tmpfiles (bash scripts/install-deps.sh --test installs systemd)");
    assert!(
        output.status.success(),
        "systemd-tmpfiles --create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn tmpfiles_seed_etc_once_and_keep_the_operators_edits() {
    if !support::require_root("tmpfiles_seed_etc_once (creates root-owned files)") {
        return;
    }
    let (ws, _) = built(&[]);
    let image = ws.image("alloy-1.10.2-amd64.raw");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    extract(&image, &root, &SERVICE_FILES);
    // Whatever mode the defaults have, the copies in /etc are readable by the dynamic user.
    for path in [DEFAULT_CONFIG, DEFAULT_ENVIRONMENT] {
        let disk = root.join(path.trim_start_matches('/'));
        std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    tmpfiles_create(&root);
    let config = root.join("etc/alloy/config.alloy");
    let environment = root.join("etc/default/alloy");
    assert_eq!(
        std::fs::read(&config).unwrap(),
        ext4_cat(&image, DEFAULT_CONFIG)
    );
    assert_eq!(
        std::fs::read(&environment).unwrap(),
        ext4_cat(&image, DEFAULT_ENVIRONMENT)
    );
    for path in [&config, &environment] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "{}", path.display());
    }
    assert!(std::fs::read_to_string(&environment)
        .unwrap()
        .contains("CONFIG_FILE=\"/etc/alloy/config.alloy\""));

    // The operator edits; the next boot's tmpfiles run leaves the edit alone, and restores
    // only what was deleted.
    let edited = "// mine\nlogging {\n  level = \"debug\"\n}\n";
    std::fs::write(&config, edited).unwrap();
    std::fs::remove_file(&environment).unwrap();
    tmpfiles_create(&root);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert_eq!(
        std::fs::read(&environment).unwrap(),
        ext4_cat(&image, DEFAULT_ENVIRONMENT)
    );
}
