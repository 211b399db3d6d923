//! One backoff for every retry loop: downloads, the bucket's index and its signature.

use std::time::Duration;

/// Exponential backoff with jitter: each wait is the current delay plus up to as much again
/// of noise, so that two clients that collided do not collide again; the delay doubles up to
/// `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    delay: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { delay: first, max }
    }

    /// How long to wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.delay + jitter(self.delay);
        self.delay = (self.delay * 2).min(self.max);
        wait
    }
}

/// Up to `max` of noise, from the clock and the process id (no randomness crate for this).
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    max.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_with_bounded_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
        let waits: Vec<Duration> = (0..4).map(|_| backoff.next_wait()).collect();
        for (wait, base) in waits.iter().zip([100, 200, 300, 300]) {
            let base = Duration::from_millis(base);
            assert!(*wait >= base && *wait < base * 2, "{wait:?} for {base:?}");
        }
    }
}
