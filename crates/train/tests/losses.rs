//! Every loss: its gradient against central differences in f64, its value against a
//! hand computation, and the fused logit path against the probability path.

use kiln_train::data::Truth;
use kiln_train::loss::{self, LossBatch, LossInfo, activate};
use kiln_train::tape::Tensor;
use kiln_train::*;

fn randv(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    Tensor::<f64>::random_normal(&[n], 0.0, scale, seed).into_vec()
}

/// Loss value (reduced, sum over batch) for outputs computed from `z` via `act`.
fn total(
    l: &dyn Loss<f64>,
    act: OutputActivation,
    z: &[f64],
    truth: Truth<'_, f64>,
    batch: usize,
    width: usize,
) -> f64 {
    let mut out = vec![0.0; z.len()];
    activate(act, z, width, &mut out);
    let b = LossBatch {
        outputs: &out,
        logits: (act != OutputActivation::Linear).then_some(z),
        activation: act,
        truth,
        batch,
        width,
    };
    let mut losses = vec![0.0; batch];
    l.compute(&b, &mut losses, None).unwrap();
    losses.iter().sum()
}

/// Checks the gradient a loss returns (w.r.t. logits or outputs, as it says) against
/// central differences of Σ per-sample losses.
fn check_grad(
    l: &dyn Loss<f64>,
    act: OutputActivation,
    z: &[f64],
    truth: Truth<'_, f64>,
    batch: usize,
    width: usize,
) -> LossInfo {
    let mut out = vec![0.0; z.len()];
    activate(act, z, width, &mut out);
    let b = LossBatch {
        outputs: &out,
        logits: (act != OutputActivation::Linear).then_some(z),
        activation: act,
        truth,
        batch,
        width,
    };
    let mut losses = vec![0.0; batch];
    let mut grad = vec![0.0; z.len()];
    let info = l.compute(&b, &mut losses, Some(&mut grad)).unwrap();
    let eps = 1e-6;
    for j in 0..z.len() {
        let numeric = if info.wrt_logits {
            let (mut zp, mut zm) = (z.to_vec(), z.to_vec());
            zp[j] += eps;
            zm[j] -= eps;
            (total(l, act, &zp, truth, batch, width) - total(l, act, &zm, truth, batch, width))
                / (2.0 * eps)
        } else {
            let (mut op, mut om) = (out.clone(), out.clone());
            op[j] += eps;
            om[j] -= eps;
            (total(l, OutputActivation::Linear, &op, truth, batch, width)
                - total(l, OutputActivation::Linear, &om, truth, batch, width))
                / (2.0 * eps)
        };
        let err = (grad[j] - numeric).abs() / grad[j].abs().max(numeric.abs()).max(1e-3);
        assert!(
            err < 1e-6,
            "{}: d/d{}[{j}] analytic {} numeric {numeric}",
            l.name(),
            if info.wrt_logits { "z" } else { "p" },
            grad[j]
        );
    }
    assert!(losses.iter().all(|v| v.is_finite()));
    info
}

#[test]
fn crossentropies_take_the_fused_logit_gradient_under_softmax_and_sigmoid() {
    let (batch, width) = (4, 3);
    let z = randv(batch * width, 1, 2.0);
    let classes = [0usize, 2, 1, 2];
    let onehot: Vec<f64> = (0..batch * width)
        .map(|j| if classes[j / width] == j % width { 1.0 } else { 0.0 })
        .collect();
    let scce = SparseCategoricalCrossentropy::default();
    let info =
        check_grad(&scce, OutputActivation::Softmax, &z, Truth::Classes(&classes), batch, width);
    assert!(info.wrt_logits);
    let info = check_grad(
        &scce,
        OutputActivation::Linear,
        &z.iter().map(|v| v.abs() + 0.1).collect::<Vec<_>>(),
        Truth::Classes(&classes),
        batch,
        width,
    );
    assert!(!info.wrt_logits, "probability path without softmax");
    check_grad(
        &SparseCategoricalCrossentropy::default().from_logits(),
        OutputActivation::Linear,
        &z,
        Truth::Classes(&classes),
        batch,
        width,
    );
    for ls in [0.0, 0.1] {
        let cce = CategoricalCrossentropy::default().label_smoothing(ls);
        assert!(
            check_grad(&cce, OutputActivation::Softmax, &z, Truth::Dense(&onehot), batch, width)
                .wrt_logits
        );
        check_grad(
            &cce.from_logits(),
            OutputActivation::Linear,
            &z,
            Truth::Dense(&onehot),
            batch,
            width,
        );
        let bce = BinaryCrossentropy::default().label_smoothing(ls);
        assert!(
            check_grad(&bce, OutputActivation::Sigmoid, &z, Truth::Dense(&onehot), batch, width)
                .wrt_logits
        );
        let probs: Vec<f64> = z.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect();
        assert!(
            !check_grad(
                &bce,
                OutputActivation::Linear,
                &probs,
                Truth::Dense(&onehot),
                batch,
                width
            )
            .wrt_logits
        );
    }
}

