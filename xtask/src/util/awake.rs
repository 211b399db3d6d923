//! Time this process was running, for judging progress: a process stopped by SIGSTOP (Ctrl-Z, a
//! debugger, a frozen container) sees the monotonic clock jump when it continues, and a
//! transfer would be judged to have made no progress while nobody was running it. (A suspended
//! machine needs nothing: Linux's monotonic clock stands still during suspend.)
//!
//! A ticker thread notes the clock every [`TICK`]; a gap well beyond a tick is time the process
//! did not run, and is added to [`paused`]. An overloaded machine that leaves the ticker
//! unscheduled for over a second makes this lenient, never strict.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// How often the ticker notes the clock.
const TICK: Duration = Duration::from_millis(100);
/// A gap longer than a tick by this much counts as a stop.
const STOP_THRESHOLD: Duration = Duration::from_millis(900);

static PAUSED_NANOS: AtomicU64 = AtomicU64::new(0);
static TICKER: Once = Once::new();

/// Time the process spent stopped since the ticker started.
pub fn paused() -> Duration {
    Duration::from_nanos(PAUSED_NANOS.load(Ordering::Relaxed))
}

fn start_ticker() {
    TICKER.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("awake-clock".into())
            .spawn(|| {
                let mut last = Instant::now();
                loop {
                    std::thread::sleep(TICK);
                    let now = Instant::now();
                    let gap = now.saturating_duration_since(last);
                    if gap > TICK + STOP_THRESHOLD {
                        let stopped = u64::try_from((gap - TICK).as_nanos()).unwrap_or(u64::MAX);
                        PAUSED_NANOS.fetch_add(stopped, Ordering::Relaxed);
                    }
                    last = now;
                }
            });
        // Without the thread, stops count as time: strict, as before, never wrong.
        drop(spawned);
    });
}

/// A moment, to measure the running time since.
#[derive(Clone, Copy, Debug)]
pub struct Awake {
    at: Instant,
    paused: Duration,
}

impl Awake {
    pub fn now() -> Awake {
        start_ticker();
        Awake {
            at: Instant::now(),
            paused: paused(),
        }
    }

    /// Time since, less the time the process was stopped meanwhile.
    pub fn elapsed(&self) -> Duration {
        self.at
            .elapsed()
            .saturating_sub(paused().saturating_sub(self.paused))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ordinary time counts. (A real stop is of a whole process: the downloads suite stops a
    /// build with SIGSTOP for longer than its progress window, and it finishes.)
    #[test]
    fn a_long_gap_between_ticks_counts_as_paused_and_a_short_one_does_not() {
        let before = Awake::now();
        std::thread::sleep(Duration::from_millis(300));
        let elapsed = before.elapsed();
        assert!(
            elapsed >= Duration::from_millis(300),
            "ordinary time counts: {elapsed:?}"
        );
        assert!(paused() < Duration::from_millis(300), "{:?}", paused());
    }
}
