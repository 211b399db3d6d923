//! What the image brings to run Alloy as a service, checked with systemd's own tools on files
//! taken out of built images.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use xtask_testkit::process::require_root;
use xtask_testkit::{checked_output, ext4};

use crate::support::built;

const UNIT: &str = "/usr/lib/systemd/system/alloy.service";
const SETUP_UNIT: &str = "/usr/lib/systemd/system/alloy-setup.service";
const SYSUSERS: &str = "/usr/lib/sysusers.d/alloy.conf";
const AUTOSTART: &str = "/usr/lib/systemd/system/multi-user.target.d/10-alloy.conf";
const TMPFILES: &str = "/usr/lib/tmpfiles.d/alloy.conf";
const DEFAULT_CONFIG: &str = "/usr/share/alloy/config.alloy";
const DEFAULT_ENVIRONMENT: &str = "/usr/share/alloy/environment";
const RELEASE_FILE: &str = "/usr/lib/extension-release.d/extension-release.alloy";
const SERVICE_FILES: [&str; 6] = [
    UNIT,
    SETUP_UNIT,
    SYSUSERS,
    TMPFILES,
    DEFAULT_CONFIG,
    DEFAULT_ENVIRONMENT,
];

/// Copies `paths` out of the image into `root`, keeping their place and a 0644 mode.
fn extract(image: &Path, root: &Path, paths: &[&str]) {
    for path in paths {
        let disk = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
        std::fs::write(&disk, ext4::cat(image, path)).unwrap();
    }
}

#[test]
fn both_architectures_carry_the_service_its_defaults_and_the_autostart() {
    let ws = built(&["--arch", "amd64", "--arch", "arm64"]);
    let amd64 = ws.image("alloy-1.10.2-amd64.raw");
    for arch in ["amd64", "arm64"] {
        let image = ws.image(&format!("alloy-1.10.2-{arch}.raw"));
        let inodes = ext4::inodes(&image);
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
            assert_eq!(
                ext4::text(&image, path),
                ext4::text(&amd64, path),
                "{arch}: {path}"
            );
        }
        assert!(
            ext4::text(&image, RELEASE_FILE)
                .lines()
                .any(|l| l == "EXTENSION_RELOAD_MANAGER=1"),
            "{arch}"
        );
    }
    let unit = ext4::text(&amd64, UNIT);
    for line in [
        "User=alloy",
        "Requires=alloy-setup.service",
        "StateDirectory=alloy",
        "SupplementaryGroups=systemd-journal adm",
        "EnvironmentFile=-/etc/default/alloy",
        "ExecStart=/usr/bin/alloy run $CUSTOM_ARGS --storage.path=/var/lib/alloy/data $CONFIG_FILE",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    assert_eq!(
        ext4::text(&amd64, AUTOSTART),
        "[Unit]\nUpholds=alloy.service\n"
    );
}