#[test]
fn fused_and_probability_paths_agree() {
    let (batch, width) = (5, 4);
    let z = randv(batch * width, 2, 1.5);
    let classes = [1usize, 0, 3, 3, 2];
    let mut p = vec![0.0; z.len()];
    activate(OutputActivation::Softmax, &z, width, &mut p);
    let scce = SparseCategoricalCrossentropy::default();
    let fused = total(&scce, OutputActivation::Softmax, &z, Truth::Classes(&classes), batch, width);
    let probs = total(&scce, OutputActivation::Linear, &p, Truth::Classes(&classes), batch, width);
    assert!((fused - probs).abs() < 1e-9, "{fused} vs {probs}");
    let hand: f64 = (0..batch).map(|i| -p[i * width + classes[i]].ln()).sum();
    assert!((fused - hand).abs() < 1e-12);
}

#[test]
fn extreme_logits_stay_finite() {
    let z = [1e4, -1e4, 0.0, -1e4, 1e4, 5.0];
    let classes = [1usize, 0];
    let mut out = [0.0; 6];
    activate(OutputActivation::Softmax, &z, 3, &mut out);
    let b = LossBatch {
        outputs: &out,
        logits: Some(&z),
        activation: OutputActivation::Softmax,
        truth: Truth::Classes(&classes),
        batch: 2,
        width: 3,
    };
    let (mut l, mut g) = ([0.0; 2], [0.0; 6]);
    Loss::<f64>::compute(&SparseCategoricalCrossentropy::default(), &b, &mut l, Some(&mut g))
        .unwrap();
    assert!(l.iter().chain(&g).all(|v| v.is_finite()), "{l:?} {g:?}");
    assert!((l[0] - 2e4).abs() < 1e-6, "{l:?}");
    let y = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
    let b = LossBatch {
        outputs: &out,
        logits: Some(&z),
        activation: OutputActivation::Sigmoid,
        truth: Truth::Dense(&y),
        batch: 2,
        width: 3,
    };
    Loss::<f64>::compute(&BinaryCrossentropy::default(), &b, &mut l, Some(&mut g)).unwrap();
    assert!(l.iter().chain(&g).all(|v| v.is_finite()), "{l:?} {g:?}");
}

/// A loss with the outputs and targets to check it on.
type Case<'a> = (Box<dyn Loss<f64>>, &'a [f64], &'a [f64]);

#[test]
fn regression_and_hinge_losses() {
    let (batch, width) = (3, 2);
    let p = randv(6, 3, 1.0);
    let y: Vec<f64> = randv(6, 4, 1.0).iter().map(|v| v + 0.3).collect();
    let positive: Vec<f64> = p.iter().map(|v| v.abs() + 0.2).collect();
    let prob_targets: Vec<f64> = y.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
    let pm: Vec<f64> = (0..6).map(|i| if i % 3 == 0 { 1.0 } else { 0.0 }).collect();
    let onehot = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0];
    let lin = OutputActivation::Linear;
    let reversed: Vec<f64> = prob_targets.iter().rev().copied().collect();
    let cases: Vec<Case<'_>> = vec![
        (Box::new(MeanSquaredError::default()), &p, &y),
        (Box::new(MeanAbsoluteError::default()), &p, &y),
        (Box::new(MeanAbsolutePercentageError::default()), &p, &y),
        (Box::new(Huber::default()), &p, &y),
        (Box::new(Huber { delta: 0.3, ..Huber::default() }), &p, &y),
        (Box::new(LogCosh::default()), &p, &y),
        (Box::new(Poisson::default()), &positive, &y),
        (Box::new(KLDivergence::default()), &prob_targets, &reversed),
        (Box::new(Hinge::default()), &p, &pm),
        (Box::new(SquaredHinge::default()), &p, &pm),
        (Box::new(CategoricalHinge::default()), &p, &onehot),
    ];
    for (l, p, y) in &cases {
        check_grad(l.as_ref(), lin, p, Truth::Dense(y), batch, width);
    }
    // Hand values for one sample: p = [1, 3], y = [0, 1].
    let hand = |l: &dyn Loss<f64>| total(l, lin, &[1.0, 3.0], Truth::Dense(&[0.0, 1.0]), 1, 2);
    assert_eq!(hand(&MeanSquaredError::default()), 2.5);
    assert_eq!(hand(&MeanAbsoluteError::default()), 1.5);
    assert_eq!(hand(&Huber::default()), (0.5 + 1.5) / 2.0);
    // Keras subtracts log 2 rounded to float32, 2.1e-9 more than the exact log(cosh).
    let keras_ln2_offset = std::f64::consts::LN_2 as f32 as f64 - std::f64::consts::LN_2;
    let exact = ((1f64).cosh().ln() + (2f64).cosh().ln()) / 2.0;
    assert!((hand(&LogCosh::default()) - (exact - keras_ln2_offset)).abs() < 1e-15);
    assert_eq!(hand(&Hinge::default()), (2.0 + 0.0) / 2.0);
    assert_eq!(hand(&CategoricalHinge::default()), 0.0f64.max(1.0 - 3.0 + 1.0));
}

