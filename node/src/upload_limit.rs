//! `[net] max_upload_rate`: one budget of pack bytes per second for
//! everything this node uploads, on both transports (iroh-blobs and the
//! libp2p range protocol). A virtual-time bucket: each send books its bytes
//! on a shared timeline and waits until its turn, allowing a burst of a
//! tenth of a second so small requests are not delayed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct UploadLimit {
    bytes_per_sec: f64,
    burst: Duration,
    /// When the bytes booked so far will have gone out at the rate.
    booked_until: Mutex<Instant>,
}

impl UploadLimit {
    /// `None` when unlimited (0 means unlimited too).
    pub fn new(bytes_per_sec: Option<u64>) -> Option<UploadLimit> {
        let rate = bytes_per_sec.filter(|r| *r > 0)?;
        Some(UploadLimit {
            bytes_per_sec: rate as f64,
            burst: Duration::from_millis(100),
            booked_until: Mutex::new(Instant::now()),
        })
    }

    /// Books `bytes` at `now`; returns how long to wait before sending them.
    pub fn book(&self, bytes: u64, now: Instant) -> Duration {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
        let mut until = self.booked_until.lock().unwrap_or_else(|e| e.into_inner());
        // Idle time does not accumulate beyond the burst.
        let start = (*until).max(now.checked_sub(self.burst).unwrap_or(now));
        *until = start + cost;
        until.saturating_duration_since(now + self.burst)
    }

    pub async fn wait(&self, bytes: u64) {
        let d = self.book(bytes, Instant::now());
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    pub fn wait_blocking(&self, bytes: u64) {
        let d = self.book(bytes, Instant::now());
        if !d.is_zero() {
            std::thread::sleep(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_or_absent_is_unlimited() {
        assert!(UploadLimit::new(None).is_none());
        assert!(UploadLimit::new(Some(0)).is_none());
    }

    #[test]
    fn sends_are_spaced_to_the_rate_after_a_short_burst() {
        let l = UploadLimit::new(Some(1_000_000)).unwrap();
        let t0 = Instant::now();
        // 100 ms of burst goes out at once.
        assert_eq!(l.book(100_000, t0), Duration::ZERO);
        // The next 500 KB must wait until 0.5 s of rate is used up.
        let w = l.book(500_000, t0);
        assert!((w.as_secs_f64() - 0.5).abs() < 0.01, "{w:?}");
        // In total, 10 MB booked at once take 10 s at 1 MB/s.
        let l = UploadLimit::new(Some(1_000_000)).unwrap();
        let mut last = Duration::ZERO;
        for _ in 0..100 {
            last = l.book(100_000, t0);
        }
        assert!((last.as_secs_f64() - 9.9).abs() < 0.01, "{last:?}");
    }

    #[test]
    fn idle_time_does_not_build_up_credit() {
        let l = UploadLimit::new(Some(1_000_000)).unwrap();
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(60);
        assert_eq!(l.book(100_000, later), Duration::ZERO);
        // Only the 100 ms burst is credit: 1 MB more waits 0.9 s, not 0.
        let w = l.book(1_000_000, later);
        assert!((w.as_secs_f64() - 0.9).abs() < 0.01, "{w:?}");
    }
}
