//! `cargo xtask bench`: how fast `cargo xtask build` is, and how large its images are, next to
//! the plain-tools pipeline, on a generated Alloy-sized release served on loopback.
//!
//! Contenders run alternately (one run of each, then again), so that a busy moment of the
//! machine does not land on one contender only. The xtask measured is this very binary
//! (target/debug/xtask as `cargo xtask` builds it), run directly, not through cargo.

mod audit;
mod measure;
mod release;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use clap::Parser;
use xtask::image::ImageFormat;
use xtask::util::progress::step;
use xtask::util::tools;

const VERSION: &str = "1.10.2";
const IMAGE: &str = "alloy-1.10.2-amd64.raw";
const PLAIN_PIPELINE: &str = include_str!("plain-pipeline.sh");
const PHASES: [&str; 5] = ["download", "verify", "extract", "pack", "hash"];

/// Measure `cargo xtask build` (each format, cold and warm cache) against the plain-tools
/// pipeline (curl, unzip, mkfs.ext4 or mksquashfs -comp xz, sha256sum), on a generated
/// Alloy-sized release served on loopback. Prints a table; writes results.md and results.json
#[derive(Parser, Debug)]
#[command(name = "cargo xtask bench", bin_name = "cargo xtask bench")]
pub struct BenchOptions {
    /// Something else to measure than the build
    #[command(subcommand)]
    pub other: Option<Other>,

    #[command(flatten)]
    pub settings: Settings,

    /// The xtask binary to measure [default: the one that ran `cargo xtask bench`, else the
    /// one beside this binary]
    #[arg(long, env = xtask::runtime::XTASK_ENV, value_name = "PATH")]
    pub xtask: Option<PathBuf>,
}

/// What the build's benchmark and the audit's take alike.
#[derive(clap::Args, Debug)]
pub struct Settings {
    /// Size of the generated Alloy binary, in MB (Alloy's is ~420)
    #[arg(long, default_value_t = 420, value_name = "MB")]
    pub size_mb: u64,

    /// Runs of each thing measured (the table shows medians)
    #[arg(long, default_value_t = 3)]
    pub runs: usize,

