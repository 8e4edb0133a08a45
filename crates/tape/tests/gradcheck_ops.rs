//! Every tape operation's backward rule against central differences in f64, on random
//! inputs and several shapes each. Run with `--nocapture` to see each worst error.

use kiln_tape::{Activation, Padding, Tape, Tensor, Trans, Var, concat, gradcheck};

const TOL: f64 = 1e-6;

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::random_normal(shape, 0.0, 1.0, seed)
}

fn positive(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::random_uniform(shape, 0.5, 2.0, seed)
}

/// Moves values off non-differentiable points, where central differences are meaningless.
fn away(t: Tensor<f64>, kinks: &[f64]) -> Tensor<f64> {
    t.map(|x| {
        for &k in kinks {
            if (x - k).abs() < 0.05 {
                return k + if x >= k { 0.05 } else { -0.05 };
            }
        }
        x
    })
}

fn check<F>(name: &str, inputs: impl AsRef<[Tensor<f64>]>, f: F)
where
    F: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> kiln_tape::Result<Var<'t, f64>>,
{
    let r = gradcheck(inputs.as_ref(), f).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!(
        "gradcheck {name:<46} worst rel err {:.1e} over {} elements",
        r.worst_rel_error, r.checked
    );
    assert!(r.checked > 0, "{name}: nothing was checked");
    assert!(r.worst_rel_error <= TOL, "{name}: {r:?}");
}

const BROADCAST_PAIRS: &[(&[usize], &[usize])] = &[
    (&[3, 4], &[3, 4]),
    (&[2, 3, 4], &[4]),
    (&[2, 1, 4], &[3, 1]),
    (&[], &[2, 2]),
    (&[2, 3], &[1, 1]),
];

#[test]
fn add_sub_mul_div_with_broadcasting() {
    for (i, &(a, b)) in BROADCAST_PAIRS.iter().enumerate() {
        let (x, y) = (randn(a, 10 + i as u64), randn(b, 20 + i as u64));
        check(&format!("add {a:?}+{b:?}"), [x.clone(), y.clone()], |_, v| v[0].add(v[1]));
        check(&format!("sub {a:?}-{b:?}"), [x.clone(), y.clone()], |_, v| v[0].sub(v[1]));
        check(&format!("mul {a:?}*{b:?}"), [x.clone(), y.clone()], |_, v| v[0].mul(v[1]));
        let d = away(y, &[0.0]).map(|v| v.signum() * (v.abs() + 0.5));
        check(&format!("div {a:?}/{b:?}"), [x, d], |_, v| v[0].div(v[1]));
    }
}

#[test]
fn unary_math() {
    for shape in [&[7][..], &[2, 3, 4]] {
        let x = randn(shape, 1);
        let p = positive(shape, 2);
        check(&format!("neg {shape:?}"), [x.clone()], |_, v| Ok(v[0].neg()));
        check(&format!("exp {shape:?}"), [x.clone()], |_, v| Ok(v[0].exp()));
        check(&format!("log {shape:?}"), [p.clone()], |_, v| Ok(v[0].log()));
        check(&format!("sqrt {shape:?}"), [p.clone()], |_, v| Ok(v[0].sqrt()));
        check(&format!("powf 2.5 {shape:?}"), [p.clone()], |_, v| Ok(v[0].powf(2.5)));
        check(&format!("powf -1.5 {shape:?}"), [p], |_, v| Ok(v[0].powf(-1.5)));
        check(&format!("abs {shape:?}"), [away(x.clone(), &[0.0])], |_, v| Ok(v[0].abs()));
        check(&format!("clamp [-0.5, 0.7] {shape:?}"), [away(x.clone(), &[-0.5, 0.7])], |_, v| {
            v[0].clamp(-0.5, 0.7)
        });
        check(&format!("add_scalar {shape:?}"), [x.clone()], |_, v| Ok(v[0].add_scalar(3.0)));
        check(&format!("mul_scalar {shape:?}"), [x], |_, v| Ok(v[0].mul_scalar(-1.7)));
    }
}

