//! Every built-in layer's hand-written (fused) backward pass against the tape's gradient
//! of the same forward pass written with tape operations — in f32 (≤ 1e-5) and f64
//! (≤ 1e-10) — and against central differences of the layer itself in f64.
//! Run with `--nocapture` for the per-layer figures.
//!
//! Fused-vs-tape errors are norm-wise per tensor, ‖a − b‖∞ / ‖b‖∞: normalization layers'
//! input gradients sum to zero, so some entries are cancellation residue whose
//! elementwise relative error says nothing about f32 accuracy.

use kiln::layers::*;
use kiln::tape::kernels::Padding;
use kiln::tape::{Activation as A, Scalar, Tape, Tensor, Trans, Var};

type TapeFwd<T> =
    dyn for<'t> Fn(&'t Tape<T>, Var<'t, T>, &[Var<'t, T>], usize) -> kiln::tape::Result<Var<'t, T>>;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-3)
}

/// ‖a − b‖∞ / ‖b‖∞ (absolute when b is all zeros).
fn normwise<T: Scalar>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(b).map(|(x, y)| (x.as_f64() - y.as_f64()).abs()).fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.as_f64().abs()).fold(0.0, f64::max);
    if scale == 0.0 { diff } else { diff / scale }
}

struct Outcome {
    vs_tape: f64,
    numeric: Option<f64>,
}

/// Runs one layer: forward_train, backward with a random upstream gradient, the tape's
/// gradient of Σ w ⊙ f(x, θ), and (f64) central differences.
fn check<T: Scalar>(
    mut layer: Box<dyn Layer<T>>,
    input: &[usize],
    batch: usize,
    x: Vec<T>,
    tape_fwd: &TapeFwd<T>,
    numeric: bool,
) -> Outcome {
    let out_shape = layer.build(input).unwrap();
    let specs = layer.param_specs();
    let mut ranges = Vec::new();
    let mut theta = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let n: usize = s.shape.iter().product();
        ranges.push(theta.len()..theta.len() + n);
        let init =
            Tensor::<T>::random_normal(&[n], T::zero(), T::of(0.5), 100 + i as u64).into_vec();
        // Variances must stay positive.
        theta.extend(
            init.into_iter()
                .map(|v| if s.name == "moving_variance" { v.abs() + T::one() } else { v }),
        );
    }
    let names: Vec<&'static str> = specs.iter().map(|s| s.name).collect();
    let out_len: usize = out_shape.iter().product::<usize>() * batch;
    let w = Tensor::<T>::random_normal(&[out_len], T::zero(), T::one(), 7).into_vec();
    let run = |layer: &mut Box<dyn Layer<T>>, theta: &mut Vec<T>, x: &[T]| -> Vec<T> {
        let mut y = vec![T::zero(); out_len];
        layer.forward_train(ParamsMut::new(theta, &ranges, &names), x, batch, &mut y).unwrap();
        y
    };
    let y = run(&mut layer, &mut theta, &x);
    let mut g = vec![T::zero(); theta.len()];
    let mut dx = vec![T::zero(); x.len()];
    layer
        .backward(Backward {
            params: Params::new(&theta, &ranges, &names),
            x: &x,
            y: &y,
            dy: &w,
            batch,
            grads: ParamsMut::new(&mut g, &ranges, &names),
            dx: Some(&mut dx),
        })
        .unwrap();

    // The same forward on the tape.
    let tape = Tape::new();
    let mut xs = vec![batch];
    xs.extend_from_slice(input);
    let xv = tape.var(Tensor::from_vec(&xs, x.clone()).unwrap());
    let pv: Vec<Var<'_, T>> = specs
        .iter()
        .zip(&ranges)
        .map(|(s, r)| tape.var(Tensor::from_vec(&s.shape, theta[r.clone()].to_vec()).unwrap()))
        .collect();
    let yt = tape_fwd(&tape, xv, &pv, batch).unwrap();
    let mut worst = normwise(&y, yt.value().data());
    let loss = yt
        .reshape(&[out_len])
        .unwrap()
        .mul(tape.constant(Tensor::from_vec(&[out_len], w.clone()).unwrap()))
        .unwrap()
        .sum()
        .unwrap();
    let grads = tape.backward(loss).unwrap();
    let mut compare = |ours: &[T], theirs: Option<&Tensor<T>>| {
        let zeros = vec![T::zero(); ours.len()];
        worst = worst.max(normwise(ours, theirs.map_or(&zeros[..], |t| t.data())));
    };
    compare(&dx, grads.get(xv));
    for ((s, r), v) in specs.iter().zip(&ranges).zip(&pv) {
        if s.trainable {
            compare(&g[r.clone()], grads.get(*v));
        }
    }
    let numeric = numeric.then(|| {
        let eps = 1e-6;
        let f = |layer: &mut Box<dyn Layer<T>>, theta: &mut Vec<T>, x: &[T]| -> f64 {
            run(layer, theta, x).iter().zip(&w).map(|(a, b)| a.as_f64() * b.as_f64()).sum()
        };
        let mut worst_n: f64 = 0.0;
        let mut xp = x.clone();
        // Token ids (Embedding) are not differentiable inputs.
        let ids = layer.class_name() == "Embedding";
        for j in (0..x.len()).filter(|_| !ids) {
            let x0 = xp[j];
            xp[j] = x0 + T::of(eps);
            let fp = f(&mut layer, &mut theta, &xp);
            xp[j] = x0 - T::of(eps);
            let fm = f(&mut layer, &mut theta, &xp);
            xp[j] = x0;
            worst_n = worst_n.max(rel(dx[j].as_f64(), (fp - fm) / (2.0 * eps)));
        }
        for (s, r) in specs.iter().zip(&ranges) {
            if !s.trainable {
                continue;
            }
            for j in r.clone() {
                let t0 = theta[j];
                theta[j] = t0 + T::of(eps);
                let fp = f(&mut layer, &mut theta, &x);
                theta[j] = t0 - T::of(eps);
                let fm = f(&mut layer, &mut theta, &x);
                theta[j] = t0;
                worst_n = worst_n.max(rel(g[j].as_f64(), (fp - fm) / (2.0 * eps)));
            }
        }
        worst_n
    });
    Outcome { vs_tape: worst, numeric }
}

