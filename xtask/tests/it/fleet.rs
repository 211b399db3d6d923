//! `cargo xtask sysupdate` and `cargo xtask butane`: what they print parses (YAML by a real YAML
//! parser, the transfer file as systemd reads it), and the pinned hash is the built image's.

use std::process::Command;

use xtask::host::unit_file::{self, Entry};
use xtask_testkit::fixture::{self, Release};
use xtask_testkit::http::{Answer, Server};
use xtask_testkit::mirror::Mirror;
use xtask_testkit::{Run, Workspace};

use crate::support::{parse_yaml, workspace, IMAGE, XTASK};

fn xtask(args: &[&str]) -> Run {
    Run::from_command(
        Command::new(XTASK)
            .args(args)
            .env_remove("SYSEXT_BASE_URL")
            .env_remove("GITHUB_TOKEN")
            .env_remove("GITHUB_API_URL"),
    )
}

/// `[Section]` key=value triples, as systemd reads a transfer file: the library's own reader.
fn ini(text: &str) -> Vec<Entry> {
    unit_file::entries(text).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
}

fn value<'a>(entries: &'a [Entry], section: &str, key: &str) -> &'a str {
    unit_file::value(entries, section, key)
        .unwrap_or_else(|| panic!("[{section}] {key} not once in {entries:?}"))
}

/// Builds the fixture release with the real `xtask build`, returning the workspace.
fn built() -> Workspace {
    let mirror = Mirror::start();
    mirror.add_release(&Release::new("1.10.2"));
    let ws = workspace();
    ws.build(&mirror.base_url, "1.10.2", &[]).assert_ok();
    ws
}

fn image_hash(ws: &Workspace) -> String {
    format!(
        "sha256-{}",
        fixture::sha256_hex(&std::fs::read(ws.image(IMAGE)).unwrap())
    )
}

fn file<'a>(config: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    config["storage"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no file {path} in {config:#}"))
}

