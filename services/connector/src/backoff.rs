//! Reconnection delays: exponential, capped, with jitter so that many nodes that dropped together
//! (a control plane restart) do not redial in lockstep.

use std::time::Duration;

use rand::Rng;

pub struct Backoff {
    next: Duration,
    first: Duration,
    cap: Duration,
}

impl Backoff {
    /// The cap bounds how late a node that comes back is noticed.
    pub fn new(first: Duration, cap: Duration) -> Self {
        Backoff { next: first, first, cap }
    }

    /// The delay before the next attempt: uniformly in [d/2, d] for the current step d.
    pub fn delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.cap);
        let half = step / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| b.delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[9] >= Duration::from_secs(1), "capped steps stay near the cap: {:?}", delays[9]);
        b.reset();
        assert!(b.delay() <= Duration::from_millis(100));
    }
}
