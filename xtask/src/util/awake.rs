//! Time this process was running, for judging progress: a process stopped by SIGSTOP (Ctrl-Z, a
//! debugger, a frozen container) sees the monotonic clock jump when it continues, and a
//! transfer would be judged to have made no progress while nobody was running it. (A suspended
//! machine needs nothing: Linux's monotonic clock stands still during suspend.)
//!
//! A ticker thread notes the clock every [`TICK`]; a gap well beyond a tick is time the process
//! did not run, and is added to [`paused`]. An overloaded machine that leaves the ticker
//! unscheduled for over a second makes this lenient, never strict.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

/// How often the ticker notes the clock.
const TICK: Duration = Duration::from_millis(100);
/// A gap longer than a tick by this much counts as a stop.
const STOP_THRESHOLD: Duration = Duration::from_millis(900);

static PAUSED_NANOS: AtomicU64 = AtomicU64::new(0);
/// When the ticker last noted the clock, in nanoseconds since [`base`].
static LAST_TICK_NANOS: AtomicU64 = AtomicU64::new(0);
static TICKER: Once = Once::new();
/// Whether the ticker runs (else stops count as time).
static TICKING: AtomicBool = AtomicBool::new(false);

/// The moment clock readings are counted from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn nanos_since_base(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base()).as_nanos()).unwrap_or(u64::MAX)
}

/// The part of a gap between two readings of the clock that the process was stopped for, if
/// the gap is one.
fn stopped_in(gap: Duration) -> Duration {
    if gap > TICK + STOP_THRESHOLD {
        gap - TICK
    } else {
        Duration::ZERO
    }
}

/// Time the process spent stopped since the ticker started, including a stop the ticker has
/// not noted yet: after SIGCONT every thread wakes at once, and the one that asks may run
/// before the ticker's sleep ends. (While the ticker notes a stop it may be counted twice:
/// lenient, never strict.)
pub fn paused() -> Duration {
    if !TICKING.load(Ordering::SeqCst) {
        return Duration::ZERO;
    }
    let noted = Duration::from_nanos(PAUSED_NANOS.load(Ordering::SeqCst));
    let last_tick = Duration::from_nanos(LAST_TICK_NANOS.load(Ordering::SeqCst));
    let since_tick = Instant::now()
        .saturating_duration_since(base())
        .saturating_sub(last_tick);
    noted.saturating_add(stopped_in(since_tick))
}

fn start_ticker() {
    TICKER.call_once(|| {
        LAST_TICK_NANOS.store(nanos_since_base(Instant::now()), Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("awake-clock".into())
            .spawn(|| {
                let mut last = Instant::now();
                loop {
                    std::thread::sleep(TICK);
                    let now = Instant::now();
                    let stopped = stopped_in(now.saturating_duration_since(last));
                    let stopped = u64::try_from(stopped.as_nanos()).unwrap_or(u64::MAX);
                    // Noted before the tick moves on, so that no reader misses the stop.
                    PAUSED_NANOS.fetch_add(stopped, Ordering::SeqCst);
                    LAST_TICK_NANOS.store(nanos_since_base(now), Ordering::SeqCst);
                    last = now;
                }
            });
        // Without the thread, stops count as time: strict, as before, never wrong.
        TICKING.store(spawned.is_ok(), Ordering::SeqCst);
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

    /// A gap of a tick or a little more is the ticker's ordinary lateness; beyond that, all
    /// but one tick of it was a stop.
    #[test]
    fn only_a_gap_well_beyond_a_tick_is_a_stop() {
        assert_eq!(stopped_in(TICK), Duration::ZERO);
        assert_eq!(stopped_in(TICK + STOP_THRESHOLD), Duration::ZERO);
        assert_eq!(
            stopped_in(Duration::from_secs(5)),
            Duration::from_secs(5) - TICK
        );
    }

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
