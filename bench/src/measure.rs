//! Running one contender and measuring it: wall time, CPU time and peak memory of the process
//! and everything it waited for, from wait4(2).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::time::Instant;

use anyhow::{bail, Context};

#[derive(Clone, Debug)]
pub struct Measured {
    pub wall_s: f64,
    /// User + system time of the process and of the descendants it waited for.
    pub cpu_s: f64,
    /// The largest peak resident set of the process or any one descendant (the kernel keeps the
    /// maximum, not the sum), in KiB.
    pub max_rss_kib: u64,
    /// Bytes the process and its waited-for descendants sent to storage (block output, counted
    /// when written; a tmpfs counts none).
    pub written_bytes: u64,
}

fn seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// Runs `command` to its end and measures it; fails if it fails, with `log` named for details.
pub fn run(command: &mut Command, what: &str, log: &std::path::Path) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("starting {what}: {command:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our child, not yet reaped (we never call child.wait()); the pointers
        // are to live locals.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error).with_context(|| format!("waiting for {what}"));
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    let status = ExitStatus::from_raw(status);
    if !status.success() {
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{what} failed ({status}); its output is in {}:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Ok(Measured {
        wall_s,
        cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss as u64,
        written_bytes: (usage.ru_oublock as u64).saturating_mul(512),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_child_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        // A grandchild that burns a little CPU and touches 32 MiB.
        let mut command = Command::new("bash");
        command.args([
            "-c",
            "python3 -c 'b = bytearray(32 << 20); s = sum(range(3_000_000))' || head -c 40000000 /dev/zero | tail -c 1 >/dev/null",
        ]);
        let m = run(&mut command, "a test child", &log).unwrap();
        assert!(m.wall_s > 0.0);
        assert!(m.cpu_s > 0.0, "{m:?}");
        assert!(m.max_rss_kib > 1024, "{m:?}");

        let err = run(
            Command::new("false").stderr(std::fs::File::create(&log).unwrap()),
            "false",
            &log,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("false failed"), "{err}");
    }
}
