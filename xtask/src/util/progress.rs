//! What the user sees while we work: step lines, and a progress bar for long transfers on a
//! terminal (plain lines at each quarter when not on one, as in CI logs).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// Announces one step of the pipeline.
pub fn step(message: impl std::fmt::Display) {
    eprintln!("==> {message}");
}

/// A detail under the current step.
pub fn detail(message: impl std::fmt::Display) {
    eprintln!("    {message}");
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Progress of one transfer of `total` bytes (if known).
pub struct Transfer {
    label: String,
    total: Option<u64>,
    bar: Option<ProgressBar>,
    started: Instant,
    quarters_reported: u64,
}

impl Transfer {
    pub fn new(label: impl Into<String>, total: Option<u64>) -> Transfer {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total.unwrap_or(0));
            let template = if total.is_some() {
                "    {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            } else {
                "    {msg} {bytes} {bytes_per_sec}"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap()
                    .progress_chars("=> "),
            );
            bar.set_message(label.clone());
            bar
        });
        Transfer {
            label,
            total,
            bar,
            started: Instant::now(),
            quarters_reported: 0,
        }
    }

    pub fn set_position(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if let Some(total) = self.total.filter(|&t| t > 0) {
            let quarters = (done.min(total) * 4) / total;
            if quarters > self.quarters_reported && quarters < 4 {
                self.quarters_reported = quarters;
                detail(format!(
                    "{}: {}% ({} of {})",
                    self.label,
                    quarters * 25,
                    mib(done),
                    mib(total)
                ));
            }
        }
    }

    /// Says the transfer was interrupted and will be retried.
    pub fn interrupted(&self, why: impl std::fmt::Display) {
        let message = format!("{}: {why}", self.label);
        match &self.bar {
            Some(bar) => bar.println(format!("    {message}")),
            None => detail(message),
        }
    }

    pub fn finish(self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        detail(format!(
            "{}: {} in {:.1}s ({}/s)",
            self.label,
            mib(done),
            seconds,
            mib((done as f64 / seconds) as u64)
        ));
    }
}