#[test]
fn every_activation() {
    let acts = [
        Activation::Linear,
        Activation::Relu,
        Activation::LeakyRelu(0.3),
        Activation::Elu(1.0),
        Activation::Elu(0.5),
        Activation::Selu,
        Activation::Gelu { approximate: false },
        Activation::Gelu { approximate: true },
        Activation::Sigmoid,
        Activation::HardSigmoid,
        Activation::Tanh,
        Activation::Softplus,
        Activation::Softsign,
        Activation::Swish,
    ];
    for act in acts {
        for shape in [&[9][..], &[3, 2, 4]] {
            let x = away(randn(shape, 3).map(|v| 2.5 * v), &[0.0, -3.0, 3.0]);
            check(&format!("{act:?} {shape:?}"), [x], move |_, v| Ok(v[0].activation(act)));
        }
    }
}

#[test]
fn softmax_and_log_softmax() {
    for shape in [&[4, 5][..], &[2, 3, 4], &[6]] {
        let x = randn(shape, 4).map(|v| 3.0 * v);
        check(&format!("softmax {shape:?}"), [x.clone()], |_, v| v[0].softmax());
        check(&format!("log_softmax {shape:?}"), [x], |_, v| v[0].log_softmax());
    }
}

#[test]
fn reductions() {
    let shape = [2, 3, 4];
    let x = randn(&shape, 5);
    check("sum all [2,3,4]", [x.clone()], |_, v| v[0].sum());
    check("mean all [2,3,4]", [x.clone()], |_, v| v[0].mean());
    check("max all [2,3,4]", [x.clone()], |_, v| v[0].max());
    check("min all [2,3,4]", [x.clone()], |_, v| v[0].min());
    for axis in 0..3 {
        check(&format!("sum_axis {axis} [2,3,4]"), [x.clone()], move |_, v| v[0].sum_axis(axis));
        check(&format!("mean_axis {axis} [2,3,4]"), [x.clone()], move |_, v| v[0].mean_axis(axis));
        check(&format!("max_axis {axis} [2,3,4]"), [x.clone()], move |_, v| v[0].max_axis(axis));
        check(&format!("min_axis {axis} [2,3,4]"), [x.clone()], move |_, v| v[0].min_axis(axis));
    }
}

#[test]
fn gemm_every_transpose_with_alpha_and_c() {
    let (m, k, n) = (3, 4, 5);
    for ta in [Trans::No, Trans::Yes] {
        for tb in [Trans::No, Trans::Yes] {
            let a = randn(&(if ta == Trans::No { [m, k] } else { [k, m] }), 6);
            let b = randn(&(if tb == Trans::No { [k, n] } else { [n, k] }), 7);
            let name = format!("gemm ta={ta:?} tb={tb:?} alpha=0.7");
            check(&name, [a.clone(), b.clone()], move |_, v| v[0].gemm(ta, v[1], tb, 0.7, None));
            check(
                &format!("{name} + C[m,n]"),
                &[a.clone(), b.clone(), randn(&[m, n], 8)],
                move |_, v| v[0].gemm(ta, v[1], tb, 0.7, Some(v[2])),
            );
            check(&format!("{name} + bias row [n]"), [a, b, randn(&[n], 9)], move |_, v| {
                v[0].gemm(ta, v[1], tb, 0.7, Some(v[2]))
            });
        }
    }
    check("matmul [3,4]x[4,5]", [randn(&[3, 4], 10), randn(&[4, 5], 11)], |_, v| v[0].matmul(v[1]));
}

/// Input shape, kernel shape, strides, padding.
type ConvCase = (&'static [usize], &'static [usize], (usize, usize), Padding);

