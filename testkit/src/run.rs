//! Running the programs under test and the tools the tests use.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The outcome of one run of a program under test.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// The case of a table the run belongs to, which its failures name.
    case: String,
}

impl Run {
    pub fn from_command(command: &mut Command) -> Run {
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
        Run::from_output(&output)
    }

    /// Runs `command`, killing it and failing the test once it has run for `deadline` (a hang
    /// is a failure of its own): the run, and how long it took.
    pub fn within(command: &mut Command, deadline: Duration) -> (Run, Duration) {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > deadline {
                child.kill().unwrap();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "{command:?} still ran after {deadline:?}\n--- stderr\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = started.elapsed();
        (Run::from_output(&child.wait_with_output().unwrap()), took)
    }

    /// The outcome of a finished run; fails the test if the program panicked (no input may
    /// panic it, whatever the test expects of it otherwise).
    pub fn from_output(output: &Output) -> Run {
        let run = Run {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            case: String::new(),
        };
        assert_no_panic(&run.stdout, &run.stderr);
        run
    }

    /// The same run, its assertions' failures naming `case` (a row of a table of cases).
    pub fn case(mut self, case: &str) -> Run {
        self.case = format!("{case}: ");
        self
    }

    pub fn assert_ok(&self) -> &Run {
        assert!(
            self.success,
            "{}expected success\n--- stdout\n{}\n--- stderr\n{}",
            self.case, self.stdout, self.stderr
        );
        self
    }

    /// Asserts a success whose error output (where progress and notes go) contains every one
    /// of `needles`.
    pub fn assert_ok_saying(&self, needles: &[&str]) -> &Run {
        self.assert_ok().assert_stderr_has(needles)
    }

    /// Asserts a failure whose error output contains every one of `needles`.
    pub fn assert_fails_with(&self, needles: &[&str]) -> &Run {
        assert!(
            !self.success,
            "{}expected failure\n--- stdout\n{}\n--- stderr\n{}",
            self.case, self.stdout, self.stderr
        );
        self.assert_stderr_has(needles)
    }

    fn assert_stderr_has(&self, needles: &[&str]) -> &Run {
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "{}stderr lacks {needle:?}\n--- stderr\n{}",
                self.case,
                self.stderr
            );
        }
        self
    }
}

/// Fails the test when a program under test printed that it panicked: a panic is a bug
/// whatever the input, even where the test expects the run to fail.
pub fn assert_no_panic(stdout: &str, stderr: &str) {
    for (stream, text) in [("stdout", stdout), ("stderr", stderr)] {
        assert!(
            !text.contains("panicked"),
            "the program panicked (on {stream}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    }
}

/// Runs a tool the test relies on to completion and returns what it printed on stdout; fails
/// the test with all it printed when it fails, and says how to install it when it cannot start.
pub fn checked_output(command: &mut Command) -> String {
    String::from_utf8_lossy(&checked_output_bytes(command)).into_owned()
}

/// [`checked_output`] for a tool whose output is not text.
pub fn checked_output_bytes(command: &mut Command) -> Vec<u8> {
    let output = command.output();
    checked(command, output)
}

/// [`checked_output`] for a tool that reads `input` on stdin; its stdout as bytes.
pub fn checked_output_with_input(command: &mut Command, input: &[u8]) -> Vec<u8> {
    let output = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(input)?;
            child.wait_with_output()
        });
    checked(command, output)
}

fn checked(command: &Command, output: std::io::Result<Output>) -> Vec<u8> {
    let output = output.unwrap_or_else(|e| {
        panic!("running {command:?}: {e} (bash scripts/install-deps.sh --test installs the tools)")
    });
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Finds a tool in PATH or in the sbin directories.
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!("{name} is not installed: run bash scripts/install-deps.sh --test");
}
