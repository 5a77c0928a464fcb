//! The timing of one stream: the maximum age, with its jitter.

use std::time::Duration;

/// A maximum age spread uniformly over 80–100 % of `max_age`, so that streams opened together
/// do not all end (and reconnect) together.
pub(crate) fn jittered(max_age: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // `RandomState` is seeded randomly per thread and stepped per instance: enough spread for
    // jitter, without a random number crate.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    Duration::try_from_secs_f64(max_age.as_secs_f64() * (0.8 + 0.2 * unit)).unwrap_or(max_age)
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
}
