//! Retry delays: how long a failed job waits before its next attempt.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;

/// A per-kind retry schedule. The delay before attempt `n + 1` is computed when attempt `n`
/// fails and stored in the job's `run_at`.
#[derive(Clone, Debug)]
pub enum RetrySchedule {
    /// Exponential backoff from `min` by `factor` up to `max`, with jitter (computed with
    /// `backon`, which adds up to one extra delay at random).
    Exponential {
        min: Duration,
        max: Duration,
        factor: f32,
    },
    /// Explicit delays, one per retry (the last repeats), each varied by `±jitter_percent`,
    /// e.g. the webhook schedule 0 s, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h with ±20%.
    Fixed {
        delays: Vec<Duration>,
        jitter_percent: u8,
    },
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self::Exponential {
            min: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            factor: 2.0,
        }
    }
}

impl RetrySchedule {
    /// The delay after failed attempt `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let index = attempt.saturating_sub(1) as usize;
        match self {
            Self::Exponential { min, max, factor } => ExponentialBuilder::default()
                .with_min_delay(*min)
                .with_max_delay(*max)
                .with_factor(*factor)
                .with_jitter()
                .without_max_times()
                .build()
                .nth(index)
                .unwrap_or(*max),
            Self::Fixed {
                delays,
                jitter_percent,
            } => {
                let Some(base) = delays.get(index).or(delays.last()) else {
                    return Duration::ZERO;
                };
                let spread = f64::from(*jitter_percent) / 100.0;
                let factor = 1.0 + rand::rng().random_range(-spread..=spread);
                base.mul_f64(factor.max(0.0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_schedules_stay_within_their_jitter_and_repeat_the_last_delay() {
        let schedule = RetrySchedule::Fixed {
            delays: vec![
                Duration::ZERO,
                Duration::from_secs(5),
                Duration::from_secs(300),
            ],
            jitter_percent: 20,
        };
        for _ in 0..200 {
            assert_eq!(schedule.delay_after(1), Duration::ZERO);
            let second = schedule.delay_after(2).as_secs_f64();
            assert!((4.0..=6.0).contains(&second), "{second}");
            let later = schedule.delay_after(9).as_secs_f64();
            assert!((240.0..=360.0).contains(&later), "{later}");
        }
    }

    #[test]
    fn exponential_schedules_grow_and_are_capped() {
        let schedule = RetrySchedule::Exponential {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
            factor: 2.0,
        };
        for _ in 0..200 {
            let first = schedule.delay_after(1).as_secs_f64();
            assert!((1.0..=2.0).contains(&first), "{first}");
            let fourth = schedule.delay_after(4).as_secs_f64();
            assert!((8.0..=16.0).contains(&fourth), "{fourth}");
            assert!(schedule.delay_after(30) <= Duration::from_secs(120));
        }
    }
}
