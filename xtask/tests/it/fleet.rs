//! `cargo xtask sysupdate` and `cargo xtask butane`: what they print parses (YAML by a real YAML
//! parser, the transfer file as systemd reads it), and the pinned hash is the built image's.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use xtask::host::unit_file::{self, Setting as Entry};
use xtask_testkit::fixture;
use xtask_testkit::gpg::TestKey;
use xtask_testkit::http::{Answer, Server};
use xtask_testkit::{checked_output, Run, Workspace};

use crate::support::{built, parse_yaml, sysupdate_build, IMAGE, UNREADABLE_CHECKSUMS, XTASK};

const INSTALLED_IMAGE: &str = "/opt/extensions/alloy/alloy-1.10.2-amd64.raw";
const TRANSFER: &str = "/etc/sysupdate.alloy.d/alloy.transfer";

fn xtask(args: &[&str]) -> Run {
    Run::from_command(
        Command::new(XTASK)
            .args(args)
            .env_remove("SYSEXT_BASE_URL")
            .env_remove("GITHUB_TOKEN")
            .env_remove("GITHUB_API_URL"),
    )
}

/// `xtask butane VERSION --dist DIST --base-url BASE ARGS...`.
fn butane(version: &str, dist: &Path, base: &str, args: &[&str]) -> Run {
    let dist = dist.to_str().unwrap();
    let command = ["butane", version, "--dist", dist, "--base-url", base];
    xtask(&[&command[..], args].concat())
}

/// The Butane config a successful `butane` run printed.
fn config_of(run: &Run) -> Value {
    run.assert_ok();
    parse_yaml(&run.stdout)
}

/// `xtask sysupdate ARGS`, which must succeed: the transfer file it printed.
fn sysupdate(args: &[&str]) -> Vec<Entry> {
    let run = xtask(&[&["sysupdate"], args].concat());
    run.assert_ok();
    ini(&run.stdout)
}

/// `[Section]` key=value triples, as systemd reads a transfer file: the library's own reader.
fn ini(text: &str) -> Vec<Entry> {
    unit_file::settings(text).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
}

fn value<'a>(entries: &'a [Entry], section: &str, key: &str) -> &'a str {
    unit_file::value(entries, section, key)
        .unwrap_or_else(|| panic!("[{section}] {key} not once in {entries:?}"))
}

/// Each (section, key, value) is in `entries`, once.
fn assert_values(entries: &[Entry], expected: &[(&str, &str, &str)]) {
    for (section, key, wanted) in expected {
        assert_eq!(value(entries, section, key), *wanted, "[{section}] {key}");
    }
}

/// The `sha256-<hex>` Ignition checks the workspace's built image against.
fn image_hash(ws: &Workspace) -> String {
    let image = std::fs::read(ws.image(IMAGE)).unwrap();
    format!("sha256-{}", fixture::sha256_hex(&image))
}

fn file<'a>(config: &'a Value, path: &str) -> &'a Value {
    config["storage"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no file {path} in {config:#}"))
}

/// The text of a file the config writes inline.
fn inline<'a>(config: &'a Value, path: &str) -> &'a str {
    file(config, path)["contents"]["inline"].as_str().unwrap()
}

