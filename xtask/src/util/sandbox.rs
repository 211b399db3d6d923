//! The processes we start: each dies with us ([`die_with_us`]: a killed xtask leaves no packer
//! or tool running), and a tool run on input we do not trust (a crafted image) runs within
//! bounds ([`run_bounded`]): a cap on its address space, on what it may print and on how long it
//! may take. Whichever runs out, the tool is stopped and the caller is told which.

use std::io::Read;
use std::process::{Child, Command, Output as StdOutput, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How far one run of a tool may go.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Bytes of standard output to read at most.
    pub output: usize,
    /// What output beyond `output` means.
    pub overflow: Overflow,
    /// Wall time before the tool is stopped.
    pub deadline: Duration,
    /// Its address space (`RLIMIT_AS`), in bytes: a crafted input may make a reader allocate
    /// what its tables claim.
    pub memory: u64,
}

/// How to treat output beyond [`Bounds::output`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Keep the first bytes and stop the tool: we asked for a file's head.
    Head,
    /// Fail: the answer is incomplete (a listing of a hostile tree).
    Fail,
}

/// What a tool printed, within bounds.
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// `None` when we stopped it after [`Bounds::output`] bytes of output.
    pub success: Option<bool>,
}

/// Stderr beyond this is drained and dropped.
const STDERR_LIMIT: usize = 64 << 10;

/// How long to wait for the output readers once the tool is gone: only something it started
/// and left running can hold its pipes longer.
const READER_GRACE: Duration = Duration::from_secs(1);

/// How often the tool is polled for its exit, its output and the deadline.
const POLL: Duration = Duration::from_millis(5);

/// Why [`run_bounded`] stopped waiting.
enum Stop {
    Exited(bool),
    Output,
    Deadline,
    Lost(std::io::Error),
}

/// Makes the process `command` starts get SIGKILL when the thread that starts it ends (for our
/// children, started from threads that wait for them, that is when this process ends, however
/// it ends: SIGKILL included). A parent gone before the child could ask fails the spawn.
pub fn die_with_us(command: &mut Command) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let ask = move || {
        // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid are async-signal-safe and touch only the
        // child; nothing is allocated between fork and exec.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec and calls only async-signal-safe functions.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(ask);
    }
}

/// Runs an xshell command to its end, dying with us ([`die_with_us`]): its output, or an error
/// naming the command, how it ended and the end of what it said on stderr.
pub fn output(cmd: xshell::Cmd<'_>) -> anyhow::Result<StdOutput> {
    let shown = cmd.to_string();
    let mut command = Command::from(cmd);
    die_with_us(&mut command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {shown}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .trim()
            .chars()
            .rev()
            .take(STDERR_SHOWN)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!("{shown} failed ({}): {tail}", output.status);
    }
    Ok(output)
}

/// How much of a failed tool's stderr an error shows: the end, where tools say what went wrong.
const STDERR_SHOWN: usize = 2000;

/// Runs `command` within `bounds`; stops it (and says so) when one runs out.
pub fn run_bounded(mut command: Command, bounds: Bounds) -> anyhow::Result<Output> {
    let shown = format!("{command:?}");
    limit_memory(&mut command, bounds.memory);
    die_with_us(&mut command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {shown}"))?;
    let full = Arc::new(AtomicBool::new(false));
    let stdout = read_capped(&mut child, bounds.output, full.clone())?;
    let stderr = drain_stderr(&mut child)?;
    let stopped = wait(&mut child, &full, bounds.deadline);
    if !matches!(stopped, Stop::Exited(_)) {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = stderr.recv_timeout(READER_GRACE).unwrap_or_default();
    let stdout = match stdout.recv_timeout(READER_GRACE) {
        Ok(read) => read.with_context(|| format!("reading the output of {shown}"))?,
        Err(_) => bail!("{shown} ended, but something it started still holds its output"),
    };
    outcome(&shown, stopped, stdout, stderr, bounds)
}

/// Lowers the child's address-space limit to `memory`, never raises it: we may run under a
/// tighter one already.
fn limit_memory(command: &mut Command, memory: u64) {
    let cap = libc::rlim_t::try_from(memory).unwrap_or(libc::RLIM_INFINITY);
    let lower = move || {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only into `limit`, a local we own; it is async-signal-safe.
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_cur.min(cap);
        limit.rlim_max = limit.rlim_max.min(cap);
        // SAFETY: setrlimit reads only `limit`; it is async-signal-safe and affects the child.
        match unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    };
    // SAFETY: the hook runs between fork and exec and calls only async-signal-safe functions
    // (getrlimit, setrlimit); it allocates nothing.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(lower);
    }
}

type Received<T> = mpsc::Receiver<T>;

/// Reads the child's stdout on a thread of its own, up to one byte past `limit` (setting
/// `full` then, so the waiting loop stops the child).
fn read_capped(
    child: &mut Child,
    limit: usize,
    full: Arc<AtomicBool>,
) -> anyhow::Result<Received<std::io::Result<Vec<u8>>>> {
    let mut stdout = child.stdout.take().context("no stdout")?;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        let result = (&mut stdout).take(cap).read_to_end(&mut bytes);
        if bytes.len() > limit {
            full.store(true, Ordering::SeqCst);
        }
        let _ = sender.send(result.map(|_| bytes));
    });
    Ok(receiver)
}

