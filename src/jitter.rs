//! The jitter of one stream's timing: its maximum age, and the retry hints it sends.

use std::time::Duration;

/// A number drawn uniformly from [0, 1).
fn unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    // `RandomState` is seeded randomly per thread and stepped per instance: enough spread for
    // jitter, without a random number crate.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A maximum age spread uniformly over 80–100 % of `max_age`, so that streams opened together
/// do not all end (and reconnect) together.
pub(crate) fn jittered(max_age: Duration) -> Duration {
    Duration::try_from_secs_f64(max_age.as_secs_f64() * (0.8 + 0.2 * unit())).unwrap_or(max_age)
}

/// `base` plus a delay drawn uniformly from 0 to `extra`, in whole milliseconds (what a retry
/// hint carries).
pub(crate) fn spread(base: Duration, extra: Duration) -> Duration {
    let extra = (extra.as_millis() as f64 * unit()) as u64;
    base.saturating_add(Duration::from_millis(extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_over_the_last_fifth() {
        let age = Duration::from_secs(100);
        let ages: Vec<Duration> = (0..2000).map(|_| jittered(age)).collect();
        assert!(ages.iter().all(|a| *a >= age * 8 / 10 && *a <= age));
        // Uniform enough: every 2 s bucket of the 20 s window is hit.
        let mut buckets = [0u32; 10];
        for a in &ages {
            let bucket = ((a.as_secs_f64() - 80.0) / 2.0) as usize;
            buckets[bucket.min(9)] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 100), "{buckets:?}");
        assert!(jittered(Duration::MAX) >= Duration::MAX / 10 * 8);
    }

    #[test]
    fn spread_covers_base_to_base_plus_extra() {
        let (base, extra) = (Duration::from_secs(1), Duration::from_secs(2));
        let hints: Vec<Duration> = (0..2000).map(|_| spread(base, extra)).collect();
        assert!(hints.iter().all(|h| *h >= base && *h <= base + extra));
        let mut buckets = [0u32; 10];
        for h in &hints {
            buckets[(((*h - base).as_millis() / 200) as usize).min(9)] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 100), "{buckets:?}");
        assert_eq!(spread(Duration::MAX, extra), Duration::MAX);
    }
}
