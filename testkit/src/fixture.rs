//! Fixture releases made by the tests: a real small ELF that behaves like Alloy
//! (`testkit/fixtures/fake-alloy.c`), zipped the way Grafana zips it, with a SHA256SUMS beside it.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

pub const EM_AARCH64: u16 = 183;

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/fake-alloy.c");

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a fixture Alloy behaves when it is run: like Alloy, or like a release that does not come
/// up on an existing configuration (`testkit/fixtures/fake-alloy.c` says what each does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Behaviour {
    Works,
    /// `alloy run` exits 1 at once, and `alloy validate` fails the same way: a component the
    /// configuration uses was removed.
    ExitsAtRun,
    /// `alloy run` exits 1 at once, while `alloy validate` passes.
    ExitsAfterValidating,
}

impl Behaviour {
    /// The compiler flag that builds it.
    fn define(self) -> Option<&'static str> {
        match self {
            Behaviour::Works => None,
            Behaviour::ExitsAtRun => Some("-DFAKE_ALLOY_EXITS_AT_RUN"),
            Behaviour::ExitsAfterValidating => Some("-DFAKE_ALLOY_EXITS_AFTER_VALIDATE"),
        }
    }
}

/// A compiled fake Alloy for each (version, behaviour).
type Compiled = HashMap<(String, Behaviour), Vec<u8>>;

/// The fake Alloy of each version and behaviour, compiled once per test process (a fifth of a
/// second each).
static COMPILED: Mutex<Option<Compiled>> = Mutex::new(None);

/// The fake Alloy, compiled statically for this (x86-64) host. For arm64 the ELF header says
/// AArch64: enough for the architecture checks, which is all an arm64 fixture is used for here.
pub fn fake_alloy(version: &str, arch: &str) -> Vec<u8> {
    fake_alloy_that(version, arch, Behaviour::Works)
}

/// [`fake_alloy`] that behaves as `behaviour` says when run.
pub fn fake_alloy_that(version: &str, arch: &str, behaviour: Behaviour) -> Vec<u8> {
    let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    let mut elf = compiled
        .get_or_insert_with(HashMap::new)
        .entry((version.to_string(), behaviour))
        .or_insert_with(|| compile(version, behaviour))
        .clone();
    assert_eq!(&elf[..4], b"\x7fELF");
    match arch {
        "amd64" => {}
        "arm64" => elf[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes()),
        other => panic!("no fixture for {other}"),
    }
    elf
}

fn compile(version: &str, behaviour: Behaviour) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alloy");
    let status = Command::new("cc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&out)
        .arg(format!("-DALLOY_VERSION=\"{version}\""))
        .arg("-DALLOY_PLATFORM=\"linux/amd64\"")
        .args(behaviour.define())
        .arg(Path::new(SOURCE))
        .status()
        .expect("running cc (install gcc and libc6-dev: bash scripts/install-deps.sh --test)");
    assert!(status.success(), "compiling {SOURCE} ({behaviour:?})");
    std::fs::read(&out).unwrap()
}

/// A zip holding the given entries (name, bytes, unix mode), deflated like Grafana's.
pub fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes, mode) in entries {
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode)
            .last_modified_time(zip::DateTime::default());
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// Writes a zip at `path` whose one entry, `alloy-linux-amd64`, holds `content`, with the zip
/// crate's default options: the plainest release zip, for tests of the reader itself.
pub fn write_binary_zip(path: &Path, content: &[u8]) {
    let mut writer = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    writer
        .start_file("alloy-linux-amd64", SimpleFileOptions::default())
        .unwrap();
    writer.write_all(content).unwrap();
    writer.finish().unwrap();
}

/// A `sha256sum` line for every asset but SHA256SUMS itself.
pub fn sha256sums(assets: &BTreeMap<String, Vec<u8>>) -> String {
    assets
        .iter()
        .filter(|(name, _)| name.as_str() != "SHA256SUMS")
        .map(|(name, bytes)| format!("{}  {name}\n", sha256_hex(bytes)))
        .collect()
}

/// The assets of a fixture release: both Linux zips and SHA256SUMS.
#[derive(Clone)]
pub struct Release {
    pub version: String,
    pub assets: BTreeMap<String, Vec<u8>>,
    pub behaviour: Behaviour,
}

impl crate::mirror::Assets for Release {
    fn version(&self) -> &str {
        &self.version
    }
    fn assets(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.assets
    }
}

impl Release {
    pub fn new(version: &str) -> Release {
        Release::that(version, Behaviour::Works)
    }

    /// A release whose Alloy behaves as `behaviour` says when run.
    pub fn that(version: &str, behaviour: Behaviour) -> Release {
        let mut release = Release {
            version: version.to_string(),
            assets: BTreeMap::new(),
            behaviour,
        };
        for arch in ["amd64", "arm64"] {
            let binary = fake_alloy_that(version, arch, behaviour);
            // Since v1.13 the zipped binary may lack its execute bit: make the fixture like that.
            let zip = zip_of(&[(&format!("alloy-linux-{arch}"), &binary, 0o644)]);
            release
                .assets
                .insert(format!("alloy-linux-{arch}.zip"), zip);
        }
        release
            .assets
            .insert("other-asset.deb".into(), b"not used".to_vec());
        release.refresh_sums();
        release
    }

    pub fn refresh_sums(&mut self) {
        let sums = sha256sums(&self.assets);
        self.assets.insert("SHA256SUMS".into(), sums.into_bytes());
    }

    pub fn binary(&self, arch: &str) -> Vec<u8> {
        fake_alloy_that(&self.version, arch, self.behaviour)
    }

    /// Replaces a zip, keeping SHA256SUMS true to it.
    pub fn with_zip(mut self, arch: &str, zip: Vec<u8>) -> Release {
        self.assets.insert(format!("alloy-linux-{arch}.zip"), zip);
        self.refresh_sums();
        self
    }

    /// Replaces the zip of `arch` with one holding `bytes` as its binary (mode 0755), keeping
    /// SHA256SUMS true to it.
    pub fn with_binary(self, arch: &str, bytes: &[u8]) -> Release {
        let zip = zip_of(&[(&format!("alloy-linux-{arch}"), bytes, 0o755)]);
        self.with_zip(arch, zip)
    }
}