/// Inputs away from activation kinks (0 for ReLU, ±3 for hard sigmoid) and from ties.
fn input<T: Scalar>(n: usize, seed: u64) -> Vec<T> {
    Tensor::<f64>::random_normal(&[n], 0.0, 1.0, seed)
        .into_vec()
        .into_iter()
        .map(|v| T::of(if v.abs() < 0.05 { v.signum() * 0.05 + v } else { v }))
        .collect()
}

macro_rules! case {
    ($name:expr, $layer:expr, $input:expr, $batch:expr, $fwd:expr) => {{
        let input: &[usize] = &$input;
        let n = input.iter().product::<usize>() * $batch;
        let f32r = {
            type T = f32;
            let fwd: Box<TapeFwd<T>> = Box::new($fwd);
            check::<T>(Box::new($layer), input, $batch, input_vals::<T>(n, $name), &*fwd, false)
        };
        let f64r = {
            type T = f64;
            let fwd: Box<TapeFwd<T>> = Box::new($fwd);
            check::<T>(Box::new($layer), input, $batch, input_vals::<T>(n, $name), &*fwd, true)
        };
        let num = f64r.numeric.unwrap();
        println!(
            "{:<44} f32 vs tape {:.1e}   f64 vs tape {:.1e}   f64 vs central differences {:.1e}",
            $name, f32r.vs_tape, f64r.vs_tape, num
        );
        assert!(f32r.vs_tape <= 1e-5, "{} f32: {}", $name, f32r.vs_tape);
        assert!(f64r.vs_tape <= 1e-10, "{} f64: {}", $name, f64r.vs_tape);
        assert!(num <= 1e-6, "{} numeric: {}", $name, num);
    }};
}

fn input_vals<T: Scalar>(n: usize, name: &str) -> Vec<T> {
    if name.starts_with("Embedding") {
        return (0..n).map(|i| T::of(((i * 7) % 5) as f64)).collect();
    }
    input::<T>(n, name.len() as u64)
}

