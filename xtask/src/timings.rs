//! Where a build's time goes: each phase's wall time, summed over architectures, written as
//! JSON to the file named by `ALLOY_SYSEXT_TIMINGS` (the benchmark reads it). Off by default.

use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;

/// The environment variable naming the JSON file to write.
pub const ENV: &str = "ALLOY_SYSEXT_TIMINGS";

static PHASES: Mutex<Vec<(&'static str, f64)>> = Mutex::new(Vec::new());
static STAGED_BYTES: Mutex<u64> = Mutex::new(0);

/// Counts bytes of staged content (summed over architectures), for the benchmark's size ratios.
pub fn add_staged_bytes(bytes: u64) {
    *STAGED_BYTES.lock().unwrap_or_else(|e| e.into_inner()) += bytes;
}

/// Runs `work` as (part of) `phase`, adding its wall time to the phase's total.
pub fn phase<T>(phase: &'static str, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = work();
    let seconds = started.elapsed().as_secs_f64();
    let mut phases = PHASES.lock().unwrap_or_else(|e| e.into_inner());
    match phases.iter_mut().find(|(name, _)| *name == phase) {
        Some((_, total)) => *total += seconds,
        None => phases.push((phase, seconds)),
    }
    result
}

/// This process's peak resident memory so far, in KiB (`VmHWM` in /proc/self/status).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// The phases so far and our own peak memory, as JSON.
pub fn report() -> serde_json::Value {
    let phases = PHASES.lock().unwrap_or_else(|e| e.into_inner());
    let phases: serde_json::Map<String, serde_json::Value> = phases
        .iter()
        .map(|(name, seconds)| (name.to_string(), (*seconds).into()))
        .collect();
    let staged_bytes = *STAGED_BYTES.lock().unwrap_or_else(|e| e.into_inner());
    serde_json::json!({
        "phases": phases,
        "peak_rss_kib": peak_rss_kib(),
        "staged_bytes": staged_bytes,
    })
}

/// Writes [`report`] to `$ALLOY_SYSEXT_TIMINGS`, if set.
pub fn write_if_asked() -> anyhow::Result<()> {
    let Some(path) = std::env::var_os(ENV).filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let text = serde_json::to_string_pretty(&report())?;
    std::fs::write(&path, text + "\n")
        .with_context(|| format!("writing {ENV}={}", std::path::Path::new(&path).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_and_report_as_json() {
        phase("test-phase", || {
            std::thread::sleep(std::time::Duration::from_millis(5))
        });
        let value = phase("test-phase", || 7);
        assert_eq!(value, 7);
        let report = report();
        let seconds = report["phases"]["test-phase"].as_f64().unwrap();
        assert!(seconds >= 0.005, "{report}");
        assert!(report["peak_rss_kib"].as_u64().unwrap() > 0, "{report}");
    }

    #[test]
    fn reads_vm_hwm() {
        assert_eq!(
            parse_vm_hwm("VmPeak:\t  10 kB\nVmHWM:\t    4528 kB\nVmRSS: 1 kB\n"),
            Some(4528)
        );
        assert_eq!(parse_vm_hwm("VmRSS: 1 kB\n"), None);
    }
}
