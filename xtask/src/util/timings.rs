//! Where a command's time went, phase by phase, and the process's peak memory: what the bench
//! reads from `build --timings`.

use std::time::Instant;

/// Where a build's time went, returned to the caller (and written with `--timings`).
#[derive(Debug, Default)]
pub struct Timings {
    /// Wall seconds per phase, summed over architectures, in the order phases first ran.
    pub phases: Vec<(&'static str, f64)>,
    /// Bytes of file content staged, summed over architectures.
    pub staged_bytes: u64,
}

impl Timings {
    /// Runs `work` as (part of) `phase`, adding its wall time to the phase's total.
    pub fn phase<T>(&mut self, phase: &'static str, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = work();
        let seconds = started.elapsed().as_secs_f64();
        match self.phases.iter_mut().find(|(name, _)| *name == phase) {
            Some((_, total)) => *total += seconds,
            None => self.phases.push((phase, seconds)),
        }
        result
    }

    /// The phases, staged bytes and this process's peak memory so far, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let phases: serde_json::Map<String, serde_json::Value> = self
            .phases
            .iter()
            .map(|(name, seconds)| (name.to_string(), (*seconds).into()))
            .collect();
        serde_json::json!({
            "phases": phases,
            "peak_rss_kib": peak_rss_kib(),
            "staged_bytes": self.staged_bytes,
        })
    }
}

/// This process's peak resident memory so far, in KiB (`VmHWM` in /proc/self/status).
fn peak_rss_kib() -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_and_report_as_json() {
        let mut timings = Timings::default();
        timings.phase("test-phase", || {
            std::thread::sleep(std::time::Duration::from_millis(5))
        });
        assert_eq!(timings.phase("test-phase", || 7), 7);
        timings.staged_bytes = 42;
        let json = timings.to_json();
        assert!(
            json["phases"]["test-phase"].as_f64().unwrap() >= 0.005,
            "{json}"
        );
        assert!(json["peak_rss_kib"].as_u64().unwrap() > 0, "{json}");
        assert_eq!(json["staged_bytes"], 42);
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