fn affine<'t, T: Scalar>(x: Var<'t, T>, p: &[Var<'t, T>]) -> kiln::tape::Result<Var<'t, T>> {
    x.gemm(Trans::No, p[0], Trans::No, T::one(), p.get(1).copied())
}

#[test]
fn dense_with_each_activation() {
    let acts = [
        A::Linear,
        A::Relu,
        A::Sigmoid,
        A::Tanh,
        A::Gelu { approximate: false },
        A::Swish,
        A::Elu(1.0),
        A::Selu,
        A::Softplus,
        A::Softsign,
        A::LeakyRelu(0.2),
    ];
    for a in acts {
        case!(
            &format!("Dense(6, {a:?})"),
            Dense::new(6).activation(a),
            [5],
            4,
            move |_t, x, p, _b| Ok(affine(x, p)?.activation(a))
        );
    }
    case!(
        "Dense(6, softmax) not last",
        Dense::new(6).activation(Act::Softmax),
        [5],
        4,
        |_t, x, p, _b| affine(x, p)?.softmax()
    );
    case!(
        "Dense(3, use_bias=false)",
        Dense::new(3).use_bias(false),
        [5],
        4,
        |_t, x, p, _b| affine(x, p)
    );
}

#[test]
fn conv2d_strides_padding_and_activation() {
    let cases = [
        ((1, 1), Padding::Valid, (3, 3)),
        ((2, 2), Padding::Same, (3, 3)),
        ((1, 2), Padding::Same, (2, 3)),
        ((2, 1), Padding::Valid, (3, 2)),
    ];
    for (s, p, k) in cases {
        let name = format!("Conv2D(4, k={k:?}, s={s:?}, {p:?}, relu)");
        case!(
            &name,
            Conv2D::new(4).kernel(k.0, k.1).strides(s.0, s.1).padding(p).activation(A::Relu),
            [6, 5, 3],
            2,
            move |_t, x, q, _b| { Ok(x.conv2d(q[0], Some(q[1]), s, p)?.activation(A::Relu)) }
        );
    }
    case!(
        "Conv2D(2, gelu, no bias)",
        Conv2D::new(2).use_bias(false).activation(A::Gelu { approximate: true }),
        [5, 5, 2],
        2,
        |_t, x, q, _b| {
            Ok(x.conv2d(q[0], None, (1, 1), Padding::Valid)?
                .activation(A::Gelu { approximate: true }))
        }
    );
}

#[test]
fn pooling_layers() {
    case!("MaxPool2D(2)", MaxPool2D::new(2), [6, 5, 3], 2, |_t, x, _q, _b| x.max_pool2d(
        (2, 2),
        (2, 2),
        Padding::Valid
    ));
    case!(
        "MaxPool2D(3, s=2, same)",
        MaxPool2D::new(3).strides(2, 2).padding(Padding::Same),
        [6, 5, 3],
        2,
        |_t, x, _q, _b| { x.max_pool2d((3, 3), (2, 2), Padding::Same) }
    );
    case!("AveragePooling2D(2)", AveragePooling2D::new(2), [6, 5, 3], 2, |_t, x, _q, _b| x
        .avg_pool2d((2, 2), (2, 2), Padding::Valid));
    case!(
        "AveragePooling2D(3, s=2, same)",
        AveragePooling2D::new(3).strides(2, 2).padding(Padding::Same),
        [6, 5, 3],
        2,
        |_t, x, _q, _b| { x.avg_pool2d((3, 3), (2, 2), Padding::Same) }
    );
    case!(
        "GlobalAveragePooling2D",
        GlobalAveragePooling2D::new(),
        [4, 3, 5],
        2,
        |_t, x, _q, _b| x.global_avg_pool2d()
    );
}

#[test]
fn reshaping_dropout_and_activation_layers() {
    case!("Flatten", Flatten, [3, 2, 2], 3, |_t, x, _q, b| x.reshape(&[b, 12]));
    case!("Reshape([4, 3])", Reshape::new(&[4, 3]), [12], 3, |_t, x, _q, b| x.reshape(&[b, 4, 3]));
    // Dropout with a fixed mask: zeros and 1/(1 − rate) scales.
    let mask = |n: usize| (0..n).map(|i| if i % 3 == 0 { 0.0 } else { 2.0 }).collect::<Vec<f64>>();
    case!(
        "Dropout(fixed mask)",
        Dropout::new(0.5).with_mask(mask(24).into_iter().map(kiln::tape::Scalar::of).collect()),
        [6],
        4,
        move |t, x, _q, _b| {
            x.mul(
                t.constant(
                    Tensor::from_vec(
                        &[4, 6],
                        mask(24).into_iter().map(kiln::tape::Scalar::of).collect(),
                    )
                    .unwrap(),
                ),
            )
        }
    );
    case!("ReLU", Activation::relu(), [7], 3, |_t, x, _q, _b| Ok(x.relu()));
    case!("LeakyReLU(0.3)", Activation::leaky_relu(0.3), [7], 3, |_t, x, _q, _b| Ok(
        x.activation(A::LeakyRelu(0.3))
    ));
    case!("ELU(1.0)", Activation::elu(1.0), [7], 3, |_t, x, _q, _b| Ok(x.activation(A::Elu(1.0))));
    case!("SELU", Activation::selu(), [7], 3, |_t, x, _q, _b| Ok(x.activation(A::Selu)));
    case!("GELU", Activation::gelu(false), [7], 3, |_t, x, _q, _b| Ok(
        x.activation(A::Gelu { approximate: false })
    ));
    case!("Sigmoid", Activation::sigmoid(), [7], 3, |_t, x, _q, _b| Ok(x.sigmoid()));
    case!("Tanh", Activation::tanh(), [7], 3, |_t, x, _q, _b| Ok(x.tanh()));
    case!("Softmax", Activation::softmax(), [7], 3, |_t, x, _q, _b| x.softmax());
    case!(
        "Softplus",
        Activation::softplus(),
        [7],
        3,
        |_t, x, _q, _b| Ok(x.activation(A::Softplus))
    );
    case!("Swish", Activation::swish(), [7], 3, |_t, x, _q, _b| Ok(x.activation(A::Swish)));
}

#[test]
fn normalization_and_embedding() {
    // BatchNormalization in training mode: batch statistics over every axis but the last.
    case!("BatchNormalization (training)", BatchNormalization::new(), [3, 4], 5, |_t, x, q, b| {
        let x2 = x.reshape(&[b * 3, 4])?;
        let mu = x2.mean_axis(0)?;
        let d = x2.sub(mu)?;
        let var = d.mul(d)?.mean_axis(0)?;
        let y = d.div(var.add_scalar(kiln::tape::Scalar::of(1e-3)).sqrt())?.mul(q[0])?.add(q[1])?;
        y.reshape(&[b, 3, 4])
    });
    case!("LayerNormalization", LayerNormalization::new(), [6], 4, |_t, x, q, b| {
        let mu = x.mean_axis(1)?.reshape(&[b, 1])?;
        let d = x.sub(mu)?;
        let var = d.mul(d)?.mean_axis(1)?.reshape(&[b, 1])?;
        d.div(var.add_scalar(kiln::tape::Scalar::of(1e-3)).sqrt())?.mul(q[0])?.add(q[1])
    });
    case!("Embedding(5, 3)", Embedding::new(5, 3), [4], 2, |_t, x, q, b| {
        let ids: Vec<usize> = x.value().data().iter().map(|v| v.as_f64() as usize).collect();
        q[0].gather_rows(&ids)?.reshape(&[b, 4, 3])
    });
}

#[test]
fn batch_normalization_updates_moving_statistics_and_uses_them_at_inference() {
    let mut bn = BatchNormalization::<f64>::new().momentum(0.9);
    Layer::<f64>::build(&mut bn, &[2]).unwrap();
    let ranges = [0..2, 2..4, 4..6, 6..8];
    let names = ["gamma", "beta", "moving_mean", "moving_variance"];
    let mut theta = vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0];
    let x = [1.0, 10.0, 3.0, 20.0];
    let mut y = [0.0; 4];
    bn.forward_train(ParamsMut::new(&mut theta, &ranges, &names), &x, 2, &mut y).unwrap();
    // mean [2, 15], biased var [1, 25]; moving = 0.9·old + 0.1·batch.
    let want = [0.2, 1.5, 0.9 * 1.0 + 0.1 * 1.0, 0.9 + 0.1 * 25.0];
    assert!(theta[4..8].iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{:?}", &theta[4..8]);
    bn.forward(Params::new(&theta, &ranges, &names), &x, 2, &mut y).unwrap();
    // γ = 1, β = 0 in this arena.
    let want0 = (1.0 - 0.2) / (1.0f64 + 1e-3).sqrt();
    assert!((y[0] - want0).abs() < 1e-12, "inference uses the moving statistics");
}

#[test]
fn shape_rules_reject_what_does_not_fit() {
    let e = Layer::<f32>::build(&mut Dense::new(3), &[26, 26, 32]).unwrap_err();
    assert_eq!(e, "Dense needs a flat input but gets [26, 26, 32]: add Flatten before it");
    let e = Layer::<f32>::build(&mut Conv2D::new(3).kernel(5, 5), &[4, 4, 1]).unwrap_err();
    assert!(e.contains("the 5x5 kernel does not fit the 4x4 input"), "{e}");
    assert!(
        Layer::<f32>::build(&mut Conv2D::new(3).kernel(5, 5).padding(Padding::Same), &[4, 4, 1])
            .is_ok()
    );
    assert!(Layer::<f32>::build(&mut MaxPool2D::new(3), &[2, 2, 1]).is_err());
    assert!(Layer::<f32>::build(&mut Dropout::<f32>::new(1.0), &[3]).is_err());
    let e = Layer::<f32>::build(&mut Reshape::new(&[5, 5]), &[24]).unwrap_err();
    assert!(e.contains("holds 25 values but its input [24] holds 24"), "{e}");
    assert_eq!(
        Layer::<f32>::build(&mut Conv2D::new(8).strides(2, 2).padding(Padding::Same), &[28, 28, 1])
            .unwrap(),
        vec![14, 14, 8]
    );
    assert_eq!(Layer::<f32>::build(&mut Embedding::new(10, 4), &[7]).unwrap(), vec![7, 4]);
}

/// A forward-only layer `x ⊙ sigmoid(a ⊙ x)` for the TapeLayer wrapper.
struct Gated;

impl<T: Scalar> TapeModule<T> for Gated {
    type Input = kiln::S1<6>;
    type Output = kiln::S1<6>;
    const NAME: &'static str = "gated";
    fn params(&self) -> Vec<ParamSpec> {
        vec![ParamSpec {
            name: "a",
            shape: vec![6],
            init: kiln::init::Initializer::Ones,
            trainable: true,
            kind: kiln::ParamKind::Other,
        }]
    }
    fn forward<'t>(&self, x: Var<'t, T>, p: &[Var<'t, T>]) -> kiln::tape::Result<Var<'t, T>> {
        x.mul(p[0].mul(x)?.sigmoid())
    }
}

#[test]
fn a_forward_only_tape_layer_gets_a_correct_backward() {
    case!("TapeLayer(x·sigmoid(a·x))", TapeLayer::new(Gated), [6], 3, |_t, x, q, _b| x
        .mul(q[0].mul(x)?.sigmoid()));
}

/// Conv1D on the tape: zero padding by concatenation, then one GEMM per kernel tap over
/// a step slice (stride 1, any dilation) or a `[1, k]` Conv2D (dilation 1, any stride).
fn conv1d_tape<'t, T: Scalar>(
    t: &'t Tape<T>,
    x: Var<'t, T>,
    q: &[Var<'t, T>],
    (k, s, d, padding): (usize, usize, usize, Padding),
) -> kiln::tape::Result<Var<'t, T>> {
    let [b, steps, c] = x.shape()[..] else { unreachable!() };
    let o = q[0].shape()[2];
    let (out, pad) = kiln::spec::window_output_dilated(steps, k, s, d, padding).unwrap();
    let span = (k - 1) * d + 1;
    let right = ((out - 1) * s + span).saturating_sub(steps + pad);
    let mut parts = Vec::new();
    if pad > 0 {
        parts.push(t.constant(Tensor::zeros(&[b, pad, c])));
    }
    parts.push(x);
    if right > 0 {
        parts.push(t.constant(Tensor::zeros(&[b, right, c])));
    }
    let xp = kiln::tape::concat(&parts, 1)?;
    let len = xp.shape()[1];
    if d == 1 {
        let y = xp.reshape(&[b, 1, len, c])?.conv2d(
            q[0].reshape(&[1, k, c, o])?,
            q.get(1).copied(),
            (1, s),
            Padding::Valid,
        )?;
        return y.reshape(&[b, out, o]);
    }
    let mut acc: Option<Var<'t, T>> = None;
    for tap in 0..k {
        let xs = xp.slice(&[0..b, tap * d..tap * d + out, 0..c])?.reshape(&[b * out, c])?;
        let w = q[0].slice(&[tap..tap + 1, 0..c, 0..o])?.reshape(&[c, o])?;
        let bias = if tap == 0 { q.get(1).copied() } else { None };
        let y = xs.gemm(Trans::No, w, Trans::No, T::one(), bias)?;
        acc = Some(match acc {
            None => y,
            Some(a) => a.add(y)?,
        });
    }
    acc.expect("at least one tap").reshape(&[b, out, o])
}

#[test]
fn conv1d_strides_dilation_padding_and_activation() {
    let cases = [
        (3, 1, 1, Padding::Valid),
        (3, 2, 1, Padding::Same),
        (2, 3, 1, Padding::Causal),
        (3, 1, 2, Padding::Valid),
        (3, 1, 2, Padding::Same),
        (2, 1, 3, Padding::Causal),
        (1, 1, 1, Padding::Same),
    ];
    for (k, s, d, p) in cases {
        let name = format!("Conv1D(4, k={k}, s={s}, d={d}, {p:?}, tanh)");
        case!(
            &name,
            Conv1D::new(4, k).strides(s).dilation_rate(d).padding(p).activation(A::Tanh),
            [9, 3],
            2,
            move |t, x, q, _b| Ok(conv1d_tape(t, x, q, (k, s, d, p))?.tanh())
        );
    }
    case!(
        "Conv1D(2, k=3, no bias, softmax)",
        Conv1D::new(2, 3).use_bias(false).activation(Act::Softmax),
        [6, 2],
        3,
        |t, x, q, _b| conv1d_tape(t, x, q, (3, 1, 1, Padding::Valid))?.softmax()
    );
}

#[test]
fn pooling_over_steps() {
    for (pool, s, p) in [(2, 2, Padding::Valid), (3, 2, Padding::Same), (2, 1, Padding::Valid)] {
        case!(
            &format!("MaxPooling1D({pool}, s={s}, {p:?})"),
            MaxPool1D::new(pool).strides(s).padding(p),
            [7, 3],
            2,
            move |_t, x, _q, b| {
                let (l, c) = (x.shape()[1], x.shape()[2]);
                let y = x.reshape(&[b, 1, l, c])?.max_pool2d((1, pool), (1, s), p)?;
                let o = y.shape()[2];
                y.reshape(&[b, o, c])
            }
        );
        case!(
            &format!("AveragePooling1D({pool}, s={s}, {p:?})"),
            AveragePooling1D::new(pool).strides(s).padding(p),
            [7, 3],
            2,
            move |_t, x, _q, b| {
                let (l, c) = (x.shape()[1], x.shape()[2]);
                let y = x.reshape(&[b, 1, l, c])?.avg_pool2d((1, pool), (1, s), p)?;
                let o = y.shape()[2];
                y.reshape(&[b, o, c])
            }
        );
    }
}

#[test]
fn global_poolings() {
    case!("GlobalAveragePooling1D", GlobalAveragePooling1D::new(), [5, 3], 2, |_t, x, _q, _b| x
        .mean_axis(1));
    case!("GlobalMaxPooling1D", GlobalMaxPooling1D::new(), [5, 3], 2, |_t, x, _q, _b| x
        .max_axis(1));
    case!("GlobalMaxPooling2D", GlobalMaxPooling2D::new(), [3, 4, 2], 2, |_t, x, _q, b| x
        .reshape(&[b, 12, 2])?
        .max_axis(1));
    case!(
        "GlobalMaxPooling2D(keepdims)",
        GlobalMaxPooling2D::new().keepdims(true),
        [3, 4, 2],
        2,
        |_t, x, _q, b| x.reshape(&[b, 12, 2])?.max_axis(1)?.reshape(&[b, 1, 1, 2])
    );
    case!(
        "GlobalAveragePooling2D(keepdims)",
        GlobalAveragePooling2D::new().keepdims(true),
        [3, 4, 2],
        2,
        |_t, x, _q, b| x.global_avg_pool2d()?.reshape(&[b, 1, 1, 2])
    );
}

#[test]
fn global_max_pooling_shares_the_gradient_between_tied_maxima() {
    // Two steps tie for channel 0's maximum: each gets half its gradient (TensorFlow's
    // and JAX's reduce_max gradient); channel 1 has one winner.
    let mut l = GlobalMaxPooling1D::<f64>::new();
    Layer::<f64>::build(&mut l, &[3, 2]).unwrap();
    let x = [1.0, 5.0, 4.0, 2.0, 4.0, 3.0];
    let mut y = [0.0; 2];
    l.forward(Params::none(), &x, 1, &mut y).unwrap();
    assert_eq!(y, [4.0, 5.0]);
    let mut dx = [9.0; 6];
    let (params, grads) = (Params::none(), ParamsMut::none());
    let b = Backward { params, x: &x, y: &y, dy: &[2.0, 3.0], batch: 1, grads, dx: Some(&mut dx) };
    l.backward(b).unwrap();
    assert_eq!(dx, [0.0, 3.0, 1.0, 0.0, 1.0, 0.0]);
}

#[test]
fn dense_on_a_sequence_applies_to_every_step() {
    case!(
        "Dense(4, relu) on [3, 5]",
        Dense::new(4).activation(A::Relu),
        [3, 5],
        2,
        |_t, x, p, b| {
            let y = affine(x.reshape(&[b * 3, 5])?, p)?.relu();
            y.reshape(&[b, 3, 4])
        }
    );
    case!(
        "Dense(3, softmax) on [2, 4]",
        Dense::new(3).activation(Act::Softmax),
        [2, 4],
        3,
        |_t, x, p, b| { affine(x.reshape(&[b * 2, 4])?, p)?.softmax()?.reshape(&[b, 2, 3]) }
    );
}

#[test]
fn new_shape_rules_say_what_is_wrong() {
    let e = Layer::<f32>::build(&mut Conv1D::new(4, 3), &[28, 28, 1]).unwrap_err();
    assert_eq!(
        e,
        "Conv1D needs an input [steps, channels] but gets [28, 28, 1]: use Conv2D for images"
    );
    let e = Layer::<f32>::build(&mut Conv1D::new(4, 5).dilation_rate(2), &[8, 1]).unwrap_err();
    assert!(e.contains("the kernel spans 9 steps but the input [8, 1] has 8"), "{e}");
    let e = Layer::<f32>::build(&mut Conv1D::new(4, 3).strides(2).dilation_rate(2), &[8, 1]);
    assert!(e.unwrap_err().contains("cannot combine strides 2 with dilation_rate 2"));
    let e = Layer::<f32>::build(&mut GlobalMaxPooling1D::<f32>::new(), &[64]).unwrap_err();
    assert!(e.contains("it is flat already"), "{e}");
    let e = Layer::<f32>::build(&mut MaxPool1D::new(2), &[4, 4, 1]).unwrap_err();
    assert!(e.contains("use MaxPooling2D for images"), "{e}");
    assert_eq!(Layer::<f32>::build(&mut Dense::new(7), &[3, 5]).unwrap(), vec![3, 7]);
    assert_eq!(
        Layer::<f32>::build(&mut Conv1D::new(4, 3).padding(Padding::Causal).strides(2), &[9, 2])
            .unwrap(),
        vec![5, 4]
    );
    assert!(Layer::<f32>::build(&mut Dropout::<f32>::new(f64::NAN), &[3]).is_err());
}

/// Every built-in layer can be built by its Keras name with Keras-style arguments, and
/// the runtime table and kiln-spec's registry list the same layers.
#[test]
fn every_registered_layer_builds_by_name() {
    use kiln::spec::Value;
    for e in kiln::spec::registry() {
        let mut given: Vec<(Option<&str>, Value)> = Vec::new();
        for a in e.args.iter().filter(|a| a.default == kiln::spec::Default::Required) {
            let v = match a.kind {
                kiln::spec::Kind::Shape => Value::List(vec![Value::Int(6)]),
                kiln::spec::Kind::Number => Value::Float(0.5),
                kiln::spec::Kind::Activation => Value::name("relu"),
                kiln::spec::Kind::Layer => Value::Layer("LSTM".into(), vec![(None, Value::Int(2))]),
                _ => Value::Int(2),
            };
            given.push((Some(a.name), v));
        }
        let layer =
            builtin::<f32>(e.class, &given).unwrap_or_else(|err| panic!("{}: {err}", e.class));
        assert_eq!(layer.class_name(), e.class);
        for alias in e.aliases {
            assert_eq!(builtin::<f32>(alias, &given).unwrap().class_name(), e.class);
        }
    }
    let err = builtin::<f32>("Dence", &[]).err().unwrap().to_string();
    assert!(err.contains("did you mean `Dense`?"), "{err}");
}

/// One recurrent layer unrolled on the tape, as Keras's cells define it: `kind` 1
/// SimpleRNN, 4 LSTM, 3 GRU (reset after) or 30 GRU (reset before).
fn rnn_tape<'t, T: Scalar>(
    t: &'t Tape<T>,
    x: Var<'t, T>,
    q: &[Var<'t, T>],
    kind: usize,
    units: usize,
    opts: (bool, bool),
) -> kiln::tape::Result<Var<'t, T>> {
    rnn_tape_dropped(t, x, q, kind, units, opts, &Drop::default())
}