#[test]
fn no_autostart_leaves_out_only_the_drop_in() {
    let ws = built(&["--no-autostart"]);
    let image = ws.image("alloy-1.10.2-amd64.raw");
    let paths: Vec<String> = ext4::inodes(&image).into_iter().map(|i| i.path).collect();
    for path in SERVICE_FILES {
        assert!(paths.iter().any(|p| p == path), "{path} missing: {paths:?}");
    }
    assert!(
        !paths.iter().any(|p| p.contains("multi-user.target")),
        "{paths:?}"
    );
    // The unit is still shipped, so the manager should still learn about it after a merge.
    assert!(ext4::text(&image, RELEASE_FILE).contains("EXTENSION_RELOAD_MANAGER=1\n"));
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
    // The units' other commands: the shell for ExecReload, sysusers and tmpfiles for the setup.
    for (host, inside) in [
        ("/bin/sh", "usr/bin/sh"),
        ("/usr/bin/systemd-tmpfiles", "usr/bin/systemd-tmpfiles"),
        ("/usr/bin/systemd-sysusers", "usr/bin/systemd-sysusers"),
    ] {
        std::fs::copy(std::fs::canonicalize(host).unwrap(), root.join(inside)).unwrap();
    }
    extract(
        image,
        root,
        &[UNIT, SETUP_UNIT, AUTOSTART, "/usr/bin/alloy"],
    );
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
        .args(["alloy.service", "alloy-setup.service", "multi-user.target"])
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
    let ws = built(&[]);
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

fn run_in_root(root: &Path, tool: &str, args: &[&str]) {
    checked_output(
        Command::new(tool)
            .arg(format!("--root={}", root.display()))
            .args(args),
    );
}

/// What alloy-setup.service runs, in its order: the user first, then the files that name it.
fn setup(root: &Path) {
    run_in_root(root, "systemd-sysusers", &[]);
    run_in_root(root, "systemd-tmpfiles", &["--create"]);
}

/// The gid of `group` in the root's /etc/group.
fn gid(root: &Path, group: &str) -> u32 {
    let text = std::fs::read_to_string(root.join("etc/group")).unwrap();
    text.lines()
        .find_map(|l| {
            let fields: Vec<&str> = l.split(':').collect();
            (fields[0] == group).then(|| fields[2].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no group {group} in:\n{text}"))
}

/// (mode bits, uid, gid) of a path.
fn owner_mode(path: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

#[test]
fn setup_makes_the_alloy_user_and_seeds_etc_privately_keeping_the_operators_edits() {
    if !require_root("setup_makes_the_alloy_user (creates root-owned files)") {
        return;
    }
    let ws = built(&[]);
    let image = ws.image("alloy-1.10.2-amd64.raw");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    extract(&image, &root, &SERVICE_FILES);
    // Whatever mode the defaults have, the copies in /etc are readable by the alloy group.
    for path in [DEFAULT_CONFIG, DEFAULT_ENVIRONMENT] {
        let disk = root.join(path.trim_start_matches('/'));
        std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Ignition wrote a secret before the alloy group existed: 0640 root:root, and one 0600.
    let etc_alloy = root.join("etc/alloy");
    std::fs::create_dir_all(&etc_alloy).unwrap();
    let shared = etc_alloy.join("remote-write.password");
    let private = etc_alloy.join("root-only.key");
    for (path, mode) in [(&shared, 0o640), (&private, 0o600)] {
        std::fs::write(path, "secret\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    setup(&root);
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with("alloy:x:")),
        "{passwd}"
    );
    let alloy = gid(&root, "alloy");
    assert_ne!(alloy, 0);
    // Members of the journal's and adm's groups, as the .deb makes them.
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    for name in ["systemd-journal", "adm"] {
        let line = group
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} group:\n{group}"));
        assert!(
            line.ends_with(":alloy") || line.contains(",alloy"),
            "{line}"
        );
    }

    let config = root.join("etc/alloy/config.alloy");
    let environment = root.join("etc/default/alloy");
    assert_eq!(
        std::fs::read(&config).unwrap(),
        ext4::cat(&image, DEFAULT_CONFIG)
    );
    assert_eq!(
        std::fs::read(&environment).unwrap(),
        ext4::cat(&image, DEFAULT_ENVIRONMENT)
    );
    // Root writes, the alloy group reads, nobody else does.
    assert_eq!(owner_mode(&etc_alloy), (0o750, 0, alloy));
    for path in [&config, &environment, &shared] {
        assert_eq!(owner_mode(path), (0o640, 0, alloy), "{}", path.display());
    }
    assert_eq!(owner_mode(&private), (0o600, 0, alloy));
    assert!(std::fs::read_to_string(&environment)
        .unwrap()
        .contains("CONFIG_FILE=\"/etc/alloy/config.alloy\""));

    // The operator edits, and writes the config 0600; the next start's setup leaves the edit
    // alone, makes it readable by Alloy again, and restores only what was deleted.
    let edited = "// mine\nlogging {\n  level = \"debug\"\n}\n";
    std::fs::write(&config, edited).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&environment).unwrap();
    setup(&root);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert_eq!(owner_mode(&config), (0o640, 0, alloy));
    assert_eq!(
        std::fs::read(&environment).unwrap(),
        ext4::cat(&image, DEFAULT_ENVIRONMENT)
    );
    assert_eq!(owner_mode(&environment), (0o640, 0, alloy));
}
