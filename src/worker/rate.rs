//! `options.rateLimit`: at most `max` tasks delivered to one worker within any window of
//! `duration` (a sliding window, not a bucket that could let `2 × max` through around a refill).
//!
//! The pull loop asks for no more messages than the window has room for, counting the messages
//! it already asked for and not received (they may still come): so whatever the server sends,
//! the count of deliveries within any `duration` stays at or below `max`. Requests that end
//! early give their room back through [`crate::worker::pull::Puller::outstanding`].

use std::collections::VecDeque;

use tokio::time::Instant;

use crate::config::RateLimit;

/// The delivery times within the last window.
#[derive(Debug)]
pub struct RateWindow {
    limit: RateLimit,
    /// Delivery times, oldest first; at most `max` of them.
    delivered: VecDeque<Instant>,
}

impl RateWindow {
    /// An empty window for `limit`.
    pub fn new(limit: RateLimit) -> Self {
        RateWindow {
            limit,
            delivered: VecDeque::with_capacity(limit.max as usize),
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while self
            .delivered
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= self.limit.duration)
        {
            self.delivered.pop_front();
        }
    }

    /// How many more messages may be requested now, with `outstanding` requested and not
    /// delivered yet.
    pub fn room(&mut self, now: Instant, outstanding: usize) -> usize {
        self.forget_old(now);
        (self.limit.max as usize).saturating_sub(self.delivered.len() + outstanding)
    }

    /// When the oldest delivery leaves the window (room grows then), if any is in it.
    pub fn next_room_at(&self) -> Option<Instant> {
        self.delivered.front().map(|at| *at + self.limit.duration)
    }

    /// Records one delivery.
    pub fn delivered(&mut self, now: Instant) {
        self.forget_old(now);
        if self.delivered.len() == self.limit.max as usize {
            // Only a message that arrived for a forgotten request gets here; keep the newest.
            self.delivered.pop_front();
        }
        self.delivered.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_window_slides() {
        let limit = RateLimit {
            max: 3,
            duration: Duration::from_secs(1),
        };
        let mut window = RateWindow::new(limit);
        let t0 = Instant::now();
        assert_eq!(window.room(t0, 0), 3);
        assert_eq!(window.room(t0, 2), 1);
        window.delivered(t0);
        window.delivered(t0 + Duration::from_millis(100));
        assert_eq!(window.room(t0 + Duration::from_millis(200), 1), 0);
        assert_eq!(window.next_room_at(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(window.room(t0 + Duration::from_millis(1_000), 0), 2);
        assert_eq!(window.room(t0 + Duration::from_millis(1_100), 0), 3);
    }
}