/// Fixed dropout masks for a recurrent layer (scale factors): input `[groups, batch,
/// features]`, state `[groups, batch, units]`; empty when that side is not dropped.
#[derive(Clone, Default)]
struct Drop {
    groups: usize,
    input: Vec<f64>,
    state: Vec<f64>,
}

impl Drop {
    /// A fixed pattern of zeros and `1/(1 − rate)` (about a third dropped).
    fn new(kind: usize, dropout: bool, recurrent: bool, batch: usize, f: usize, u: usize) -> Self {
        let gates = if kind == 30 { 3 } else { kind };
        let groups = if recurrent { gates } else { 1 };
        let pattern = |n: usize, seed: usize, rate: f64| -> Vec<f64> {
            (0..n)
                .map(|i| if (i * 7 + seed).is_multiple_of(3) { 0.0 } else { 1.0 / (1.0 - rate) })
                .collect()
        };
        Drop {
            groups,
            input: if dropout { pattern(groups * batch * f, 1, 0.4) } else { Vec::new() },
            state: if recurrent { pattern(groups * batch * u, 2, 0.3) } else { Vec::new() },
        }
    }
    fn of<T: Scalar>(v: &[f64]) -> Vec<T> {
        v.iter().map(|&x| T::of(x)).collect()
    }
}