#[test]
fn butane_pins_the_built_image_by_its_hash_and_links_it() {
    let ws = built(&[]);
    let config = config_of(&butane(
        "1.10.2",
        &ws.out,
        "https://images.example/alloy/",
        &[],
    ));
    assert_eq!(config["variant"], "flatcar");
    assert_eq!(config["version"], "1.0.0");
    let files = config["storage"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{config:#}");
    let image = file(&config, INSTALLED_IMAGE);
    assert_eq!(image["mode"], 0o644);
    assert_eq!(
        image["contents"]["source"],
        "https://images.example/alloy/alloy-1.10.2-amd64.raw"
    );
    assert_eq!(image["contents"]["verification"]["hash"], image_hash(&ws));
    let links = config["storage"]["links"].as_array().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["path"], "/etc/extensions/alloy.raw");
    assert_eq!(links[0]["target"], INSTALLED_IMAGE);
    assert_eq!(links[0]["hard"], false);
    assert!(config.get("systemd").is_none(), "{config:#}");
}

#[test]
fn butane_with_sysupdate_adds_the_transfer_timer_and_refresh() {
    let ws = built(&[]);
    let bucket = Server::start();
    // Signatures published: Verify=yes without being told.
    bucket.answer("/alloy/SHA256SUMS.gpg", Answer::ok(vec![0x88u8, 0x75]));
    let base = format!("{}/alloy", bucket.url);
    // Any binary keyring: it is carried as is, base64 in a data: URL.
    let keyring = ws.tmp.path().join("pubring.gpg");
    std::fs::write(&keyring, [0x99u8, 0x00, 0x33, 0x04, 0xff, 0x10, 0x7f]).unwrap();
    let keyring_arg = keyring.to_str().unwrap();
    let with_keyring = ["--sysupdate", "--keyring", keyring_arg];
    let config = config_of(&butane("1.10.2", &ws.out, &base, &with_keyring));
    let encoded = checked_output(Command::new("base64").args(["-w0", keyring_arg]));
    assert_eq!(
        file(&config, "/etc/systemd/import-pubring.gpg")["contents"]["source"],
        format!("data:;base64,{encoded}")
    );
    let image = file(&config, INSTALLED_IMAGE);
    assert_eq!(image["contents"]["verification"]["hash"], image_hash(&ws));

    let transfer = inline(&config, TRANSFER);
    // systemd 252 reads only *.conf, 257+ prefers *.transfer: the same text under both names.
    assert_eq!(
        inline(&config, "/etc/sysupdate.alloy.d/alloy.conf"),
        transfer
    );
    let entries = ini(transfer);
    assert_values(
        &entries,
        &[
            ("Transfer", "Verify", "yes"),
            ("Source", "Type", "url-file"),
            ("Source", "Path", &format!("{base}/")),
            ("Target", "Path", "/opt/extensions/alloy"),
            ("Target", "CurrentSymlink", "/etc/extensions/alloy.raw"),
        ],
    );
    let pattern = value(&entries, "Source", "MatchPattern");
    assert_eq!(pattern.replace("@v", "1.10.2"), IMAGE);
    assert!(ws.image(&pattern.replace("@v", "1.10.2")).exists());
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
    let timer_entries = ini(timer["contents"].as_str().unwrap());
    assert_values(&timer_entries, &[("Install", "WantedBy", "timers.target")]);
    let service = ini(units[0]["contents"].as_str().unwrap());
    let start = value(&service, "Service", "ExecStart");
    assert_eq!(start, "/opt/bin/alloy-sysupdate update");
    // The script it runs, executable, and the record that the installed image is applied.
    let script = file(&config, "/opt/bin/alloy-sysupdate");
    assert_eq!(script["mode"], 0o755);
    assert_eq!(
        inline(&config, "/opt/bin/alloy-sysupdate"),
        xtask::host::sysupdate::UPDATE_SCRIPT_TEXT
    );
    assert_eq!(
        inline(&config, "/var/lib/alloy-sysupdate/applied"),
        format!("{INSTALLED_IMAGE}\n")
    );
    // Only the signature was asked for; the hash came from the local build.
    let paths: Vec<String> = bucket.log().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, ["/alloy/SHA256SUMS.gpg"]);

    // An armored keyring would not be read by systemd-sysupdate's gpg call: refused.
    std::fs::write(&keyring, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n").unwrap();
    butane("1.10.2", &ws.out, &base, &with_keyring)
        .assert_fails_with(&["is armored", "gpg --dearmor"]);
}

#[test]
fn butane_reads_the_hash_from_the_bucket_when_not_built_here() {
    let ws = built(&[]);
    let bucket = Server::start();
    let sha256 = std::fs::read(ws.image(&format!("{IMAGE}.sha256"))).unwrap();
    bucket.answer(&format!("/{IMAGE}.sha256"), Answer::ok(sha256));
    let empty = tempfile::tempdir().unwrap();
    let config = config_of(&butane("1.10.2", empty.path(), &bucket.url, &[]));
    let image = file(&config, INSTALLED_IMAGE);
    assert_eq!(image["contents"]["verification"]["hash"], image_hash(&ws));

    // Neither built nor published: says so, and how to fix it.
    let run = butane("1.10.2", empty.path(), &bucket.url, &["--arch", "arm64"]);
    run.assert_fails_with(&[
        "alloy-1.10.2-arm64.raw is neither built in",
        "cargo xtask build 1.10.2",
        "404",
    ]);
    assert!(run.stdout.is_empty());
}

/// Not built here, the digest Ignition pins comes from the bucket. Whoever can write the bucket,
/// without the signing key, could replace an image and its `.sha256`: every host provisioned
/// from then on would boot their image, and its root units. Given the key, butane takes the
/// digest from the signed SHA256SUMS, and refuses an index the key did not sign.
#[test]
fn butane_pins_only_a_digest_the_signing_key_vouches_for() {
    let ws = built(&[]);
    let (key, stranger) = (TestKey::new("fleet"), TestKey::new("stranger"));
    let bucket = Server::start();
    let sums = std::fs::read(ws.image(&format!("{IMAGE}.sha256"))).unwrap();
    bucket.answer("/SHA256SUMS", Answer::ok(sums.clone()));
    bucket.answer("/SHA256SUMS.gpg", Answer::ok(key.sign(&sums)));
    // The bucket writer's own image, and its .sha256.
    let forged = format!("{}  {IMAGE}\n", "66".repeat(32));
    bucket.answer(&format!("/{IMAGE}.sha256"), Answer::ok(forged.clone()));
    let empty = tempfile::tempdir().unwrap();
    let keyring = ["--sysupdate", "--keyring", key.public.to_str().unwrap()];
    let config = config_of(&butane("1.10.2", empty.path(), &bucket.url, &keyring));
    let image = file(&config, INSTALLED_IMAGE);
    assert_eq!(image["contents"]["verification"]["hash"], image_hash(&ws));

    // The index too, signed by another key: refused, and nothing printed.
    let forged_sums = forged.into_bytes();
    bucket.answer("/SHA256SUMS", Answer::ok(forged_sums.clone()));
    bucket.answer("/SHA256SUMS.gpg", Answer::ok(stranger.sign(&forged_sums)));
    let run = butane("1.10.2", empty.path(), &bucket.url, &keyring);
    run.assert_fails_with(&["SHA256SUMS.gpg", "not a good signature"]);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn the_rc_channel_reads_its_own_folder_and_an_rc_needs_it() {
    let bucket = Server::start();
    bucket.answer("/rc/SHA256SUMS.gpg", Answer::ok(vec![0x88u8]));
    let (root, rc) = (format!("{}/", bucket.url), format!("{}/rc/", bucket.url));
    // sysupdate --channel rc: the rc folder's index, whose signature decides Verify=.
    let entries = sysupdate(&["--channel", "rc", "--base-url", &bucket.url]);
    assert_values(
        &entries,
        &[("Source", "Path", &rc), ("Transfer", "Verify", "yes")],
    );
    // The default is stable: the bucket's root, whose index is not signed here.
    let entries = sysupdate(&["--base-url", &bucket.url, "--verify", "no"]);
    assert_values(
        &entries,
        &[("Source", "Path", &root), ("Transfer", "Verify", "no")],
    );
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
    let unverified = ["--sysupdate", "--verify", "no"];
    let on_rc = [&unverified[..], &["--channel", "rc"]].concat();
    let config = config_of(&butane("1.11.0-rc.1", empty.path(), &bucket.url, &on_rc));
    let image = file(&config, &format!("/opt/extensions/alloy/{rc_name}"));
    assert_eq!(image["contents"]["source"], format!("{rc}{rc_name}"));
    assert_eq!(
        image["contents"]["verification"]["hash"],
        format!("sha256-{digest}")
    );
    assert_values(&ini(inline(&config, TRANSFER)), &[("Source", "Path", &rc)]);
    // An rc on a host that follows stable would hold it there for good: refused, saying why.
    butane("1.11.0-rc.1", empty.path(), &bucket.url, &unverified)
        .assert_fails_with(&["release candidate", "--channel rc"]);
}

/// What an unsigned bucket is refused with: that it is unsigned, what that gives away, how to
/// sign, and how to accept it.
const UNSIGNED: [&str; 5] = [
    "SHA256SUMS.gpg does not exist",
    "root",
    "SYSEXT_GPG_KEY",
    "--keyring",
    "--verify no",
];

#[test]
fn an_unsigned_bucket_is_refused_unless_verify_no_says_so() {
    let bucket = Server::start();
    let unsigned = xtask(&["sysupdate", "--arch", "arm64", "--base-url", &bucket.url]);
    unsigned.assert_fails_with(&UNSIGNED);
    assert!(unsigned.stdout.is_empty(), "{}", unsigned.stdout);
    let entries = sysupdate(&[
        "--arch",
        "arm64",
        "--base-url",
        &bucket.url,
        "--verify",
        "no",
    ]);
    assert_values(
        &entries,
        &[
            ("Transfer", "Verify", "no"),
            ("Source", "MatchPattern", "alloy-@v-arm64.raw"),
            ("Target", "MatchPattern", "alloy-@v-arm64.raw"),
            ("Source", "Path", &format!("{}/", bucket.url)),
        ],
    );

    // butane --sysupdate the same: refused, and nothing printed; with --verify no, Verify=no.
    let ws = built(&[]);
    let refused = butane("1.10.2", &ws.out, &bucket.url, &["--sysupdate"]);
    refused.assert_fails_with(&UNSIGNED);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    let unverified = ["--sysupdate", "--verify", "no"];
    let config = config_of(&butane("1.10.2", &ws.out, &bucket.url, &unverified));
    assert_values(
        &ini(inline(&config, TRANSFER)),
        &[("Transfer", "Verify", "no")],
    );

    // Signed: Verify=yes without being told.
    bucket.answer("/SHA256SUMS.gpg", Answer::ok(vec![0x88u8]));
    let entries = sysupdate(&["--base-url", &bucket.url]);
    assert_values(&entries, &[("Transfer", "Verify", "yes")]);
    let config = config_of(&butane("1.10.2", &ws.out, &bucket.url, &["--sysupdate"]));
    assert_values(
        &ini(inline(&config, TRANSFER)),
        &[("Transfer", "Verify", "yes")],
    );
    // Told explicitly: no question asked.
    let before = bucket.log().len();
    let entries = sysupdate(&["--base-url", &bucket.url, "--verify", "no"]);
    assert_values(&entries, &[("Transfer", "Verify", "no")]);
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

/// Base URLs holding `%`: a percent-encoded blank (`%20`), and `%m%H%b`, which systemd would
/// expand to each host's machine id, hostname and boot id (and so send them to the bucket).
/// The transfer file that `sysupdate` and `butane --sysupdate` write makes the real
/// systemd-sysupdate (252 reading alloy.conf, 257 reading alloy.transfer, with
/// `--definitions=DIR list`) ask the bucket for exactly the path written, and nothing else.
#[test]
fn percent_signs_in_the_base_url_reach_systemd_sysupdate_as_written() {
    let ws = built(&[]);
    for folder in ["a%20b", "%m%H%b"] {
        let bucket = Server::start();
        let base = format!("{}/{folder}", bucket.url);
        let printed = xtask(&["sysupdate", "--base-url", &base, "--verify", "no"]);
        printed.assert_ok();
        let config = config_of(&butane(
            "1.10.2",
            &ws.out,
            &base,
            &["--sysupdate", "--verify", "no"],
        ));
        let written = [
            ("sysupdate", printed.stdout.clone()),
            ("butane --sysupdate", inline(&config, TRANSFER).to_string()),
        ];
        for (writer, transfer) in written {
            for (series, file) in [(252, "alloy.conf"), (257, "alloy.transfer")] {
                let case = format!("{folder}, from {writer}, systemd {series}");
                let definitions = tempfile::tempdir().unwrap();
                std::fs::write(definitions.path().join(file), &transfer).unwrap();
                let asked_before = bucket.log().len();
                // It fails (the bucket answers 404); what it asked for is what counts.
                let listed = Command::new(sysupdate_build(series).join("systemd-sysupdate"))
                    .arg(format!("--definitions={}", definitions.path().display()))
                    .arg("list")
                    .output()
                    .unwrap();
                let asked: Vec<String> = bucket.log()[asked_before..]
                    .iter()
                    .map(|seen| seen.path.clone())
                    .collect();
                assert_eq!(
                    asked,
                    [format!("/{folder}/SHA256SUMS")],
                    "{case}: {}",
                    String::from_utf8_lossy(&listed.stderr)
                );
            }
        }
    }
}

/// A `?` or `#` in the base URL ends its path: hosts would fetch `<base>/SHA256SUMS` from
/// elsewhere. sysupdate, butane and verify refuse it before anything else.
#[test]
fn a_base_url_with_a_query_or_fragment_is_refused() {
    let ws = built(&[]);
    for bad in ["https://b.example/alloy?x=1", "https://b.example/alloy#top"] {
        let runs = [
            ("sysupdate", xtask(&["sysupdate", "--base-url", bad])),
            ("butane", butane("1.10.2", &ws.out, bad, &["--sysupdate"])),
            ("verify", xtask(&["verify", "1.10.2", "--base-url", bad])),
        ];
        for (command, run) in runs {
            run.case(&format!("{command} {bad}"))
                .assert_fails_with(&["would end its path", "SYSEXT_BASE_URL"]);
        }
    }
}

/// The `.sha256` in the dist directory that butane reads the digest from is a FIFO (which
/// would block it) or a link to /dev/zero (which would fill its memory): refused at once,
/// saying what it is. (Under a 30 s deadline and a 2 GiB address-space cap, so that a butane
/// that read it fails rather than hangs or takes the machine's memory.)
#[test]
fn butane_never_reads_a_fifo_or_a_link_as_the_built_checksum() {
    for (name, make, said) in UNREADABLE_CHECKSUMS {
        let dist = tempfile::tempdir().unwrap();
        make(&dist.path().join(format!("{IMAGE}.sha256")));
        let started = std::time::Instant::now();
        let run = Run::from_command(
            Command::new("prlimit")
                .arg(format!("--as={}", 2u64 << 30))
                .args(["--", "timeout", "30", XTASK, "butane", "1.10.2", "--dist"])
                .arg(dist.path())
                .args(["--base-url", "https://images.example/alloy/"])
                .env_remove("SYSEXT_BASE_URL"),
        );
        run.case(name).assert_fails_with(&[said]);
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_secs(10),
            "{name}: {took:?}"
        );
    }
}