/// Keeps the first [`STDERR_LIMIT`] bytes of the child's stderr, drains the rest.
fn drain_stderr(child: &mut Child) -> anyhow::Result<Received<String>> {
    let mut stderr = child.stderr.take().context("no stderr")?;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = (&mut stderr)
            .take(STDERR_LIMIT as u64)
            .read_to_end(&mut bytes);
        let _ = sender.send(String::from_utf8_lossy(&bytes).into_owned());
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
    });
    Ok(receiver)
}

/// Waits for the child to exit, its output to fill up, or the deadline.
fn wait(child: &mut Child, full: &AtomicBool, deadline: Duration) -> Stop {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Stop::Exited(status.success()),
            Ok(None) if full.load(Ordering::SeqCst) => return Stop::Output,
            Ok(None) if started.elapsed() > deadline => return Stop::Deadline,
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Stop::Lost(e),
        }
    }
}

/// What the run amounts to: the output, or why it is not to be trusted.
fn outcome(
    shown: &str,
    stopped: Stop,
    mut stdout: Vec<u8>,
    stderr: String,
    bounds: Bounds,
) -> anyhow::Result<Output> {
    // The reader stops at the limit and closes the pipe, which may end the child first.
    let overflowed = stdout.len() > bounds.output;
    let success = match stopped {
        Stop::Lost(e) => return Err(e).with_context(|| format!("waiting for {shown}")),
        Stop::Deadline => bail!(
            "{shown} did not finish within {} s; stopped it (a crafted image?)",
            bounds.deadline.as_secs_f32()
        ),
        _ if overflowed && bounds.overflow == Overflow::Fail => bail!(
            "{shown} printed more than {} bytes; stopped it (a crafted image?)",
            bounds.output
        ),
        _ if overflowed => None,
        Stop::Output => None,
        Stop::Exited(success) => Some(success),
    };
    stdout.truncate(bounds.output);
    Ok(Output {
        stdout,
        stderr,
        success,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMORY: u64 = 1 << 30;

    fn bounds(output: usize, overflow: Overflow, deadline: Duration) -> Bounds {
        Bounds {
            output,
            overflow,
            deadline,
            memory: MEMORY,
        }
    }

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn tools_are_stopped_at_the_deadline_and_at_the_output_limit() {
        let mut sleep = Command::new("sleep");
        sleep.arg("10");
        let started = Instant::now();
        let error = run_bounded(
            sleep,
            bounds(10, Overflow::Fail, Duration::from_millis(200)),
        )
        .err()
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            error.to_string().contains("did not finish within 0.2 s"),
            "{error}"
        );

        let error = run_bounded(Command::new("yes"), bounds(1000, Overflow::Fail, LONG))
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("printed more than 1000 bytes"),
            "{error}"
        );

        let head = run_bounded(Command::new("yes"), bounds(6, Overflow::Head, LONG)).unwrap();
        assert_eq!(head.stdout, b"y\ny\ny\n");
        assert_eq!(head.success, None);
    }

    /// A child asked to die with us gets SIGKILL when the thread that started it ends.
    #[test]
    fn children_die_with_the_thread_that_started_them() {
        let pid = std::thread::spawn(|| {
            let mut sleeper = Command::new("sleep");
            sleeper.arg("60");
            die_with_us(&mut sleeper);
            sleeper.spawn().unwrap().id() as i32
        })
        .join()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Gone, or a zombie waiting for a wait() that will not come (this process reaps it at
        // exit): either way, no longer running.
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string));
            if stat.is_empty() || state.as_deref() == Some("Z") {
                break;
            }
            assert!(Instant::now() < deadline, "sleep {pid} still runs: {stat}");
            std::thread::sleep(Duration::from_millis(20));
        }

        let sh = xshell::Shell::new().unwrap();
        let err = output(xshell::cmd!(sh, "sh -c 'echo broken >&2; exit 3'"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("broken") && err.contains("exit status: 3"),
            "{err}"
        );
    }

    #[test]
    fn the_memory_cap_holds_in_the_child() {
        // `ulimit -v` shows it, in KiB.
        let mut hungry = Command::new("sh");
        hungry.args(["-c", "ulimit -v"]);
        let limit = run_bounded(hungry, bounds(100, Overflow::Fail, LONG)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&limit.stdout).trim(),
            (MEMORY / 1024).to_string()
        );
    }

    #[test]
    fn a_child_that_leaves_something_holding_its_output_is_not_waited_for() {
        // The sleep ends by itself.
        let mut leaver = Command::new("sh");
        leaver.args(["-c", "sleep 3 & echo hi"]);
        let started = Instant::now();
        let error = run_bounded(leaver, bounds(100, Overflow::Fail, LONG))
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("still holds its output"),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));

        let mut echo = Command::new("echo");
        echo.arg("hi");
        let done = run_bounded(echo, bounds(100, Overflow::Fail, LONG)).unwrap();
        assert_eq!(
            (done.stdout.as_slice(), done.success),
            (&b"hi\n"[..], Some(true))
        );
    }
}