/// [`rnn_tape`] with Keras's dropout: each gate's input product uses
/// `x ⊙ input_mask[g]` and its recurrent product `h ⊙ state_mask[g]` (group 0 for every
/// gate when there is one group); the carried state is never masked.
fn rnn_tape_dropped<'t, T: Scalar>(
    t: &'t Tape<T>,
    x: Var<'t, T>,
    q: &[Var<'t, T>],
    kind: usize,
    units: usize,
    (sequences, backwards): (bool, bool),
    drop: &Drop,
) -> kiln::tape::Result<Var<'t, T>> {
    let [b, steps, f] = x.shape()[..] else { unreachable!() };
    let u = units;
    let (w, uk) = (q[0], q[1]);
    let gates = if kind == 30 { 3 } else { kind };
    let col = |m: Var<'t, T>, g: usize| m.slice(&[0..m.shape()[0], g * u..(g + 1) * u]);
    let masks = |v: &[f64], width: usize| -> kiln::tape::Result<Vec<Var<'t, T>>> {
        v.chunks(b * width)
            .map(|m| Ok(t.constant(Tensor::from_vec(&[b, width], Drop::of::<T>(m))?)))
            .collect()
    };
    let (xm, hm) = (masks(&drop.input, f)?, masks(&drop.state, u)?);
    let group = |g: usize| if drop.groups > 1 { g } else { 0 };
    // inp · kernel, per gate with that gate's mask when the side is dropped.
    let proj = |inp: Var<'t, T>, m: &[Var<'t, T>], kernel: Var<'t, T>| {
        if m.is_empty() {
            return inp.gemm(Trans::No, kernel, Trans::No, T::one(), None);
        }
        let parts = (0..gates)
            .map(|g| {
                inp.mul(m[group(g)])?.gemm(Trans::No, col(kernel, g)?, Trans::No, T::one(), None)
            })
            .collect::<kiln::tape::Result<Vec<_>>>()?;
        kiln::tape::concat(&parts, 1)
    };
    let bias_row = |row: usize| -> kiln::tape::Result<Option<Var<'t, T>>> {
        Ok(match q.get(2) {
            Some(bv) if bv.shape().len() == 2 => {
                Some(bv.slice(&[row..row + 1, 0..gates * u])?.reshape(&[gates * u])?)
            }
            Some(bv) => (row == 0).then_some(*bv),
            None => None,
        })
    };
    let mut h = t.constant(Tensor::zeros(&[b, u]));
    let mut c = t.constant(Tensor::zeros(&[b, u]));
    let mut outs = Vec::new();
    for s in 0..steps {
        let st = if backwards { steps - 1 - s } else { s };
        let xt = x.slice(&[0..b, st..st + 1, 0..f])?.reshape(&[b, f])?;
        let xw = proj(xt, &xm, w)?;
        let hu_all = proj(h, &hm, uk)?;
        h = match kind {
            1 => {
                let xb = match bias_row(0)? {
                    Some(bv) => xw.add(bv)?,
                    None => xw,
                };
                xb.add(hu_all)?.tanh()
            }
            4 => {
                let mut z = xw.add(hu_all)?;
                if let Some(bv) = bias_row(0)? {
                    z = z.add(bv)?;
                }
                let (i, fg, g, o) = (
                    col(z, 0)?.sigmoid(),
                    col(z, 1)?.sigmoid(),
                    col(z, 2)?.tanh(),
                    col(z, 3)?.sigmoid(),
                );
                c = fg.mul(c)?.add(i.mul(g)?)?;
                o.mul(c.tanh())?
            }
            _ => {
                let xb = match bias_row(0)? {
                    Some(bv) => xw.add(bv)?,
                    None => xw,
                };
                let hu = match (kind, bias_row(1)?) {
                    (3, Some(bv)) => hu_all.add(bv)?,
                    _ => hu_all,
                };
                let z = col(xb, 0)?.add(col(hu, 0)?)?.sigmoid();
                let r = col(xb, 1)?.add(col(hu, 1)?)?.sigmoid();
                let hh = if kind == 3 {
                    col(xb, 2)?.add(r.mul(col(hu, 2)?)?)?.tanh()
                } else {
                    let uh = uk.slice(&[0..u, 2 * u..3 * u])?;
                    let hd = if hm.is_empty() { h } else { h.mul(hm[group(2)])? };
                    col(xb, 2)?
                        .add(r.mul(hd)?.gemm(Trans::No, uh, Trans::No, T::one(), None)?)?
                        .tanh()
                };
                let one = t.constant(Tensor::full(&[b, u], T::one()));
                z.mul(h)?.add(one.sub(z)?.mul(hh)?)?
            }
        };
        outs.push(h.reshape(&[b, 1, u])?);
    }
    if sequences { kiln::tape::concat(&outs, 1) } else { Ok(h) }
}

