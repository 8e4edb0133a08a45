//! Learning-rate schedules with Keras's names and formulas, evaluated at the optimizer's
//! step count (the number of updates applied so far).

/// A learning rate as a function of the step.
pub trait Schedule: Send + std::fmt::Debug {
    /// The learning rate at `step` (0 for the first update).
    fn at(&self, step: u64) -> f64;
}

/// `initial · rate^(step / decay_steps)`, with integer division when `staircase`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExponentialDecay {
    /// Learning rate at step 0.
    pub initial_learning_rate: f64,
    /// Steps per decay period.
    pub decay_steps: u64,
    /// Factor per period.
    pub decay_rate: f64,
    /// Decay in whole periods only.
    pub staircase: bool,
}

impl ExponentialDecay {
    /// Keras's `ExponentialDecay(initial_learning_rate, decay_steps, decay_rate)`.
    pub fn new(initial_learning_rate: f64, decay_steps: u64, decay_rate: f64) -> Self {
        ExponentialDecay {
            initial_learning_rate,
            decay_steps: decay_steps.max(1),
            decay_rate,
            staircase: false,
        }
    }

    /// Decays in whole periods.
    pub fn staircase(mut self) -> Self {
        self.staircase = true;
        self
    }
}

impl Schedule for ExponentialDecay {
    fn at(&self, step: u64) -> f64 {
        let mut p = step as f64 / self.decay_steps as f64;
        if self.staircase {
            p = p.floor();
        }
        self.initial_learning_rate * self.decay_rate.powf(p)
    }
}

/// `values[i]` while `step ≤ boundaries[i]` (Keras's PiecewiseConstantDecay).
#[derive(Clone, Debug, PartialEq)]
pub struct PiecewiseConstantDecay {
    /// Step boundaries, increasing.
    pub boundaries: Vec<u64>,
    /// One more value than boundaries.
    pub values: Vec<f64>,
}

impl PiecewiseConstantDecay {
    /// Keras's `PiecewiseConstantDecay(boundaries, values)`; `None` unless
    /// `values.len() == boundaries.len() + 1` and the boundaries increase.
    pub fn new(boundaries: Vec<u64>, values: Vec<f64>) -> Option<Self> {
        (values.len() == boundaries.len() + 1 && boundaries.windows(2).all(|w| w[0] < w[1]))
            .then_some(PiecewiseConstantDecay { boundaries, values })
    }
}

impl Schedule for PiecewiseConstantDecay {
    fn at(&self, step: u64) -> f64 {
        let i = self.boundaries.iter().position(|&b| step <= b).unwrap_or(self.boundaries.len());
        self.values[i]
    }
}

/// Cosine decay from `initial` to `initial·alpha` over `decay_steps`, after an optional
/// linear warm-up to `warmup_target` (Keras 3's CosineDecay).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineDecay {
    /// Learning rate at step 0.
    pub initial_learning_rate: f64,
    /// Steps of the cosine part.
    pub decay_steps: u64,
    /// Floor as a fraction of the starting rate.
    pub alpha: f64,
    /// Steps of linear warm-up (0 for none).
    pub warmup_steps: u64,
    /// Rate reached at the end of warm-up (the cosine then starts from it).
    pub warmup_target: Option<f64>,
}

impl CosineDecay {
    /// Keras's `CosineDecay(initial_learning_rate, decay_steps)`.
    pub fn new(initial_learning_rate: f64, decay_steps: u64) -> Self {
        CosineDecay {
            initial_learning_rate,
            decay_steps: decay_steps.max(1),
            alpha: 0.0,
            warmup_steps: 0,
            warmup_target: None,
        }
    }

    /// Sets the floor fraction.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Adds a linear warm-up of `steps` to `target`.
    pub fn warmup(mut self, steps: u64, target: f64) -> Self {
        self.warmup_steps = steps;
        self.warmup_target = Some(target);
        self
    }
}

impl Schedule for CosineDecay {
    fn at(&self, step: u64) -> f64 {
        let (start, step) = match self.warmup_target {
            Some(target) if step < self.warmup_steps => {
                let frac = step as f64 / self.warmup_steps as f64;
                return self.initial_learning_rate + (target - self.initial_learning_rate) * frac;
            }
            Some(target) => (target, step - self.warmup_steps),
            None => (self.initial_learning_rate, step),
        };
        let done = (step as f64).min(self.decay_steps as f64) / self.decay_steps as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * done).cos());
        start * ((1.0 - self.alpha) * cosine + self.alpha)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_keras_formulas() {
        let e = ExponentialDecay::new(0.1, 10, 0.5);
        assert!((e.at(5) - 0.1 * 0.5f64.powf(0.5)).abs() < 1e-15);
        assert_eq!(e.staircase().at(15), 0.05);
        let p = PiecewiseConstantDecay::new(vec![10, 20], vec![1.0, 0.5, 0.1]).unwrap();
        assert_eq!((p.at(10), p.at(11), p.at(21)), (1.0, 0.5, 0.1));
        assert!(PiecewiseConstantDecay::new(vec![10], vec![1.0]).is_none());
        let c = CosineDecay::new(1.0, 100).alpha(0.1);
        assert!(
            (c.at(0) - 1.0).abs() < 1e-15
                && (c.at(100) - 0.1).abs() < 1e-15
                && (c.at(500) - 0.1).abs() < 1e-15
        );
        assert!((c.at(50) - 0.55).abs() < 1e-12);
        let w = CosineDecay::new(0.0, 10).warmup(5, 1.0);
        assert_eq!(w.at(0), 0.0);
        assert!((w.at(4) - 0.8).abs() < 1e-12 && (w.at(5) - 1.0).abs() < 1e-12);
    }
}