#[test]
fn conv2d_strides_and_padding() {
    let cases: &[ConvCase] = &[
        (&[2, 5, 5, 3], &[3, 3, 3, 4], (1, 1), Padding::Valid),
        (&[2, 5, 5, 3], &[3, 3, 3, 4], (2, 2), Padding::Same),
        (&[1, 6, 5, 2], &[3, 2, 2, 3], (1, 1), Padding::Same),
        (&[2, 7, 6, 1], &[2, 3, 1, 2], (2, 1), Padding::Valid),
        (&[1, 6, 6, 2], &[4, 4, 2, 2], (2, 2), Padding::Same),
    ];
    for (i, &(xs, ks, s, p)) in cases.iter().enumerate() {
        let (x, k, b) =
            (randn(xs, 30 + i as u64), randn(ks, 40 + i as u64), randn(&[ks[3]], 50 + i as u64));
        check(
            &format!("conv2d {xs:?}*{ks:?} s={s:?} {p:?}"),
            &[x.clone(), k.clone()],
            move |_, v| v[0].conv2d(v[1], None, s, p),
        );
        check(&format!("conv2d+bias {xs:?}*{ks:?} s={s:?} {p:?}"), [x, k, b], move |_, v| {
            v[0].conv2d(v[1], Some(v[2]), s, p)
        });
    }
}

#[test]
fn pooling() {
    let x = randn(&[2, 5, 6, 3], 60);
    let cases = [
        ((2, 2), (2, 2), Padding::Valid),
        ((3, 3), (2, 2), Padding::Same),
        ((2, 3), (1, 2), Padding::Valid),
        ((2, 2), (2, 2), Padding::Same),
    ];
    for (pool, s, p) in cases {
        check(&format!("max_pool2d pool={pool:?} s={s:?} {p:?}"), [x.clone()], move |_, v| {
            v[0].max_pool2d(pool, s, p)
        });
        check(&format!("avg_pool2d pool={pool:?} s={s:?} {p:?}"), [x.clone()], move |_, v| {
            v[0].avg_pool2d(pool, s, p)
        });
    }
    check("global_avg_pool2d [2,5,6,3]", [x], |_, v| v[0].global_avg_pool2d());
}

#[test]
fn layout_ops() {
    let x = randn(&[2, 3, 4], 70);
    check("reshape [2,3,4]->[6,4]", [x.clone()], |_, v| v[0].reshape(&[6, 4]));
    check("permute [2,0,1]", [x.clone()], |_, v| v[0].permute(&[2, 0, 1]));
    check("transpose [5,7]", [randn(&[5, 7], 71)], |_, v| v[0].transpose());
    check("slice [0..2, 1..3, 1..4]", [x.clone()], |_, v| v[0].slice(&[0..2, 1..3, 1..4]));
    check("concat axis 0", [x.clone(), randn(&[1, 3, 4], 72)], |_, v| concat(&[v[0], v[1]], 0));
    check("concat axis 2", [x.clone(), randn(&[2, 3, 2], 73), randn(&[2, 3, 1], 74)], |_, v| {
        concat(&[v[0], v[1], v[2]], 2)
    });
    check("gather_rows with repeats", [randn(&[5, 3], 75)], |_, v| {
        v[0].gather_rows(&[4, 0, 4, 2, 4])
    });
}

#[test]
fn composite_expression() {
    // A small MLP loss: mean(log_softmax(relu(x·W1 + b1)·W2 + b2)) through several ops at once.
    let inputs = [
        randn(&[4, 3], 80),
        randn(&[3, 5], 81),
        randn(&[5], 82),
        randn(&[5, 2], 83),
        randn(&[2], 84),
    ];
    check("mlp composite", inputs, |_, v| {
        let h =
            v[0].gemm(Trans::No, v[1], Trans::No, 1.0, Some(v[2]))?.activation(Activation::Tanh);
        h.gemm(Trans::No, v[3], Trans::No, 1.0, Some(v[4]))?.log_softmax()?.mean()
    });
}