#[test]
fn butane_pins_the_built_image_by_its_hash_and_links_it() {
    let ws = built();
    let dist = ws.out.to_str().unwrap();
    let run = xtask(&[
        "butane",
        "1.10.2",
        "--dist",
        dist,
        "--base-url",
        "https://images.example/alloy/",
    ]);
    run.assert_ok();
    let config = parse_yaml(&run.stdout);
    assert_eq!(config["variant"], "flatcar");
    assert_eq!(config["version"], "1.0.0");
    let files = config["storage"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{config:#}");
    let image = file(&config, "/opt/extensions/alloy/alloy-1.10.2-amd64.raw");
    assert_eq!(image["mode"], 0o644);
    assert_eq!(
        image["contents"]["source"],
        "https://images.example/alloy/alloy-1.10.2-amd64.raw"
    );
    assert_eq!(
        image["contents"]["verification"]["hash"],
        serde_json::Value::String(image_hash(&ws))
    );
    let links = config["storage"]["links"].as_array().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["path"], "/etc/extensions/alloy.raw");
    assert_eq!(
        links[0]["target"],
        "/opt/extensions/alloy/alloy-1.10.2-amd64.raw"
    );
    assert_eq!(links[0]["hard"], false);
    assert!(config.get("systemd").is_none(), "{config:#}");
}

#[test]
fn butane_with_sysupdate_adds_the_transfer_timer_and_refresh() {
    let ws = built();
    let bucket = Server::start();
    // Signatures published: Verify=yes without being told.
    bucket.answer("/alloy/SHA256SUMS.gpg", Answer::ok(vec![0x88u8, 0x75]));
    let base = format!("{}/alloy", bucket.url);
    // Any binary keyring: it is carried as is, base64 in a data: URL.
    let keyring = ws.tmp.path().join("pubring.gpg");
    std::fs::write(&keyring, [0x99u8, 0x00, 0x33, 0x04, 0xff, 0x10, 0x7f]).unwrap();
    let keyring_arg = keyring.to_str().unwrap();
    let run = xtask(&[
        "butane",
        "1.10.2",
        "--dist",
        ws.out.to_str().unwrap(),
        "--base-url",
        &base,
        "--sysupdate",
        "--keyring",
        keyring_arg,
    ]);
    run.assert_ok();
    let config = parse_yaml(&run.stdout);
    let encoded = Command::new("base64")
        .args(["-w0", keyring_arg])
        .output()
        .unwrap();
    assert_eq!(
        file(&config, "/etc/systemd/import-pubring.gpg")["contents"]["source"],
        serde_json::Value::String(format!(
            "data:;base64,{}",
            String::from_utf8(encoded.stdout).unwrap()
        ))
    );
    assert_eq!(
        file(&config, "/opt/extensions/alloy/alloy-1.10.2-amd64.raw")["contents"]["verification"]
            ["hash"],
        serde_json::Value::String(image_hash(&ws))
    );

    let transfer = file(&config, "/etc/sysupdate.alloy.d/alloy.transfer")["contents"]["inline"]
        .as_str()
        .unwrap()
        .to_string();
    // systemd 252 reads only *.conf, 257+ prefers *.transfer: the same text under both names.
    assert_eq!(
        file(&config, "/etc/sysupdate.alloy.d/alloy.conf")["contents"]["inline"],
        serde_json::Value::String(transfer.clone())
    );
    let entries = ini(&transfer);
    assert_eq!(value(&entries, "Transfer", "Verify"), "yes");
    assert_eq!(value(&entries, "Source", "Type"), "url-file");
    assert_eq!(value(&entries, "Source", "Path"), format!("{base}/"));
    let pattern = value(&entries, "Source", "MatchPattern");
    assert_eq!(pattern.replace("@v", "1.10.2"), IMAGE);
    assert!(ws.image(&pattern.replace("@v", "1.10.2")).exists());
    assert_eq!(value(&entries, "Target", "Path"), "/opt/extensions/alloy");
    assert_eq!(
        value(&entries, "Target", "CurrentSymlink"),
        "/etc/extensions/alloy.raw"
    );
    // Nothing for the host's own systemd-sysupdate.service: alloy has its own units.
    let paths: Vec<&str> = config["storage"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        !paths.iter().any(|p| p.starts_with("/etc/sysupdate.d/")),
        "{paths:?}"
    );

    let units = config["systemd"]["units"].as_array().unwrap();
    let names: Vec<&str> = units.iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alloy-sysupdate.service", "alloy-sysupdate.timer"]);
    let timer = &units[1];
    assert_eq!(timer["enabled"], true);
    assert_eq!(
        value(
            &ini(timer["contents"].as_str().unwrap()),
            "Install",
            "WantedBy"
        ),
        "timers.target"
    );
    let service = units[0]["contents"].as_str().unwrap();
    // systemd joins lines that end in a backslash.
    let service_entries = ini(&service.replace("\\\n", ""));
    let start = value(&service_entries, "Service", "ExecStart");
    for step in [
        "/usr/lib/systemd/systemd-sysupdate -C alloy update &&",
        "systemd-sysext refresh && systemctl daemon-reload && systemctl try-restart alloy.service;",
    ] {
        assert!(start.contains(step), "{step} missing from {service}");
    }
    // Only the signature was asked for; the hash came from the local build.
    let paths: Vec<String> = bucket.log().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, ["/alloy/SHA256SUMS.gpg"]);

    // An armored keyring would not be read by systemd-sysupdate's gpg call: refused.
    std::fs::write(&keyring, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n").unwrap();
    xtask(&[
        "butane",
        "1.10.2",
        "--dist",
        ws.out.to_str().unwrap(),
        "--base-url",
        &base,
        "--sysupdate",
        "--keyring",
        keyring_arg,
    ])
    .assert_fails_with(&["is armored", "gpg --dearmor"]);
}

#[test]
fn butane_reads_the_hash_from_the_bucket_when_not_built_here() {
    let ws = built();
    let bucket = Server::start();
    let sha256 = std::fs::read(ws.image(&format!("{IMAGE}.sha256"))).unwrap();
    bucket.answer(&format!("/{IMAGE}.sha256"), Answer::ok(sha256));
    let empty = tempfile::tempdir().unwrap();
    let run = xtask(&[
        "butane",
        "1.10.2",
        "--dist",
        empty.path().to_str().unwrap(),
        "--base-url",
        &bucket.url,
    ]);
    run.assert_ok();
    let config = parse_yaml(&run.stdout);
    assert_eq!(
        file(&config, "/opt/extensions/alloy/alloy-1.10.2-amd64.raw")["contents"]["verification"]
            ["hash"],
        serde_json::Value::String(image_hash(&ws))
    );

    // Neither built nor published: says so, and how to fix it.
    let run = xtask(&[
        "butane",
        "1.10.2",
        "--arch",
        "arm64",
        "--dist",
        empty.path().to_str().unwrap(),
        "--base-url",
        &bucket.url,
    ]);
    run.assert_fails_with(&[
        "alloy-1.10.2-arm64.raw is neither built in",
        "cargo xtask build 1.10.2",
        "404",
    ]);
    assert!(run.stdout.is_empty());
}

#[test]
fn the_rc_channel_reads_its_own_folder_and_an_rc_needs_it() {
    let bucket = Server::start();
    bucket.answer("/rc/SHA256SUMS.gpg", Answer::ok(vec![0x88u8]));
    // sysupdate --channel rc: the rc folder's index, whose signature decides Verify=.
    let run = xtask(&["sysupdate", "--channel", "rc", "--base-url", &bucket.url]);
    run.assert_ok();
    let entries = ini(&run.stdout);
    assert_eq!(
        value(&entries, "Source", "Path"),
        format!("{}/rc/", bucket.url)
    );
    assert_eq!(value(&entries, "Transfer", "Verify"), "yes");
    // The default is stable: the bucket's root, whose index is not signed here.
    let run = xtask(&["sysupdate", "--base-url", &bucket.url]);
    run.assert_ok();
    let entries = ini(&run.stdout);
    assert_eq!(
        value(&entries, "Source", "Path"),
        format!("{}/", bucket.url)
    );
    assert_eq!(value(&entries, "Transfer", "Verify"), "no");
    xtask(&["sysupdate", "--channel", "beta", "--base-url", &bucket.url])
        .assert_fails_with(&["beta", "stable", "rc"]);

    // butane: an rc image comes from rc/, and a host kept up to date on it follows rc.
    let rc_name = "alloy-1.11.0-rc.1-amd64.raw";
    let digest = "ab".repeat(32);
    bucket.answer(
        &format!("/rc/{rc_name}.sha256"),
        Answer::ok(format!("{digest}  {rc_name}\n")),
    );
    let empty = tempfile::tempdir().unwrap();
    let dist = empty.path().to_str().unwrap();
    let run = xtask(&[
        "butane",
        "1.11.0-rc.1",
        "--dist",
        dist,
        "--base-url",
        &bucket.url,
        "--sysupdate",
        "--channel",
        "rc",
        "--verify",
        "no",
    ]);
    run.assert_ok();
    let config = parse_yaml(&run.stdout);
    let image = file(&config, &format!("/opt/extensions/alloy/{rc_name}"));
    assert_eq!(
        image["contents"]["source"],
        serde_json::Value::String(format!("{}/rc/{rc_name}", bucket.url))
    );
    assert_eq!(
        image["contents"]["verification"]["hash"],
        serde_json::Value::String(format!("sha256-{digest}"))
    );
    let transfer = file(&config, "/etc/sysupdate.alloy.d/alloy.transfer")["contents"]["inline"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        value(&ini(&transfer), "Source", "Path"),
        format!("{}/rc/", bucket.url)
    );
    // An rc on a host that follows stable would hold it there for good: refused, saying why.
    xtask(&[
        "butane",
        "1.11.0-rc.1",
        "--dist",
        dist,
        "--base-url",
        &bucket.url,
        "--sysupdate",
        "--verify",
        "no",
    ])
    .assert_fails_with(&["release candidate", "--channel rc"]);
}

#[test]
fn sysupdate_sets_verify_from_what_the_bucket_publishes() {
    let bucket = Server::start();
    let run = xtask(&["sysupdate", "--arch", "arm64", "--base-url", &bucket.url]);
    run.assert_ok();
    let entries = ini(&run.stdout);
    assert_eq!(value(&entries, "Transfer", "Verify"), "no");
    assert_eq!(
        value(&entries, "Source", "MatchPattern"),
        "alloy-@v-arm64.raw"
    );
    assert_eq!(
        value(&entries, "Target", "MatchPattern"),
        "alloy-@v-arm64.raw"
    );
    assert_eq!(
        value(&entries, "Source", "Path"),
        format!("{}/", bucket.url)
    );

    bucket.answer("/SHA256SUMS.gpg", Answer::ok(vec![0x88u8]));
    let run = xtask(&["sysupdate", "--base-url", &bucket.url]);
    run.assert_ok();
    assert_eq!(value(&ini(&run.stdout), "Transfer", "Verify"), "yes");
    // Told explicitly: no question asked.
    let before = bucket.log().len();
    let run = xtask(&["sysupdate", "--base-url", &bucket.url, "--verify", "no"]);
    run.assert_ok();
    assert_eq!(value(&ini(&run.stdout), "Transfer", "Verify"), "no");
    assert_eq!(bucket.log().len(), before);

    xtask(&["sysupdate", "--base-url", "http://example.com"])
        .assert_fails_with(&["refusing plain http://"]);
}

#[test]
fn butane_help_says_the_keyring_replaces_the_vendor_keyring() {
    let run = xtask(&["butane", "--help"]);
    run.assert_ok();
    let help = run.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("REPLACES the vendor keyring /usr/lib/systemd/import-pubring.gpg"),
        "{}",
        run.stdout
    );
    assert!(help.contains("--channel"), "{}", run.stdout);
}
