//! `BatchNormalization` and `LayerNormalization` over the last axis (Keras's defaults:
//! momentum 0.99, epsilon 1e-3).
//!
//! Shape rule (kiln-spec): output shape = input shape. BatchNormalization normalizes each channel
//! (last axis) over the batch and all other axes; in training it uses the batch's
//! statistics and updates its moving mean and variance (non-trainable parameters), at
//! inference it uses those moving statistics. LayerNormalization normalizes each sample
//! over its last axis.

use super::{Backward, Builtin, Layer, ParamSpec, Params, ParamsMut};
use crate::init::Initializer;
use kiln_spec::{LayerSpec, layers as cfg};
use kiln_tape::Scalar;
use kiln_train::ParamKind;

fn spec(
    name: &'static str,
    n: usize,
    init: Initializer,
    trainable: bool,
    kind: ParamKind,
) -> ParamSpec {
    ParamSpec { name, shape: vec![n], init, trainable, kind }
}

/// Batch normalization over the last axis (Keras `BatchNormalization`).
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [3] => [BatchNormalization] }
/// let y = Net::new(Seed(1)).predict(&Inputs::<S1<3>>::from_vec(vec![1.0, -2.0, 4.0])?)?;
/// // At inference it uses the moving statistics (mean 0, variance 1 before training).
/// let expect = [1.0, -2.0, 4.0].map(|v: f32| v / (1.0f32 + 1e-3).sqrt());
/// assert!(y.data().iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-6));
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct BatchNormalization<T = f32> {
    cfg: cfg::BatchNormalization,
    channels: usize,
    xhat: Vec<T>,
    inv_std: Vec<T>,
    mean: Vec<T>,
}

impl<T: Scalar> Default for BatchNormalization<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Scalar> BatchNormalization<T> {
    /// Momentum 0.99 and epsilon 1e-3, as Keras.
    pub fn new() -> Self {
        cfg::BatchNormalization::default().into_layer()
    }
    /// The moving statistics' momentum.
    pub fn momentum(mut self, m: f64) -> Self {
        self.cfg.momentum = m;
        self
    }
    /// The variance floor.
    pub fn epsilon(mut self, e: f64) -> Self {
        self.cfg.epsilon = e;
        self
    }
}

impl<T: Scalar> Builtin<T> for cfg::BatchNormalization {
    type Layer = BatchNormalization<T>;
    fn into_layer(self) -> BatchNormalization<T> {
        BatchNormalization {
            cfg: self,
            channels: 0,
            xhat: Vec::new(),
            inv_std: Vec::new(),
            mean: Vec::new(),
        }
    }
}

