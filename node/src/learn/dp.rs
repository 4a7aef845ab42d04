//! Optional differential privacy for the update a node shares: the Gaussian
//! mechanism over the clipped delta.
//!
//! [`privatize`] clips the delta to L2 norm `C` ([`DpConfig::clip`]) and adds
//! independent N(0, σ²) noise to each coordinate, with
//! σ = C · sqrt(2 ln(1.25 / δ)) / ε.
//!
//! **Guarantee.** For ε ∈ (0, 1) and δ ∈ (0, 1), one released noisy delta is
//! (ε, δ)-differentially private with respect to the node's *whole* event set
//! for that round (user-level for everything the node's users did in the
//! round): neighbouring inputs are "this round's events" and "no events", whose
//! clipped deltas differ by at most `C` in L2 norm (training on no events gives
//! a zero delta). Between two arbitrary event sets the clipped deltas differ by
//! up to 2C, so the same σ gives (2ε, δ) when 2ε < 1. This is the classical
//! analysis (Dwork & Roth, Theorem A.1), which needs ε < 1; [`sigma`] refuses
//! larger ε rather than claim a bound it does not prove.
//!
//! Not covered:
//! - composition: R rounds (or events reused across rounds) cost up to
//!   (Rε, Rδ) by basic composition; nothing here accounts for that;
//! - the sample count sent next to the delta is not noised and reveals how
//!   many events the node had;
//! - the proof is for real-valued Gaussian noise from a secret source: the
//!   floating-point sampling here and the non-cryptographic [`Rng`] are
//!   approximations. In production seed it from the OS for every round; a
//!   fixed seed (as in tests) gives no privacy at all.
//!
//! Anything computed from the noisy delta alone (clipping it again to the
//! network's accepted norm, aggregation) keeps the guarantee (post-processing),
//! so a caller whose peers enforce a `max_norm` may clip the noisy vector to it.

use super::model::FEATURES;
use super::train::clip;

/// A small deterministic PRNG (SplitMix64) with Gaussian sampling by
/// Box-Muller: reproducible across platforms, no dependencies.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    spare: Option<f64>,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng {
            state: seed,
            spare: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n) (0 when n == 0); the modulo bias is < n / 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Standard normal by Box-Muller; the second value of each pair is kept
    /// for the next call.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }
}

/// Parameters of the Gaussian mechanism.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DpConfig {
    /// L2 clipping norm C of the delta (the sensitivity).
    pub clip: f64,
    /// ε per round, in (0, 1).
    pub epsilon: f64,
    /// δ per round, in (0, 1).
    pub delta: f64,
}

/// σ = C · sqrt(2 ln(1.25 / δ)) / ε, or why the parameters are out of range.
pub fn sigma(cfg: &DpConfig) -> Result<f64, String> {
    if !(cfg.clip.is_finite() && cfg.clip > 0.0) {
        return Err(format!("clip norm must be finite and > 0, got {}", cfg.clip));
    }
    if !(cfg.epsilon > 0.0 && cfg.epsilon < 1.0) {
        return Err(format!(
            "epsilon must be in (0, 1) for the classical Gaussian mechanism, got {}",
            cfg.epsilon
        ));
    }
    if !(cfg.delta > 0.0 && cfg.delta < 1.0) {
        return Err(format!("delta must be in (0, 1), got {}", cfg.delta));
    }
    Ok(cfg.clip * (2.0 * (1.25 / cfg.delta).ln()).sqrt() / cfg.epsilon)
}

/// The update clipped to `cfg.clip` plus N(0, σ²) noise per coordinate.
pub fn privatize(update: &[f64; FEATURES], cfg: &DpConfig, rng: &mut Rng) -> Result<[f64; FEATURES], String> {
    let s = sigma(cfg)?;
    let mut out = clip(update, cfg.clip);
    for x in out.iter_mut() {
        *x += s * rng.normal();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DpConfig {
        DpConfig {
            clip: 0.5,
            epsilon: 0.5,
            delta: 1e-5,
        }
    }

    #[test]
    fn sigma_follows_the_formula_and_rejects_bad_parameters() {
        let s = sigma(&cfg()).unwrap();
        let want = 0.5 * (2.0 * (1.25f64 / 1e-5).ln()).sqrt() / 0.5;
        assert!((s - want).abs() < 1e-12);
        for bad in [
            DpConfig { epsilon: 1.0, ..cfg() },
            DpConfig { epsilon: 0.0, ..cfg() },
            DpConfig {
                epsilon: f64::NAN,
                ..cfg()
            },
            DpConfig { delta: 0.0, ..cfg() },
            DpConfig { delta: 1.0, ..cfg() },
            DpConfig { clip: 0.0, ..cfg() },
            DpConfig {
                clip: f64::INFINITY,
                ..cfg()
            },
        ] {
            assert!(sigma(&bad).is_err(), "{bad:?}");
            assert!(privatize(&[0.0; 5], &bad, &mut Rng::new(1)).is_err());
        }
    }

    #[test]
    fn noise_is_deterministic_for_a_seed() {
        let u = [3.0, 0.0, 0.0, 0.0, 4.0];
        let a = privatize(&u, &cfg(), &mut Rng::new(42)).unwrap();
        let b = privatize(&u, &cfg(), &mut Rng::new(42)).unwrap();
        let c = privatize(&u, &cfg(), &mut Rng::new(43)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn noise_has_about_the_right_mean_and_std() {
        let c = cfg();
        let s = sigma(&c).unwrap();
        let u = [3.0, 0.0, 0.0, 0.0, 4.0]; // clipped to [0.3, 0, 0, 0, 0.4]
        let mut rng = Rng::new(7);
        let n = 20_000;
        let (mut sum, mut sq) = ([0.0; 5], [0.0; 5]);
        for _ in 0..n {
            let v = privatize(&u, &c, &mut rng).unwrap();
            for i in 0..5 {
                sum[i] += v[i];
                sq[i] += v[i] * v[i];
            }
        }
        let clipped = [0.3, 0.0, 0.0, 0.0, 0.4];
        for i in 0..5 {
            let mean = sum[i] / n as f64;
            let std = (sq[i] / n as f64 - mean * mean).sqrt();
            // Standard error of the mean is s / sqrt(n) ~ 0.7% of s.
            assert!((mean - clipped[i]).abs() < 0.04 * s, "mean {i}: {mean}");
            assert!((std / s - 1.0).abs() < 0.03, "std {i}: {std} vs {s}");
        }
    }

    #[test]
    fn rng_uniform_and_normal_are_sane() {
        let mut r = Rng::new(0);
        let n = 50_000;
        let mut mean = 0.0;
        for _ in 0..n {
            let u = r.next_f64();
            assert!((0.0..1.0).contains(&u));
            mean += u;
        }
        assert!((mean / n as f64 - 0.5).abs() < 0.01);
        let (mut m, mut q) = (0.0, 0.0);
        for _ in 0..n {
            let z = r.normal();
            assert!(z.is_finite());
            m += z;
            q += z * z;
        }
        assert!((m / n as f64).abs() < 0.02);
        assert!((q / n as f64 - 1.0).abs() < 0.03);
        assert_eq!(r.below(0), 0);
        assert!(r.below(3) < 3);
    }
}