#[test]
fn recurrent_layers_against_their_unrolled_cells() {
    for (seq, back) in [(false, false), (true, false), (false, true), (true, true)] {
        let opts = (seq, back);
        case!(
            &format!("LSTM(3, return_sequences={seq}, go_backwards={back})"),
            LSTM::new(3).return_sequences(seq).go_backwards(back),
            [4, 2],
            2,
            move |t, x, q, _b| rnn_tape(t, x, q, 4, 3, opts)
        );
        case!(
            &format!("GRU(3, return_sequences={seq}, go_backwards={back})"),
            GRU::new(3).return_sequences(seq).go_backwards(back),
            [4, 2],
            2,
            move |t, x, q, _b| rnn_tape(t, x, q, 3, 3, opts)
        );
        case!(
            &format!("GRU(3, reset_after=false, seq={seq}, back={back})"),
            GRU::new(3).reset_after(false).return_sequences(seq).go_backwards(back),
            [4, 2],
            2,
            move |t, x, q, _b| rnn_tape(t, x, q, 30, 3, opts)
        );
        case!(
            &format!("SimpleRNN(3, return_sequences={seq}, go_backwards={back})"),
            SimpleRNN::new(3).return_sequences(seq).go_backwards(back),
            [4, 2],
            2,
            move |t, x, q, _b| rnn_tape(t, x, q, 1, 3, opts)
        );
    }
}