impl<T: Scalar> Layer<T> for BatchNormalization<T> {
    fn class_name(&self) -> &'static str {
        cfg::BatchNormalization::CLASS
    }
    fn base_name(&self) -> &'static str {
        cfg::BatchNormalization::BASE_NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let out = self.cfg.output(input).map_err(|e| e.message)?;
        self.channels = input[input.len() - 1];
        Ok(out)
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let c = self.channels;
        vec![
            spec("gamma", c, Initializer::Ones, true, ParamKind::Scale),
            spec("beta", c, Initializer::Zeros, true, ParamKind::Shift),
            spec("moving_mean", c, Initializer::Zeros, false, ParamKind::Statistic),
            spec("moving_variance", c, Initializer::Ones, false, ParamKind::Statistic),
        ]
    }
    fn forward(
        &mut self,
        p: Params<'_, T>,
        x: &[T],
        _batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        let (gamma, beta) = (p.param("gamma"), p.param("beta"));
        let (mm, mv) = (p.param("moving_mean"), p.param("moving_variance"));
        let eps = T::of(self.cfg.epsilon);
        let c = self.channels;
        for (xr, yr) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
            for k in 0..c {
                yr[k] = gamma[k] * (xr[k] - mm[k]) / (mv[k] + eps).sqrt() + beta[k];
            }
        }
        Ok(())
    }
    fn forward_train(
        &mut self,
        mut p: ParamsMut<'_, T>,
        x: &[T],
        _batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        let c = self.channels;
        let rows = x.len() / c;
        let eps = T::of(self.cfg.epsilon);
        self.mean.resize(c, T::zero());
        self.inv_std.resize(c, T::zero());
        self.xhat.resize(x.len(), T::zero());
        self.mean.fill(T::zero());
        for r in x.chunks_exact(c) {
            for (m, &v) in self.mean.iter_mut().zip(r) {
                *m += v;
            }
        }
        let inv_n = T::one() / T::of(rows as f64);
        self.mean.iter_mut().for_each(|m| *m *= inv_n);
        // Biased variance (as Keras), reused as the inverse standard deviation buffer.
        let var = &mut self.inv_std;
        var.fill(T::zero());
        for r in x.chunks_exact(c) {
            for k in 0..c {
                let d = r[k] - self.mean[k];
                var[k] += d * d;
            }
        }
        var.iter_mut().for_each(|v| *v *= inv_n);
        {
            let [mm, mv] = p.params_mut(["moving_mean", "moving_variance"]);
            let m = T::of(self.cfg.momentum);
            for k in 0..c {
                mm[k] = mm[k] * m + self.mean[k] * (T::one() - m);
                mv[k] = mv[k] * m + var[k] * (T::one() - m);
            }
        }
        var.iter_mut().for_each(|v| *v = T::one() / (*v + eps).sqrt());
        let (gamma, beta) = (p.param("gamma"), p.param("beta"));
        for ((xr, yr), hr) in
            x.chunks_exact(c).zip(y.chunks_exact_mut(c)).zip(self.xhat.chunks_exact_mut(c))
        {
            for k in 0..c {
                hr[k] = (xr[k] - self.mean[k]) * self.inv_std[k];
                yr[k] = gamma[k] * hr[k] + beta[k];
            }
        }
        Ok(())
    }
    fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { params: p, x, dy, grads: mut g, dx, .. } = b;
        let c = self.channels;
        let n = x.len();
        let rows = T::of((n / c) as f64);
        {
            let [dgamma, dbeta] = g.params_mut(["gamma", "beta"]);
            dgamma.fill(T::zero());
            dbeta.fill(T::zero());
            for (dr, hr) in dy[..n].chunks_exact(c).zip(self.xhat.chunks_exact(c)) {
                for k in 0..c {
                    dgamma[k] += dr[k] * hr[k];
                    dbeta[k] += dr[k];
                }
            }
        }
        g.param_mut("moving_mean").fill(T::zero());
        g.param_mut("moving_variance").fill(T::zero());
        if let Some(dx) = dx {
            let gamma = p.param("gamma");
            let (dgamma, dbeta) = (g.param("gamma"), g.param("beta"));
            for ((dxr, dr), hr) in dx[..n]
                .chunks_exact_mut(c)
                .zip(dy[..n].chunks_exact(c))
                .zip(self.xhat.chunks_exact(c))
            {
                for k in 0..c {
                    dxr[k] = gamma[k] * self.inv_std[k] / rows
                        * (rows * dr[k] - dbeta[k] - hr[k] * dgamma[k]);
                }
            }
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("momentum={}, epsilon={}", self.cfg.momentum, self.cfg.epsilon)
    }
}

/// Layer normalization over the last axis of each sample (Keras `LayerNormalization`).
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [4] => [LayerNormalization] }
/// let y = Net::new(Seed(1)).predict(&Inputs::<S1<4>>::from_vec(vec![1.0, 2.0, 3.0, 6.0])?)?;
/// let mean = y.data().iter().sum::<f32>() / 4.0;
/// assert!(mean.abs() < 1e-6); // each sample normalized over its last axis
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct LayerNormalization<T = f32> {
    cfg: cfg::LayerNormalization,
    width: usize,
    xhat: Vec<T>,
    inv_std: Vec<T>,
}