    /// Where to write the results (.md and .json) [default: target/bench]
    #[arg(long = "out", value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

impl Settings {
    /// Writes `results` to `<name>.json` and `markdown` to `<name>.md` in the output directory.
    fn write(&self, name: &str, results: &Value, markdown: &str) -> anyhow::Result<()> {
        let out_dir = self
            .out_dir
            .clone()
            .unwrap_or_else(|| xtask::project_root().join("target").join("bench"));
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        write_whole(
            &out_dir.join(format!("{name}.json")),
            &(serde_json::to_string_pretty(results)? + "\n"),
        )?;
        write_whole(&out_dir.join(format!("{name}.md")), markdown)?;
        println!("written: {0}/{name}.md, {0}/{name}.json", out_dir.display());
        Ok(())
    }
}

/// Where generated releases (and the audit's images) are kept between runs.
fn bench_cache() -> anyhow::Result<PathBuf> {
    let cache = xtask::project_root().join("target").join("bench-cache");
    std::fs::create_dir_all(&cache)?;
    Ok(cache)
}

/// What else the benchmark measures.
#[derive(clap::Subcommand, Debug)]
pub enum Other {
    Audit(audit::AuditOptions),
}

fn main() -> std::process::ExitCode {
    let mut options = BenchOptions::parse();
    xtask::runtime::exit_code(match options.other.take() {
        Some(Other::Audit(audit)) => {
            find_xtask(&options).and_then(|xtask| audit::run(audit, &xtask))
        }
        None => run(options),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    /// `xtask build --format F` with an empty download cache.
    Cold(ImageFormat),
    /// `xtask build` (ext4) with an empty cache, filled by the real `debugfs -n -w` from the
    /// binary inflated to disk instead of in process: the same bytes, the choice it measures.
    ColdDebugfs,
    /// `xtask build` (ext4) with the zip already in the cache.
    Warm,
    /// The shell pipeline making ext4 (`mkfs.ext4 -d`) or squashfs (`mksquashfs -comp xz`).
    Plain(ImageFormat),
}

impl Contender {
    fn name(self) -> String {
        match self {
            Contender::Cold(format) => format!("xtask cold {format}"),
            Contender::ColdDebugfs => "xtask cold ext4 (debugfs -n)".into(),
            Contender::Warm => "xtask warm ext4".into(),
            Contender::Plain(ImageFormat::Squashfs) => "plain squashfs (xz)".into(),
            Contender::Plain(format) => format!("plain {format}"),
        }
    }

    fn is_xtask(self) -> bool {
        !matches!(self, Contender::Plain(_))
    }
}

const CONTENDERS: [Contender; 7] = [
    Contender::Cold(ImageFormat::Ext4),
    Contender::ColdDebugfs,
    Contender::Warm,
    Contender::Plain(ImageFormat::Ext4),
    Contender::Cold(ImageFormat::Squashfs),
    Contender::Plain(ImageFormat::Squashfs),
    Contender::Cold(ImageFormat::Erofs),
];

/// One measured run.
#[derive(Clone, Debug)]
struct Sample {
    measured: measure::Measured,
    /// The xtask process's own peak memory (VmHWM), from its timings file.
    self_rss_kib: Option<u64>,
    /// Bytes of file content xtask staged (from its timings file).
    staged_bytes: Option<u64>,
    image_bytes: u64,
    phases: BTreeMap<String, f64>,
}

pub fn run(options: BenchOptions) -> anyhow::Result<()> {
    let settings = &options.settings;
    if settings.runs == 0 || settings.size_mb == 0 {
        bail!("--runs and --size-mb must be at least 1");
    }
    let xtask = find_xtask(&options)?;
    let cache = bench_cache()?;
    let release = release::generate(&cache, settings.size_mb)?;
    let bench = Bench::prepare(xtask, &cache, &release)?;
    let (samples, floors) = bench.measure(settings, &release)?;

    // What xtask staged: the binary, its metadata and the service files.
    let staged_bytes = samples
        .values()
        .flatten()
        .find_map(|s| s.staged_bytes)
        .context("no xtask run reported its staged bytes")?;
    let results = summarize(settings, &release, staged_bytes, floors, &samples);
    let markdown = markdown(&results);
    println!("\n{markdown}");
    settings.write("results", &results, &markdown)
}

/// Every tool the contenders need, and the xtask binary to measure: the one `cargo xtask` runs
/// (our sibling in the target directory) unless told otherwise.
fn find_xtask(options: &BenchOptions) -> anyhow::Result<PathBuf> {
    let mut needed: Vec<tools::Tool> = vec![tools::DEBUGFS];
    for format in ImageFormat::ALL {
        needed.extend_from_slice(format.tools());
    }
    tools::preflight(&xshell::Shell::new()?, &needed)?;
    for tool in ["curl", "unzip", "sha256sum", "bash"] {
        which(tool)?;
    }
    let xtask = match &options.xtask {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("finding the xtask binary")?
            .with_file_name("xtask"),
    };
    if !xtask.is_file() {
        bail!(
            "{} is not built: run `cargo build -p xtask` first (cargo xtask bench does)",
            xtask.display()
        );
    }
    Ok(xtask)
}

/// What every run shares: the binary measured, the generated release on a loopback mirror, the
/// plain pipeline's script, and the warm contender's cache, filled once before measuring.
struct Bench {
    xtask: PathBuf,
    _mirror: xtask_testkit::mirror::Mirror,
    base_url: String,
    work: tempfile::TempDir,
    script: PathBuf,
    warm_cache: PathBuf,
}

impl Bench {
    fn prepare(
        xtask: PathBuf,
        cache: &Path,
        release: &release::GeneratedRelease,
    ) -> anyhow::Result<Bench> {
        let mirror = xtask_testkit::mirror::Mirror::start();
        // Streamed from disk: a zip held in our memory would count in every child's peak RSS,
        // since a child is forked from us before it executes.
        for name in ["alloy-linux-amd64.zip", "SHA256SUMS"] {
            mirror.add_file(VERSION, name, &release.dir.join(name));
        }
        let base_url = mirror.base_url.clone();
        let work = tempfile::Builder::new()
            .prefix("bench-work-")
            .tempdir_in(cache)?;
        let script = work.path().join("plain-pipeline.sh");
        std::fs::write(&script, PLAIN_PIPELINE)?;
        let warm_cache = work.path().join("warm-cache");
        step("Filling the cache for the warm build");
        let setup = work.path().join("setup");
        std::fs::create_dir_all(&setup)?;
        xtask_command(&xtask, &base_url, &warm_cache, &setup, ImageFormat::Ext4)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running the warm-up build")?
            .success()
            .then_some(())
            .context("the warm-up build failed")?;
        std::fs::remove_dir_all(&setup)?;
        Ok(Bench {
            xtask,
            _mirror: mirror,
            base_url,
            work,
            script,
            warm_cache,
        })
    }

    /// Every contender `--runs` times, alternating, with the floors measured in each
    /// round; samples by contender name.
    fn measure(
        self,
        settings: &Settings,
        release: &release::GeneratedRelease,
    ) -> anyhow::Result<(BTreeMap<String, Vec<Sample>>, Floors)> {
        let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
        let mut inflate_floor = Vec::new();
        let mut hash_floor = Vec::new();
        for round in 1..=settings.runs {
            // The floor a build cannot go below: inflating the zip's binary once, in memory.
            step(format!(
                "Run {round}/{}: inflating the zip once",
                settings.runs
            ));
            inflate_floor.push(inflate_once(&release.dir.join("alloy-linux-amd64.zip"))?);
            hash_floor.push(hash_once(release.binary_size)?);
            for contender in CONTENDERS {
                step(format!(
                    "Run {round}/{}: {} ({} MB)",
                    settings.runs,
                    contender.name(),
                    settings.size_mb
                ));
                match self.sample(contender) {
                    Ok(sample) => samples.entry(contender.name()).or_default().push(sample),
                    Err(error) => {
                        let kept = self.work.keep(); // for the output log the error names
                        return Err(error.context(format!("(kept {})", kept.display())));
                    }
                }
            }
        }
        let floors = Floors {
            inflate_s: median(inflate_floor),
            hash_s: median(hash_floor),
        };
        Ok((samples, floors))
    }

    /// One run of `contender`, in a directory removed afterwards.
    fn sample(&self, contender: Contender) -> anyhow::Result<Sample> {
        let dir = self.work.path().join("run");
        let sample = self.run_one(contender, &dir)?;
        xtask::util::progress::detail(format!(
            "{:.2} s wall, {:.2} s CPU, {} image",
            sample.measured.wall_s,
            sample.measured.cpu_s,
            xtask::util::progress::mib(sample.image_bytes)
        ));
        std::fs::remove_dir_all(&dir)?;
        Ok(sample)
    }
}

fn which(tool: &str) -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        bail!("the benchmark needs {tool}: install it with `bash scripts/install-deps.sh --test`");
    }
    Ok(())
}

fn xtask_command(
    xtask: &Path,
    base_url: &str,
    cache: &Path,
    out: &Path,
    format: ImageFormat,
) -> Command {
    let mut command = Command::new(xtask);
    command
        .args(["build", VERSION, "--format", format.name(), "--out-dir"])
        .arg(out)
        .env("XDG_CACHE_HOME", cache)
        .env("ALLOY_RELEASES_URL", base_url)
        .env_remove("SOURCE_DATE_EPOCH");
    command
}

impl Bench {
    /// Runs `contender` once in `dir`, measured as a process, and reads what it reported.
    fn run_one(&self, contender: Contender, dir: &Path) -> anyhow::Result<Sample> {
        let (xtask, script, base_url, warm_cache) =
            (&self.xtask, &self.script, &self.base_url, &self.warm_cache);
        std::fs::create_dir_all(dir)?;
        let log = dir.join("output.log");
        let output = File::create(&log)?;
        let timings = dir.join("timings.json");
        let (mut command, image) = match contender {
            Contender::Plain(format) => {
                let mut command = Command::new("bash");
                command
                    .arg(script)
                    .args([base_url, VERSION])
                    .arg(dir)
                    .arg(format.name())
                    .arg(&timings);
                (command, dir.join("alloy.raw"))
            }
            Contender::Cold(format) => {
                let out = dir.join("out");
                let cache = dir.join("cache");
                let mut command = xtask_command(xtask, base_url, &cache, &out, format);
                command.env("ALLOY_SYSEXT_TIMINGS", &timings);
                (command, out.join(IMAGE))
            }
            Contender::ColdDebugfs => {
                let out = dir.join("out");
                let cache = dir.join("cache");
                let mut command = xtask_command(xtask, base_url, &cache, &out, ImageFormat::Ext4);
                command
                    .env("ALLOY_SYSEXT_TIMINGS", &timings)
                    .env("ALLOY_SYSEXT_EXT4_FILL", "debugfs");
                (command, out.join(IMAGE))
            }
            Contender::Warm => {
                let out = dir.join("out");
                let mut command =
                    xtask_command(xtask, base_url, warm_cache, &out, ImageFormat::Ext4);
                command.env("ALLOY_SYSEXT_TIMINGS", &timings);
                (command, out.join(IMAGE))
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        let measured = measure::run(&mut command, &contender.name(), &log)?;
        let image_bytes = std::fs::metadata(&image)
            .with_context(|| format!("{} made no image {}", contender.name(), image.display()))?
            .len();
        let text = std::fs::read_to_string(&timings)
            .with_context(|| format!("reading {}", timings.display()))?;
        let (phases, self_rss_kib, staged_bytes) = if contender.is_xtask() {
            parse_xtask_timings(&text)?
        } else {
            (parse_plain_phases(&text)?, None, None)
        };
        Ok(Sample {
            measured,
            self_rss_kib,
            staged_bytes,
            image_bytes,
            phases,
        })
    }
}

type XtaskTimings = (BTreeMap<String, f64>, Option<u64>, Option<u64>);

/// Reads xtask's `ALLOY_SYSEXT_TIMINGS` file: phase seconds, its own peak memory, staged bytes.
fn parse_xtask_timings(text: &str) -> anyhow::Result<XtaskTimings> {
    let value: Value = serde_json::from_str(text).context("reading xtask's timings")?;
    let phases = value["phases"]
        .as_object()
        .context("timings without phases")?
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect();
    Ok((
        phases,
        value["peak_rss_kib"].as_u64(),
        value["staged_bytes"].as_u64(),
    ))
}

/// Reads the plain pipeline's phase lines: `<phase> <end> <start>` in seconds.
fn parse_plain_phases(text: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut phases = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = match fields[..] {
            [name, end, start] => end
                .parse::<f64>()
                .ok()
                .zip(start.parse::<f64>().ok())
                .map(|(e, s)| (name.to_string(), e - s)),
            _ => None,
        };
        let (name, seconds) = parsed.with_context(|| format!("bad phase line {line:?}"))?;
        *phases.entry(name).or_insert(0.0) += seconds;
    }
    Ok(phases)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Seconds to inflate the zip's one entry into nothing, as `xtask build` inflates it (the same
/// zip crate and zlib-rs): the physical floor of a cold build's non-compression work.
fn inflate_once(zip: &Path) -> anyhow::Result<f64> {
    let started = std::time::Instant::now();
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(File::open(zip)?))?;
    let mut entry = archive.by_index(0)?;
    xtask::util::files::copy_stream(&mut entry, &mut std::io::sink())?;
    Ok(started.elapsed().as_secs_f64())
}

/// What no build can go below, measured in the same run as the builds.
#[derive(Clone, Copy)]
struct Floors {
    /// Inflating the zip's binary once.
    inflate_s: f64,
    /// SHA-256 of the binary's size once, as the build hashes (an ext4 image is the binary and
    /// a little metadata; its hash cannot start before the last block is known, because the
    /// first blocks, the superblock and bitmaps, depend on where the binary's zero blocks are).
    hash_s: f64,
}

/// Seconds to SHA-256 `bytes` bytes once, through the build's own hashing (no file I/O).
fn hash_once(bytes: u64) -> anyhow::Result<f64> {
    let started = std::time::Instant::now();
    xtask::util::checksums::hash_reader(std::io::Read::take(std::io::repeat(0x5a), bytes))?;
    Ok(started.elapsed().as_secs_f64())
}

fn summarize(
    settings: &Settings,
    release: &release::GeneratedRelease,
    staged_bytes: u64,
    floors: Floors,
    samples: &BTreeMap<String, Vec<Sample>>,
) -> Value {
    let mut contenders = Vec::new();
    for contender in CONTENDERS {
        let name = contender.name();
        let runs = &samples[&name];
        let phases: BTreeMap<&str, f64> = PHASES
            .iter()
            .filter(|p| runs.iter().any(|r| r.phases.contains_key(**p)))
            .map(|p| {
                let values = runs
                    .iter()
                    .map(|r| *r.phases.get(*p).unwrap_or(&0.0))
                    .collect();
                (*p, median(values))
            })
            .collect();
        contenders.push(json!({
            "name": name,
            "wall_s": median(runs.iter().map(|r| r.measured.wall_s).collect()),
            "cpu_s": median(runs.iter().map(|r| r.measured.cpu_s).collect()),
            "peak_rss_any_process_kib": runs.iter().map(|r| r.measured.max_rss_kib).max(),
            "peak_rss_xtask_kib": runs.iter().filter_map(|r| r.self_rss_kib).max(),
            "image_bytes": runs.last().map(|r| r.image_bytes),
            "phases_s": phases,
            "runs": runs.iter().map(|r| json!({
                "wall_s": r.measured.wall_s,
                "cpu_s": r.measured.cpu_s,
                "peak_rss_any_process_kib": r.measured.max_rss_kib,
                "peak_rss_xtask_kib": r.self_rss_kib,
                "image_bytes": r.image_bytes,
                "phases_s": r.phases,
            })).collect::<Vec<_>>(),
        }));
    }
    let targets = targets(&contenders, staged_bytes, floors);
    json!({
        "inflate_floor_s": floors.inflate_s,
        "hash_floor_s": floors.hash_s,
        "command": format!("cargo xtask bench --size-mb {} --runs {}", settings.size_mb, settings.runs),
        "binary_bytes": release.binary_size,
        "zip_bytes": release.zip_size,
        "staged_bytes": staged_bytes,
        "runs": settings.runs,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "contenders": contenders,
        "targets": targets,
    })
}

/// The issue's targets, each with the measured value and whether it was met.
fn targets(contenders: &[Value], staged_bytes: u64, floors: Floors) -> Vec<Value> {
    let inflate_s = floors.inflate_s;
    let get = |name: &str| {
        contenders
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let num = |v: &Value, key: &str| number(&v[key]);
    let phase = |v: &Value, p: &str| number(&v["phases_s"][p]);
    let cold = get("xtask cold ext4");
    let debugfs = get("xtask cold ext4 (debugfs -n)");
    let warm = get("xtask warm ext4");
    let plain = get("plain ext4");
    let squashfs = get("xtask cold squashfs");
    let xz = get("plain squashfs (xz)");
    let xtask_rss = contenders
        .iter()
        .filter_map(|c| c["peak_rss_xtask_kib"].as_f64())
        .fold(0.0, f64::max)
        / 1024.0;
    let target = |what: &str, value: f64, limit: f64, unit: &str| json!({"target": what, "value": value, "limit": limit, "unit": unit, "met": value <= limit});
    vec![
        target(
            "cold ext4 build wall time / plain ext4 pipeline",
            num(&cold, "wall_s") / num(&plain, "wall_s"),
            0.5,
            "x",
        ),
        // The floor of a byte-identical ext4 image: its hash cannot start before the last
        // block is inflated (the first blocks depend on where the zero blocks are).
        target(
            "cold ext4 build wall time / (inflating once + hashing the image once)",
            num(&cold, "wall_s") / (inflate_s + floors.hash_s),
            1.35,
            "x",
        ),
        // What the in-process fill (and its unsafe code) must keep earning.
        target(
            "cold ext4 build wall time / the same build filled by debugfs -n",
            num(&cold, "wall_s") / num(&debugfs, "wall_s"),
            0.5,
            "x",
        ),
        target(
            "cold erofs build, all but pack / inflating the zip once",
            (num(&get("xtask cold erofs"), "wall_s") - phase(&get("xtask cold erofs"), "pack"))
                / inflate_s,
            1.3,
            "x",
        ),
        target(
            "cold squashfs build, all but pack / inflating the zip once",
            (num(&squashfs, "wall_s") - phase(&squashfs, "pack")) / inflate_s,
            1.3,
            "x",
        ),
        target(
            "warm ext4 build wall time / plain ext4 pipeline",
            num(&warm, "wall_s") / num(&plain, "wall_s"),
            0.35,
            "x",
        ),
        target(
            "peak memory of the xtask process (any format)",
            xtask_rss,
            64.0,
            "MiB",
        ),
        target(
            "ext4 image / staged bytes",
            num(&cold, "image_bytes") / staged_bytes as f64,
            1.03,
            "x",
        ),
        target(
            "squashfs (zstd) image / xz squashfs image",
            num(&squashfs, "image_bytes") / num(&xz, "image_bytes"),
            1.0,
            "x",
        ),
        target(
            "squashfs (zstd) pack time / xz squashfs pack time",
            phase(&squashfs, "pack") / phase(&xz, "pack"),
            0.6,
            "x",
        ),
    ]
}

/// A number of the results, NaN where it is missing (a table shows it so).
fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// A table's last line: the command that measured it.
fn reproduce(results: &Value) -> String {
    format!(
        "\nReproduce: `{}`\n",
        results["command"].as_str().unwrap_or("")
    )
}

fn mib_of_kib(v: &Value) -> String {
    v.as_f64()
        .map(|k| format!("{:.1}", k / 1024.0))
        .unwrap_or_else(|| "-".into())
}

fn markdown(results: &Value) -> String {
    let mut md = format!(
        "Generated binary: {:.0} MB (deflated zip {:.0} MB, inflated once in {:.2} s, hashed once in {:.2} s); {} runs of each contender, alternating; {} CPUs.\n\n",
        results["binary_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        results["zip_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        number(&results["inflate_floor_s"]),
        number(&results["hash_floor_s"]),
        results["runs"],
        results["cpus"],
    );
    md.push_str("| contender | wall s | CPU s | peak RSS, largest process (MiB) | peak RSS, xtask (MiB) | image (MiB) | download | verify | extract | pack | hash |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for c in results["contenders"].as_array().into_iter().flatten() {
        let phase = |p: &str| {
            c["phases_s"][p]
                .as_f64()
                .map(|s| format!("{s:.2}"))
                .unwrap_or_else(|| "-".into())
        };
        md.push_str(&format!(
            "| {} | {:.2} | {:.2} | {} | {} | {:.1} | {} | {} | {} | {} | {} |\n",
            c["name"].as_str().unwrap_or(""),
            number(&c["wall_s"]),
            number(&c["cpu_s"]),
            mib_of_kib(&c["peak_rss_any_process_kib"]),
            mib_of_kib(&c["peak_rss_xtask_kib"]),
            number(&c["image_bytes"]) / (1024.0 * 1024.0),
            phase("download"),
            phase("verify"),
            phase("extract"),
            phase("pack"),
            phase("hash"),
        ));
    }
    md.push_str("\n| target | measured | limit | met |\n|---|---:|---:|---|\n");
    for t in results["targets"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {:.2} {unit} | {} {unit} | {} |\n",
            t["target"].as_str().unwrap_or(""),
            number(&t["value"]),
            t["limit"],
            if t["met"] == true { "yes" } else { "**no**" },
            unit = t["unit"].as_str().unwrap_or(""),
        ));
    }
    md.push_str(&reproduce(results));
    md
}

/// Writes `path` whole: to a temporary file beside it, then renamed into place.
fn write_whole(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("no parent directory")?;
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    std::fs::write(tmp.path(), text)?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn reads_both_kinds_of_phase_records() {
        let plain = parse_plain_phases("download 10.5 10.0\nverify 11.0 10.5\n").unwrap();
        assert_eq!(plain["download"], 0.5);
        assert_eq!(plain["verify"], 0.5);
        assert!(parse_plain_phases("download soon\n").is_err());
        let (phases, rss, staged) = parse_xtask_timings(
            r#"{"phases": {"pack": 1.5}, "peak_rss_kib": 9000, "staged_bytes": 77}"#,
        )
        .unwrap();
        assert_eq!(phases["pack"], 1.5);
        assert_eq!(rss, Some(9000));
        assert_eq!(staged, Some(77));
    }

    #[test]
    fn targets_compare_the_right_contenders() {
        let c = |name: &str, wall: f64, image: u64, pack: f64, rss: Option<u64>| {
            json!({"name": name, "wall_s": wall, "image_bytes": image,
                   "phases_s": {"pack": pack}, "peak_rss_xtask_kib": rss})
        };
        let contenders = vec![
            c("xtask cold ext4", 4.0, 103, 1.0, Some(10 * 1024)),
            c(
                "xtask cold ext4 (debugfs -n)",
                10.0,
                103,
                7.0,
                Some(10 * 1024),
            ),
            c("xtask warm ext4", 3.0, 103, 1.0, Some(70 * 1024)),
            c("plain ext4", 10.0, 120, 2.0, None),
            c("xtask cold squashfs", 9.0, 20, 3.0, Some(1024)),
            c("plain squashfs (xz)", 9.0, 21, 6.0, None),
            c("xtask cold erofs", 5.0, 50, 1.5, Some(1024)),
        ];
        let floors = Floors {
            inflate_s: 3.5,
            hash_s: 0.5,
        };
        let t = targets(&contenders, 100, floors);
        let met: Vec<bool> = t.iter().map(|t| t["met"] == true).collect();
        assert_eq!(
            met,
            [true, true, true, true, false, true, false, true, true, true],
            "{t:#?}"
        );
        assert_eq!(t[0]["value"], 0.4);
        assert_eq!(t[1]["value"], 1.0, "cold ext4: 4.0 s over 3.5 + 0.5 s");
        assert_eq!(t[2]["value"], 0.4, "cold ext4: 4.0 s over debugfs's 10.0 s");
        assert_eq!(
            t[3]["value"], 1.0,
            "erofs: 5.0 s less 1.5 s packing, over 3.5 s"
        );
        assert_eq!(t[6]["value"], 70.0);
    }
}

#[cfg(test)]
mod cli_tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        BenchOptions::command().debug_assert();
    }
}