#[test]
fn reduction_and_sample_weights_and_ignore_class() {
    let info = LossInfo { wrt_logits: false, counted: 4 };
    let losses = [1.0, 2.0, 3.0, 4.0];
    let weights = [1.0, 0.0, 2.0, 1.0];
    let reduce = |r: Reduction, sw: Option<&[f64]>, grad: Option<&mut [f64]>| {
        let mut l = losses;
        let v = loss::reduce_rows(r, info, &mut l, sw, grad, 2, |_| false);
        (v, l)
    };
    let mut grad = vec![1.0; 8];
    let (v, _) = reduce(Reduction::SumOverBatchSize, Some(&weights), Some(&mut grad));
    assert_eq!(v, (1.0 + 6.0 + 4.0) / 4.0);
    assert_eq!(grad, [0.25, 0.25, 0.0, 0.0, 0.5, 0.5, 0.25, 0.25]);
    assert_eq!(reduce(Reduction::Sum, None, None).0, 10.0);
    // A weighted mean divides by the weights' sum; "none" leaves the weighted rows.
    let mut grad = vec![1.0; 8];
    let (v, _) = reduce(Reduction::MeanWithSampleWeight, Some(&weights), Some(&mut grad));
    assert_eq!(v, (1.0 + 6.0 + 4.0) / 4.0);
    assert_eq!(grad, [0.25, 0.25, 0.0, 0.0, 0.5, 0.5, 0.25, 0.25]);
    let (v, _) = reduce(Reduction::MeanWithSampleWeight, Some(&[0.5, 0.0, 0.0, 0.0]), None);
    assert_eq!(v, 1.0);
    let (v, l) = reduce(Reduction::None, Some(&weights), None);
    assert_eq!((v, l), ((1.0 + 6.0 + 4.0) / 4.0, [1.0, 0.0, 6.0, 4.0]));
    // Nothing to count: 0, not NaN.
    assert_eq!(reduce(Reduction::MeanWithSampleWeight, Some(&[0.0; 4]), None).0, 0.0);

    // ignore_class: the ignored sample adds nothing and the mean is over the others.
    let z = randv(6, 5, 1.0);
    let mut out = vec![0.0; 6];
    activate(OutputActivation::Softmax, &z, 3, &mut out);
    let classes = [0usize, 2];
    let b = LossBatch {
        outputs: &out,
        logits: Some(&z),
        activation: OutputActivation::Softmax,
        truth: Truth::Classes(&classes),
        batch: 2,
        width: 3,
    };
    let (mut l, mut g) = ([0.0; 2], [0.0; 6]);
    let info = Loss::<f64>::compute(
        &SparseCategoricalCrossentropy::default().ignore_class(2),
        &b,
        &mut l,
        Some(&mut g),
    )
    .unwrap();
    assert_eq!(info.counted, 1);
    assert_eq!((l[1], &g[3..]), (0.0, &[0.0; 3][..]));
    let ignore = SparseCategoricalCrossentropy::default().ignore_class(2);
    let mean = loss::reduce_with(&ignore, &b, info, &mut l.clone(), None, None);
    assert!((mean - l[0]).abs() < 1e-15);
    // The ignored row's weight does not count in a weighted mean either.
    let weighted =
        SparseCategoricalCrossentropy { reduction: Reduction::MeanWithSampleWeight, ..ignore };
    let mean = loss::reduce_with(&weighted, &b, info, &mut l.clone(), Some(&[2.0, 3.0]), None);
    assert!((mean - l[0]).abs() < 1e-15);
}