impl<T: Scalar> Default for LayerNormalization<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Scalar> LayerNormalization<T> {
    /// Epsilon 1e-3, as Keras.
    pub fn new() -> Self {
        cfg::LayerNormalization::default().into_layer()
    }
    /// The variance floor.
    pub fn epsilon(mut self, e: f64) -> Self {
        self.cfg.epsilon = e;
        self
    }
    fn normalize(&mut self, gamma: &[T], beta: &[T], x: &[T], y: &mut [T]) {
        let w = self.width;
        let eps = T::of(self.cfg.epsilon);
        let rows = x.len() / w;
        self.xhat.resize(x.len(), T::zero());
        self.inv_std.resize(rows, T::zero());
        for (r, ((xr, yr), hr)) in x
            .chunks_exact(w)
            .zip(y.chunks_exact_mut(w))
            .zip(self.xhat.chunks_exact_mut(w))
            .enumerate()
        {
            let mean = xr.iter().copied().sum::<T>() / T::of(w as f64);
            let var = xr.iter().map(|&v| (v - mean) * (v - mean)).sum::<T>() / T::of(w as f64);
            let inv = T::one() / (var + eps).sqrt();
            self.inv_std[r] = inv;
            for k in 0..w {
                hr[k] = (xr[k] - mean) * inv;
                yr[k] = gamma[k] * hr[k] + beta[k];
            }
        }
    }
}

impl<T: Scalar> Builtin<T> for cfg::LayerNormalization {
    type Layer = LayerNormalization<T>;
    fn into_layer(self) -> LayerNormalization<T> {
        LayerNormalization { cfg: self, width: 0, xhat: Vec::new(), inv_std: Vec::new() }
    }
}

impl<T: Scalar> Layer<T> for LayerNormalization<T> {
    fn class_name(&self) -> &'static str {
        cfg::LayerNormalization::CLASS
    }
    fn base_name(&self) -> &'static str {
        cfg::LayerNormalization::BASE_NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let out = self.cfg.output(input).map_err(|e| e.message)?;
        self.width = input[input.len() - 1];
        Ok(out)
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        vec![
            spec("gamma", self.width, Initializer::Ones, true, ParamKind::Scale),
            spec("beta", self.width, Initializer::Zeros, true, ParamKind::Shift),
        ]
    }
    fn forward(
        &mut self,
        p: Params<'_, T>,
        x: &[T],
        _batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        self.normalize(p.param("gamma"), p.param("beta"), x, y);
        Ok(())
    }
    fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { params: p, x, dy, grads: mut g, dx, .. } = b;
        let w = self.width;
        let n = x.len();
        {
            let [dgamma, dbeta] = g.params_mut(["gamma", "beta"]);
            dgamma.fill(T::zero());
            dbeta.fill(T::zero());
            for (dr, hr) in dy[..n].chunks_exact(w).zip(self.xhat.chunks_exact(w)) {
                for k in 0..w {
                    dgamma[k] += dr[k] * hr[k];
                    dbeta[k] += dr[k];
                }
            }
        }
        if let Some(dx) = dx {
            let gamma = p.param("gamma");
            let wt = T::of(w as f64);
            for (r, ((dxr, dr), hr)) in dx[..n]
                .chunks_exact_mut(w)
                .zip(dy[..n].chunks_exact(w))
                .zip(self.xhat.chunks_exact(w))
                .enumerate()
            {
                // With ĝ = γ ⊙ dy: dx = inv/w · (w·ĝ − Σĝ − x̂·Σ(ĝ ⊙ x̂)).
                let (mut s1, mut s2) = (T::zero(), T::zero());
                for k in 0..w {
                    let gh = gamma[k] * dr[k];
                    s1 += gh;
                    s2 += gh * hr[k];
                }
                for k in 0..w {
                    dxr[k] = self.inv_std[r] / wt * (wt * gamma[k] * dr[k] - s1 - hr[k] * s2);
                }
            }
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("epsilon={}", self.cfg.epsilon)
    }
}
