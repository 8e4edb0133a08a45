//! Finite-difference gradient checking in f64, for tape operations and (in later crates)
//! layers and losses.

use crate::error::Result;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// What a gradient check found: the worst disagreement between the tape's gradient and
/// central differences, and where it was.
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckReport {
    /// `|analytic − numeric| / max(|analytic|, |numeric|, floor)`, worst over all elements.
    pub worst_rel_error: f64,
    /// Which input held the worst element.
    pub input: usize,
    /// The worst element's multi-index within that input.
    pub index: Vec<usize>,
    /// The tape's gradient there.
    pub analytic: f64,
    /// The central-difference estimate there.
    pub numeric: f64,
    /// How many elements were checked.
    pub checked: usize,
}

/// Step and error floor of a gradient check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradcheckOptions {
    /// Central-difference step.
    pub eps: f64,
    /// Lower bound of the relative error's denominator, so that gradients that are
    /// zero up to rounding are compared absolutely rather than blowing up.
    pub floor: f64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions { eps: 1e-5, floor: 1e-3 }
    }
}

/// Checks the tape's gradient of `f` at `inputs` against central differences.
///
/// `f` may return a tensor of any shape: it is contracted with fixed pseudo-random
/// weights into a scalar, so every output element's gradient path is exercised.
pub fn gradcheck<F>(inputs: &[Tensor<f64>], f: F) -> Result<GradcheckReport>
where
    F: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Result<Var<'t, f64>>,
{
    gradcheck_with(inputs, GradcheckOptions::default(), f)
}

/// [`gradcheck`] with an explicit step and floor.
pub fn gradcheck_with<F>(
    inputs: &[Tensor<f64>],
    opts: GradcheckOptions,
    f: F,
) -> Result<GradcheckReport>
where
    F: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Result<Var<'t, f64>>,
{
    // Weighted sum of the output; the weights depend only on the output's shape.
    let scalar =
        |inputs: &[Tensor<f64>], record: bool| -> Result<(f64, Vec<Option<Tensor<f64>>>)> {
            let tape = Tape::new();
            let vars: Vec<Var<'_, f64>> = inputs
                .iter()
                .map(|t| if record { tape.var(t.clone()) } else { tape.constant(t.clone()) })
                .collect();
            let y = f(&tape, &vars)?;
            let w = tape.constant(Tensor::random_normal(&y.shape(), 0.0, 1.0, 0x5eed));
            let loss = y.mul(w)?.sum()?;
            let value = loss.value().data()[0];
            if !record {
                return Ok((value, Vec::new()));
            }
            let mut grads = tape.backward(loss)?;
            Ok((value, vars.iter().map(|&v| grads.take(v)).collect()))
        };
    let (_, analytic) = scalar(inputs, true)?;
    let mut report = GradcheckReport {
        worst_rel_error: 0.0,
        input: 0,
        index: Vec::new(),
        analytic: 0.0,
        numeric: 0.0,
        checked: 0,
    };
    let mut probe = inputs.to_vec();
    for (i, input) in inputs.iter().enumerate() {
        for j in 0..input.len() {
            let x0 = input.data()[j];
            probe[i].data_mut()[j] = x0 + opts.eps;
            let (plus, _) = scalar(&probe, false)?;
            probe[i].data_mut()[j] = x0 - opts.eps;
            let (minus, _) = scalar(&probe, false)?;
            probe[i].data_mut()[j] = x0;
            let numeric = (plus - minus) / (2.0 * opts.eps);
            let a = analytic[i].as_ref().map_or(0.0, |g| g.data()[j]);
            let rel = (a - numeric).abs() / a.abs().max(numeric.abs()).max(opts.floor);
            report.checked += 1;
            if rel > report.worst_rel_error || rel.is_nan() {
                report.worst_rel_error = rel;
                report.input = i;
                report.index = unflatten(j, input.shape());
                report.analytic = a;
                report.numeric = numeric;
            }
        }
    }
    Ok(report)
}

fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
    idx
}