#[test]
fn losses_reject_labels_that_do_not_fit() {
    let soft = OutputActivation::Softmax;
    let e = Loss::<f32>::check(&SparseCategoricalCrossentropy::default(), soft, 10, Some(10))
        .unwrap_err()
        .to_string();
    assert!(e.contains("use categorical_crossentropy for one-hot targets"), "{e}");
    let e = Loss::<f32>::check(
        &SparseCategoricalCrossentropy::default(),
        OutputActivation::Sigmoid,
        1,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("at least 2"), "{e}");
    let e = Loss::<f32>::check(&CategoricalCrossentropy::default(), soft, 10, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("one-hot encode them"), "{e}");
    assert!(
        Loss::<f32>::check(&MeanSquaredError::default(), OutputActivation::Linear, 2, Some(3))
            .is_err()
    );
    assert!(
        Loss::<f32>::check(&BinaryCrossentropy::default(), OutputActivation::Sigmoid, 1, None)
            .is_ok()
    );
    assert!(
        Loss::<f32>::check(&CategoricalCrossentropy::default().from_logits(), soft, 3, Some(3))
            .is_err()
    );
    let e = loss::loss_by_name::<f32>("mean_squared_eror").err().unwrap().to_string();
    assert!(e.contains("did you mean \"mean_squared_error\""), "{e}");
}

#[test]
fn a_forward_only_loss_gets_its_gradient_from_the_tape() {
    // Mean of (p − y)⁴ over the last axis, written only as a forward pass.
    let quartic = TapeLoss::new("quartic", |p, y| p.sub(y)?.powf(4.0).mean_axis(1));
    let p = randv(6, 6, 1.0);
    let y = randv(6, 7, 1.0);
    check_grad(&quartic, OutputActivation::Linear, &p, Truth::Dense(&y), 3, 2);
}

/// The registries: every listed name builds, and names are suggested from the same
/// list the lookup uses (`kullback_leibler_divergence` used to be accepted but never
/// suggested).
#[test]
fn every_registered_name_resolves_and_is_suggested_from_the_same_list() {
    use kiln_train::optim::{IntoOptimizer, OPTIMIZER_NAMES};
    for n in loss::LOSS_NAMES {
        assert!(loss::loss_by_name::<f32>(n).is_ok(), "loss {n}");
    }
    let e = loss::loss_by_name::<f32>("kullback_leibler_divergense").err().unwrap().to_string();
    assert!(e.contains("did you mean \"kullback_leibler_divergence\""), "{e}");
    for n in OPTIMIZER_NAMES {
        assert!(IntoOptimizer::<f64>::into_optimizer(*n).is_ok(), "optimizer {n}");
    }
    for n in kiln_train::metrics::METRIC_NAMES {
        for width in [1, 3] {
            assert!(kiln_train::metrics::metric_by_name::<f32>(n, width).is_ok(), "metric {n}");
        }
    }
}

#[test]
fn loss_value_reduces_as_keras_and_refuses_labels_that_do_not_match() {
    let mse = MeanSquaredError::default();
    let v =
        loss::value(&mse, Truth::Dense(&[1.0, 2.0, 3.0, 4.0]), &[1.0, 2.0, 3.0, 6.0], 2).unwrap();
    assert_eq!(v, 1.0); // rows (0, 0) and (0, 4): per-row means 0 and 2, batch mean 1
    let sparse = SparseCategoricalCrossentropy::default();
    let v = loss::value(&sparse, Truth::Classes(&[1]), &[0.5f64, 0.5], 2).unwrap();
    assert!((v - std::f64::consts::LN_2).abs() < 1e-12);
    for (truth, pred, width) in [
        (Truth::Dense(&[1.0, 2.0][..]), &[1.0, 2.0, 3.0][..], 1),
        (Truth::Classes(&[0, 1][..]), &[0.5, 0.5][..], 2),
        (Truth::Dense(&[1.0][..]), &[1.0][..], 0),
    ] {
        let e = loss::value(&mse as &dyn Loss<f64>, truth, pred, width).unwrap_err().to_string();
        assert!(e.contains("do not split into rows"), "{e}");
    }
}