/// dropout / recurrent_dropout with fixed masks: each cell against its unrolled tape
/// formulation with Keras's masks (one input mask for every gate with dropout alone,
/// one per gate for input and state with recurrent dropout), and central differences.
#[test]
fn recurrent_dropout_masks_against_the_unrolled_cells() {
    for (dropout, recurrent) in [(true, false), (false, true), (true, true)] {
        for (kind, name) in
            [(4, "LSTM"), (3, "GRU"), (30, "GRU(reset_after=false)"), (1, "SimpleRNN")]
        {
            let drop = Drop::new(kind, dropout, recurrent, 2, 2, 3);
            let (di, ds) = (drop.input.clone(), drop.state.clone());
            let (rd, rr) = (if dropout { 0.4 } else { 0.0 }, if recurrent { 0.3 } else { 0.0 });
            let label = format!("{name}(3, dropout={rd}, recurrent_dropout={rr})");
            macro_rules! cell {
                ($layer:expr) => {
                    case!(
                        &label,
                        $layer
                            .return_sequences(true)
                            .dropout(rd)
                            .recurrent_dropout(rr)
                            .with_dropout_masks(Drop::of::<T>(&di), Drop::of::<T>(&ds)),
                        [4, 2],
                        2,
                        {
                            let drop = drop.clone();
                            move |t, x, q, _b| {
                                rnn_tape_dropped(t, x, q, kind, 3, (true, false), &drop)
                            }
                        }
                    )
                };
            }
            match kind {
                4 => cell!(LSTM::new(3)),
                3 => cell!(GRU::new(3)),
                30 => cell!(GRU::new(3).reset_after(false)),
                _ => cell!(SimpleRNN::new(3)),
            }
        }
    }
}

/// A batch larger than one row block (the LSTM runs its batch in blocks of 32 rows,
/// in parallel): 33 samples in a full and a partial block, with fixed dropout masks
/// (central differences over more samples drown in rounding), against the
/// unrolled cell — the blocks' weight gradients are summed, their input gradients
/// and outputs land in their own rows.
#[test]
fn lstm_in_several_row_blocks() {
    let drop = Drop::new(4, true, true, 33, 2, 4);
    let (di, ds) = (drop.input.clone(), drop.state.clone());
    case!(
        "LSTM(4) over 33 samples (2 row blocks), dropout masks",
        LSTM::new(4)
            .go_backwards(true)
            .dropout(0.4)
            .recurrent_dropout(0.3)
            .with_dropout_masks(Drop::of::<T>(&di), Drop::of::<T>(&ds)),
        [3, 2],
        33,
        {
            let drop = drop.clone();
            move |t, x, q, _b| rnn_tape_dropped(t, x, q, 4, 4, (false, true), &drop)
        }
    );
}

/// Each sample of a batch spanning several blocks, masked differently, gives exactly
/// its output alone (the blocks take their rows of the step mask).
#[test]
fn masked_batch_across_row_blocks_equals_each_sample_alone() {
    use kiln::Model;
    let net = || {
        kiln::SequentialBuilder::<f64>::new("m", &[5, 2])
            .add(Masking::<f64>::new(0.0))
            .add(LSTM::<f64>::new(3).return_sequences(true))
            .build(kiln::Seed(4))
            .unwrap()
    };
    let batch = 70;
    let mut x: Vec<f64> =
        (0..batch * 10).map(|i| ((i * 29 % 13) as f64 - 6.0) / 6.0 + 0.01).collect();
    for b in 0..batch {
        // Sample b masks step b % 5 (and, for every third sample, its last step).
        x[(b * 5 + b % 5) * 2..(b * 5 + b % 5) * 2 + 2].fill(0.0);
        if b % 3 == 0 {
            x[(b * 5 + 4) * 2..(b * 5 + 5) * 2].fill(0.0);
        }
    }
    let mut all = net();
    let y = all.forward_infer(&x, batch).unwrap().outputs.to_vec();
    let mut one = net();
    for b in 0..batch {
        let yb = one.forward_infer(&x[b * 10..(b + 1) * 10], 1).unwrap().outputs.to_vec();
        assert_eq!(yb[..], y[b * 15..(b + 1) * 15], "sample {b}");
    }
}

/// Drawn dropout masks: a training pass drops (it differs from inference), the same
/// seed draws the same masks, another seed others, each pass draws anew, and
/// inference never drops.
#[test]
fn recurrent_dropout_is_seeded_and_off_at_inference() {
    for class in ["LSTM", "GRU", "SimpleRNN", "Bidirectional"] {
        use kiln::spec::Value;
        let args = |inner: bool| {
            let a = vec![
                (None, Value::Int(4)),
                (Some("dropout".into()), Value::Float(0.3)),
                (Some("recurrent_dropout".into()), Value::Float(0.2)),
                (Some("return_sequences".into()), Value::Bool(true)),
            ];
            if inner { vec![(None, Value::Layer("GRU".into(), a))] } else { a }
        };
        let given: Vec<(Option<&str>, Value)> = args(class == "Bidirectional")
            .into_iter()
            .map(|(k, v)| (k.map(|k: String| &*Box::leak(k.into_boxed_str())), v))
            .collect();
        let mut layer = builtin::<f64>(class, &given).unwrap();
        let out = layer.build(&[5, 3]).unwrap();
        let specs = layer.param_specs();
        let mut ranges = Vec::new();
        let mut theta = Vec::new();
        for s in &specs {
            let n: usize = s.shape.iter().product();
            ranges.push(theta.len()..theta.len() + n);
            theta.extend((0..n).map(|i| ((i * 13 % 7) as f64 - 3.0) / 7.0));
        }
        let names: Vec<&'static str> = specs.iter().map(|s| s.name).collect();
        let x: Vec<f64> = (0..2 * 5 * 3).map(|i| ((i * 5 % 9) as f64 - 4.0) / 4.0).collect();
        let n = out.iter().product::<usize>() * 2;
        let mut pass = |layer: &mut Box<dyn Layer<f64>>, train: bool, seed: Option<u64>| {
            if let Some(s) = seed {
                layer.reseed(s);
            }
            let mut y = vec![0.0; n];
            if train {
                let p = ParamsMut::new(&mut theta, &ranges, &names);
                layer.forward_train(p, &x, 2, &mut y).unwrap();
            } else {
                layer.forward(Params::new(&theta, &ranges, &names), &x, 2, &mut y).unwrap();
            }
            y
        };
        let infer = pass(&mut layer, false, None);
        let a = pass(&mut layer, true, Some(7));
        let again = pass(&mut layer, true, Some(7));
        let next = pass(&mut layer, true, None);
        let other = pass(&mut layer, true, Some(8));
        assert_ne!(a, infer, "{class}: training did not drop");
        assert_eq!(a, again, "{class}: the same seed drew other masks");
        assert_ne!(a, next, "{class}: the next pass reused the masks");
        assert_ne!(a, other, "{class}: another seed drew the same masks");
        assert_eq!(pass(&mut layer, false, None), infer, "{class}: inference dropped");
    }
    // Rates outside [0, 1) are refused by name (Keras would clip or ignore them).
    for (arg, rate) in [("dropout", 1.0), ("recurrent_dropout", -0.1), ("dropout", f64::NAN)] {
        use kiln::spec::Value;
        let err = builtin::<f32>("LSTM", &[(None, Value::Int(2)), (Some(arg), Value::Float(rate))])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(arg) && err.contains("[0, 1)"), "{arg}={rate}: {err}");
    }
}

