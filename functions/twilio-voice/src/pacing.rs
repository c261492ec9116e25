//! Pacing of outbound calls to the account's calls-per-second (CPS).
//!
//! Twilio does not refuse calls above the account's CPS (1 by default): it queues them for up to
//! 24 hours, so a burst of bulk calls would ring hours late. Calls are therefore spaced on our
//! side. The event source mapping's `MaximumConcurrency` bounds how many function instances
//! consume the queue at once, so each instance takes its share of the account's rate: one call
//! every `consumers / calls_per_second` seconds.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// The time a [`Pace`] reads and waits on: tokio's clock, or a simulation's.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// tokio's clock (paused and advanced by hand in tokio's test mode).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep_until(at))
    }
}

/// Spaces the calls of one function instance.
pub struct Pace {
    interval: Duration,
    next: Mutex<Option<Instant>>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Pace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pace")
            .field("interval", &self.interval)
            .finish()
    }
}

impl Pace {
    /// One call every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self::with_clock(interval, Arc::new(TokioClock))
    }

    /// The same on another clock (a simulation's).
    pub fn with_clock(interval: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            interval,
            next: Mutex::new(None),
            clock,
        }
    }

    /// The clock the pace reads, for deadlines on the same time line.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// This instance's share of the account's `calls_per_second` when up to `consumers`
    /// instances place calls at once.
    pub fn share(calls_per_second: NonZeroU32, consumers: NonZeroU32) -> Self {
        Self::new(Duration::from_secs(u64::from(consumers.get())) / calls_per_second.get())
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for the next free slot and takes it, unless that slot starts after `deadline`: then
    /// it returns `false` at once and takes nothing (the caller leaves the call for later).
    pub async fn slot_before(&self, deadline: Instant) -> bool {
        let at = {
            let mut next = self.next.lock().await;
            let now = self.clock.now();
            let at = next.map_or(now, |n| n.max(now));
            if at > deadline {
                return false;
            }
            *next = Some(at + self.interval);
            at
        };
        self.clock.sleep_until(at).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn each_consumer_takes_its_share_of_the_rate() {
        assert_eq!(Pace::share(nz(1), nz(1)).interval(), Duration::from_secs(1));
        assert_eq!(Pace::share(nz(1), nz(2)).interval(), Duration::from_secs(2));
        assert_eq!(
            Pace::share(nz(4), nz(2)).interval(),
            Duration::from_millis(500)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_one_interval_apart_even_when_taken_at_once() {
        let pace = std::sync::Arc::new(Pace::new(Duration::from_secs(2)));
        let start = Instant::now();
        let far = start + Duration::from_secs(3600);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let pace = pace.clone();
            tasks.spawn(async move {
                assert!(pace.slot_before(far).await);
                Instant::now() - start
            });
        }
        let mut offsets = Vec::new();
        while let Some(offset) = tasks.join_next().await {
            offsets.push(offset.unwrap());
        }
        offsets.sort();
        assert_eq!(
            offsets,
            [0, 2, 4, 6].map(Duration::from_secs),
            "paused time: each slot starts exactly one interval after the previous"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_past_the_deadline_is_not_taken() {
        let pace = Pace::new(Duration::from_secs(2));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(3);
        assert!(pace.slot_before(deadline).await); // at 0
        assert!(pace.slot_before(deadline).await); // at 2
        assert!(!pace.slot_before(deadline).await); // 4 > 3: refused, nothing taken
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
        // A later deadline gets the slot that was not taken.
        assert!(pace.slot_before(start + Duration::from_secs(4)).await);
        assert_eq!(Instant::now() - start, Duration::from_secs(4));
    }
}
