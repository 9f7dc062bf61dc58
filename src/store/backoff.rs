//! The wait before a retry: exponential from `base`, plus up to half of it again at
//! random (so two devices that failed together do not retry together), never above `max`.

use std::time::Duration;

/// The wait before try `attempt + 1` (`attempt` ≥ 1 tries made); `after`, when the server
/// named one (`Retry-After`), instead of the exponential step.
pub fn wait(base: Duration, attempt: u32, max: Duration, after: Option<Duration>) -> Duration {
    let step = after.unwrap_or_else(|| base.saturating_mul(1 << attempt.saturating_sub(1).min(16)));
    (step + step.mul_f64(rand::random::<f64>() * 0.5)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_carry_jitter_and_stay_bounded() {
        let ms = Duration::from_millis;
        for _ in 0..100 {
            let w = wait(ms(100), 3, ms(10_000), None);
            assert!(w >= ms(400) && w <= ms(600), "{w:?}");
            assert_eq!(wait(ms(100), 30, ms(10_000), None), ms(10_000));
            let w = wait(ms(100), 1, ms(10_000), Some(ms(2000)));
            assert!(w >= ms(2000) && w <= ms(3000), "{w:?}");
        }
    }
}