/// Bidirectional(LSTM(3)) on the tape: both directions unrolled, the backward one's
/// outputs put back in time order (as Keras), merged by `mode`.
fn bidi_tape<'t, T: Scalar>(
    t: &'t Tape<T>,
    x: Var<'t, T>,
    q: &[Var<'t, T>],
    mode: &str,
    seq: bool,
) -> kiln::tape::Result<Var<'t, T>> {
    let f = rnn_tape(t, x, &q[..3], 4, 3, (seq, false))?;
    let mut r = rnn_tape(t, x, &q[3..], 4, 3, (seq, true))?;
    if seq {
        let (b, steps) = (r.shape()[0], r.shape()[1]);
        let parts: Vec<_> =
            (0..steps).rev().map(|s| r.slice(&[0..b, s..s + 1, 0..3])).collect::<Result<_, _>>()?;
        r = kiln::tape::concat(&parts, 1)?;
    }
    let axis = f.shape().len() - 1;
    match mode {
        "concat" => kiln::tape::concat(&[f, r], axis),
        "sum" => f.add(r),
        "mul" => f.mul(r),
        _ => Ok(f.add(r)?.mul_scalar(T::of(0.5))),
    }
}

#[test]
fn bidirectional_against_two_unrolled_directions() {
    use kiln::spec::Value;
    for (mode, seq) in
        [("concat", true), ("concat", false), ("sum", true), ("mul", false), ("ave", true)]
    {
        let inner = Value::Layer(
            "LSTM".into(),
            vec![(None, Value::Int(3)), (Some("return_sequences".into()), Value::Bool(seq))],
        );
        let args = [(None, inner), (Some("merge_mode"), Value::name(mode))];
        case!(
            &format!("Bidirectional(LSTM(3), {mode}, sequences={seq})"),
            from_args::<T, kiln::spec::layers::Bidirectional>(&args).unwrap(),
            [4, 2],
            2,
            move |t, x, q, _b| bidi_tape(t, x, q, mode, seq)
        );
    }
}

/// Masking: a sequence padded with all-zero steps (at the end, or in the middle) gives
/// exactly the output of the same sequence without them — the recurrent layers skip
/// masked steps and carry their state — for each cell, both directions, and
/// `Embedding(mask_zero = true)` with id 0 as padding.
#[test]
fn masked_steps_are_skipped() {
    use kiln::Model;
    use kiln::spec::Value;
    let layer = |class: &str, steps: usize, masked: bool| {
        let mut b = kiln::SequentialBuilder::<f64>::new("m", &[steps, 3]);
        if masked {
            b = b.add(Masking::<f64>::new(0.0));
        }
        let rnn = match class {
            "Bidirectional" => builtin::<f64>(
                "Bidirectional",
                &[(None, Value::Layer("GRU".into(), vec![(None, Value::Int(4))]))],
            ),
            c => builtin::<f64>(c, &[(None, Value::Int(4))]),
        };
        b.add_boxed(rnn.unwrap()).build(kiln::Seed(3)).unwrap()
    };
    let x4: Vec<f64> = (0..2 * 4 * 3).map(|i| ((i * 37 % 11) as f64 - 5.0) / 5.0 + 0.01).collect();
    // Sample 0: two zero steps after its 4; sample 1: two zero steps inserted after step 1.
    let mut x6 = vec![0.0; 2 * 6 * 3];
    x6[..12].copy_from_slice(&x4[..12]);
    x6[18..21].copy_from_slice(&x4[12..15]);
    x6[27..36].copy_from_slice(&x4[15..24]);
    for class in ["LSTM", "GRU", "SimpleRNN", "Bidirectional"] {
        let mut short = layer(class, 4, false);
        let mut long = layer(class, 6, true);
        long.params_mut().values_mut().copy_from_slice(short.params().values());
        let a = short.forward_infer(&x4, 2).unwrap().outputs.to_vec();
        let b = long.forward_infer(&x6, 2).unwrap().outputs.to_vec();
        let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-15, "{class}: padded and unpadded differ by {worst}");
    }
    // Embedding(mask_zero): ids 0 are padding.
    let emb = |steps: usize| {
        kiln::SequentialBuilder::<f64>::new("e", &[steps])
            .add_builtin(
                "Embedding",
                &[
                    (None, Value::Int(6)),
                    (None, Value::Int(3)),
                    (Some("mask_zero"), Value::Bool(true)),
                ],
            )
            .unwrap()
            .add(LSTM::<f64>::new(2))
            .build(kiln::Seed(5))
            .unwrap()
    };
    let (mut short, mut long) = (emb(3), emb(5));
    long.params_mut().values_mut().copy_from_slice(short.params().values());
    let a = short.forward_infer(&[4.0, 2.0, 5.0], 1).unwrap().outputs.to_vec();
    let b = long.forward_infer(&[4.0, 0.0, 2.0, 5.0, 0.0], 1).unwrap().outputs.to_vec();
    assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-15), "{a:?} vs {b:?}");
}
