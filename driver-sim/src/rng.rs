//! Deterministic, portable randomness for the simulator.
//!
//! Every random choice of a run comes from the one root seed: per-node seeds are derived from
//! it with SplitMix64, and each concern of the simulator (the network model, the workload,
//! churn) draws from its own stream, so adding a message does not change the latency of an
//! unrelated frame. Sampling uses only integer arithmetic and IEEE-754 basic operations
//! (`+ - * /`, which are correctly rounded everywhere): no `ln` or `exp` from the platform's
//! math library, whose last bits may differ between machines and would change the trace.

use std::time::Duration;

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

/// One SplitMix64 step: a strong 64-bit mixer, used to derive independent seeds.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The seed of node `index` in its `incarnation` (a restarted node is a new process with a
/// new seed, and so a new id).
pub fn node_seed(root: u64, index: u32, incarnation: u32) -> u64 {
    let lane = (u64::from(index) << 32) | u64::from(incarnation);
    splitmix64(splitmix64(root ^ 0x6e6f_6465) ^ splitmix64(lane))
}

/// The simulator's independent random streams.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// Latency, loss and duplication draws.
    Network,
    /// Message pairs and bootstrap choices.
    Workload,
    /// Who joins and leaves, and when.
    Churn,
}

/// A seeded random stream with the samplers the network model needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimRng(Xoshiro256PlusPlus);

impl SimRng {
    /// The stream `stream` of the run seeded with `root`.
    pub fn new(root: u64, stream: Stream) -> SimRng {
        let salt = match stream {
            Stream::Network => 0x6e65_7477_6f72_6b00,
            Stream::Workload => 0x776f_726b_6c6f_6164,
            Stream::Churn => 0x6368_7572_6e00_0000,
        };
        SimRng(Xoshiro256PlusPlus::seed_from_u64(splitmix64(root ^ salt)))
    }

    /// 64 uniformly random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-shift (bias below 2^-64 * n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (clamped to `[0, 1]`).
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        self.unit() < p
    }

    /// Uniform in `[0, max]`.
    pub fn uniform_duration(&mut self, max: Duration) -> Duration {
        let micros = max.as_micros() as u64;
        if micros == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.below(micros + 1))
    }

    /// Exponentially distributed with the given mean (inverse transform sampling).
    pub fn exponential(&mut self, mean: Duration) -> Duration {
        if mean.is_zero() {
            return Duration::ZERO;
        }
        // 1 - unit() is in (0, 1], so the logarithm is finite.
        let u = 1.0 - self.unit();
        let micros = -portable_ln(u) * mean.as_micros() as f64;
        // Cap the tail at 50 means: a 2^-72 event, and keeps times far from overflow.
        Duration::from_micros(micros.min(50.0 * mean.as_micros() as f64) as u64)
    }
}

/// The natural logarithm of a positive, finite `x`, computed with basic IEEE-754 operations
/// only, so it gives the same bits on every platform. Accurate to about 1e-15 relative,
/// plenty for sampling delays.
pub fn portable_ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_finite());
    const LN_2: f64 = std::f64::consts::LN_2;
    const SQRT_2: f64 = std::f64::consts::SQRT_2;
    // x = m * 2^e with m in [1, 2), then moved to [sqrt(1/2), sqrt(2)) for fast convergence.
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if exponent == -1023 {
        // Subnormal: scale into the normal range first.
        return portable_ln(x * (1u64 << 54) as f64) - 54.0 * LN_2;
    }
    if mantissa > SQRT_2 {
        mantissa /= 2.0;
        exponent += 1;
    }
    // ln(m) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = (m - 1) / (m + 1), |s| < 0.172.
    let s = (mantissa - 1.0) / (mantissa + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    while k < 40.0 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    2.0 * sum + exponent as f64 * LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_ln_matches_the_platform_closely() {
        for &x in &[
            1e-300,
            1e-10,
            0.001,
            0.3,
            0.5,
            0.7,
            1.0,
            std::f64::consts::SQRT_2,
            1.5,
            2.0,
            10.0,
            1e10,
            5e-324,
        ] {
            let (ours, std) = (portable_ln(x), x.ln());
            assert!(
                (ours - std).abs() <= 1e-13 * std.abs().max(1.0),
                "{x}: {ours} vs {std}"
            );
        }
    }

    #[test]
    fn streams_are_reproducible_and_independent() {
        let mut a = SimRng::new(7, Stream::Network);
        let mut b = SimRng::new(7, Stream::Network);
        let mut c = SimRng::new(7, Stream::Workload);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert_ne!(node_seed(1, 0, 0), node_seed(1, 0, 1));
        assert_ne!(node_seed(1, 0, 0), node_seed(1, 1, 0));
        assert_ne!(node_seed(1, 0, 0), node_seed(2, 0, 0));
    }

    #[test]
    fn exponential_has_the_requested_mean() {
        let mut rng = SimRng::new(3, Stream::Network);
        let mean = Duration::from_millis(10);
        let n = 100_000;
        let total: u128 = (0..n).map(|_| rng.exponential(mean).as_micros()).sum();
        let measured = total as f64 / n as f64;
        assert!((measured - 10_000.0).abs() < 200.0, "mean {measured} us");
    }

    #[test]
    fn chance_and_below_are_calibrated() {
        let mut rng = SimRng::new(5, Stream::Workload);
        let hits = (0..100_000).filter(|_| rng.chance(0.05)).count();
        assert!((4_500..5_500).contains(&hits), "{hits}");
        assert!((0..1000).all(|_| rng.below(3) < 3));
        assert!(!rng.chance(0.0) && rng.chance(1.0));
    }
}
