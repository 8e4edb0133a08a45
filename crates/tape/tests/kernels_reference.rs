//! Kernels against naive reference implementations written here, independently of the
//! im2col/GEMM paths they check.

use kiln_tape::kernels::{self, Conv2dGeometry, Padding, Pool2dGeometry, Trans};
use kiln_tape::{Activation, Tensor};

fn randv(n: usize, seed: u64) -> Vec<f64> {
    Tensor::<f64>::random_normal(&[n], 0.0, 1.0, seed).into_vec()
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}: element {i}: {x} vs {y}");
    }
}

#[test]
fn gemm_matches_naive_for_every_transpose_alpha_and_beta() {
    // (9, 32, 600): B one AVX-512 panel wide, read in place, over two depth blocks.
    for &(m, n, k) in &[(1, 1, 1), (3, 5, 4), (7, 13, 5), (33, 17, 65), (4, 3, 0), (9, 32, 600)] {
        for ta in [Trans::No, Trans::Yes] {
            for tb in [Trans::No, Trans::Yes] {
                for &(alpha, beta) in &[(1.0, 0.0), (0.7, 1.0), (-2.0, 0.5)] {
                    let a = randv(m * k, 1);
                    let b = randv(k * n, 2);
                    let c0 = randv(m * n, 3);
                    let at = |i: usize, p: usize| {
                        if ta == Trans::No { a[i * k + p] } else { a[p * m + i] }
                    };
                    let bt = |p: usize, j: usize| {
                        if tb == Trans::No { b[p * n + j] } else { b[j * k + p] }
                    };
                    let mut want = vec![0.0; m * n];
                    for i in 0..m {
                        for j in 0..n {
                            let dot: f64 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                            want[i * n + j] = alpha * dot + beta * c0[i * n + j];
                        }
                    }
                    let mut c = c0.clone();
                    kernels::gemm(m, n, k, alpha, &a, ta, &b, tb, beta, &mut c).unwrap();
                    assert_close(
                        &c,
                        &want,
                        1e-12,
                        &format!("gemm {m}x{n}x{k} {ta:?} {tb:?} α={alpha} β={beta}"),
                    );
                    // f32 through sgemm.
                    let (a32, b32): (Vec<f32>, Vec<f32>) = (
                        a.iter().map(|&v| v as f32).collect(),
                        b.iter().map(|&v| v as f32).collect(),
                    );
                    let mut c32: Vec<f32> = c0.iter().map(|&v| v as f32).collect();
                    kernels::gemm(m, n, k, alpha as f32, &a32, ta, &b32, tb, beta as f32, &mut c32)
                        .unwrap();
                    let c32: Vec<f64> = c32.iter().map(|&v| v as f64).collect();
                    // f32 rounding grows with the depth of each dot product.
                    assert_close(&c32, &want, 1e-6 * (k as f64).max(10.0), "sgemm");
                }
            }
        }
    }
}

#[test]
fn gemm_with_beta_zero_ignores_garbage_in_c() {
    let mut c = vec![f32::NAN; 4];
    kernels::gemm(
        2,
        2,
        2,
        1.0,
        &[1.0, 2.0, 3.0, 4.0],
        Trans::No,
        &[1.0, 0.0, 0.0, 1.0],
        Trans::No,
        0.0,
        &mut c,
    )
    .unwrap();
    assert_eq!(c, vec![1.0, 2.0, 3.0, 4.0]);
}

/// Direct convolution: y[b,oy,ox,o] = bias[o] + Σ x[b, oy·sh+ky−pt, ox·sw+kx−pl, c]·k[ky,kx,c,o].
fn conv_direct(g: &Conv2dGeometry, x: &[f64], k: &[f64], bias: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; g.n * g.oh * g.ow * g.o];
    for b in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for o in 0..g.o {
                    let mut s = bias[o];
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.sh + ky) as isize - g.pad_top as isize;
                            let ix = (ox * g.sw + kx) as isize - g.pad_left as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            for c in 0..g.c {
                                s += x[((b * g.h + iy as usize) * g.w + ix as usize) * g.c + c]
                                    * k[((ky * g.kw + kx) * g.c + c) * g.o + o];
                            }
                        }
                    }
                    y[((b * g.oh + oy) * g.ow + ox) * g.o + o] = s;
                }
            }
        }
    }
    y
}

/// Direct gradients of the convolution for upstream gradient dy.
fn conv_direct_backward(
    g: &Conv2dGeometry,
    x: &[f64],
    k: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut dx, mut dk, mut db) = (vec![0.0; x.len()], vec![0.0; k.len()], vec![0.0; g.o]);
    for b in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for o in 0..g.o {
                    let d = dy[((b * g.oh + oy) * g.ow + ox) * g.o + o];
                    db[o] += d;
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.sh + ky) as isize - g.pad_top as isize;
                            let ix = (ox * g.sw + kx) as isize - g.pad_left as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            for c in 0..g.c {
                                let xi = ((b * g.h + iy as usize) * g.w + ix as usize) * g.c + c;
                                let ki = ((ky * g.kw + kx) * g.c + c) * g.o + o;
                                dx[xi] += d * k[ki];
                                dk[ki] += d * x[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dk, db)
}

/// Input shape, kernel shape, strides, padding.
type ConvCase = ([usize; 4], [usize; 4], (usize, usize), Padding);

#[test]
fn conv2d_matches_direct_loops_forward_and_backward() {
    let cases: &[ConvCase] = &[
        ([2, 8, 8, 1], [3, 3, 1, 4], (1, 1), Padding::Valid),
        ([2, 8, 7, 3], [3, 3, 3, 5], (1, 1), Padding::Same),
        ([1, 9, 9, 2], [3, 3, 2, 3], (2, 2), Padding::Same),
        ([1, 9, 8, 2], [2, 4, 2, 3], (2, 3), Padding::Valid),
        ([3, 6, 6, 4], [5, 5, 4, 2], (1, 2), Padding::Same),
        ([1, 4, 4, 2], [4, 4, 2, 2], (1, 1), Padding::Valid),
        // Large enough for im2col and col2im to split the batch across both cores.
        ([17, 24, 24, 3], [3, 3, 3, 2], (1, 1), Padding::Same),
        // Channels in whole groups of 8 and not; several tiles per half.
        ([40, 13, 13, 32], [3, 3, 32, 64], (1, 1), Padding::Valid),
        ([9, 11, 10, 12], [3, 2, 12, 5], (2, 1), Padding::Same),
        // 32 and 64 filters (whole 32-wide panels): the direct forward, padded and in
        // place, strided, and over more than one GEMM depth block (576 > 512).
        ([3, 10, 9, 32], [3, 3, 32, 32], (1, 1), Padding::Same),
        ([2, 10, 10, 64], [3, 3, 64, 64], (2, 2), Padding::Same),
        ([2, 9, 9, 24], [1, 1, 24, 64], (2, 2), Padding::Valid),
        ([2, 12, 11, 1], [3, 3, 1, 32], (1, 1), Padding::Valid),
    ];
    for (i, (xs, ks, s, p)) in cases.iter().enumerate() {
        let g = Conv2dGeometry::new(xs, ks, *s, *p).unwrap();
        let x = randv(xs.iter().product(), 10 + i as u64);
        let k = randv(ks.iter().product(), 20 + i as u64);
        let bias = randv(ks[3], 30 + i as u64);
        let mut col = vec![0.0; g.workspace_len()];
        let mut y = vec![0.0; g.rows() * g.o];
        kernels::conv2d_forward(&g, &x, &k, Some(&bias), &mut y, &mut col, None).unwrap();
        let what = format!("conv {xs:?} {ks:?} {s:?} {p:?}");
        assert_close(&y, &conv_direct(&g, &x, &k, &bias), 1e-12, &what);

        let dy = randv(y.len(), 40 + i as u64);
        let (want_dx, want_dk, want_db) = conv_direct_backward(&g, &x, &k, &dy);
        let (mut dx, mut dk, mut db) = (vec![7.0; x.len()], vec![7.0; k.len()], vec![7.0; g.o]);
        kernels::conv2d_backward(
            &g,
            &x,
            &k,
            &dy,
            Some(&mut dx),
            &mut dk,
            Some(&mut db),
            &mut col,
            None,
        )
        .unwrap();
        assert_close(&dx, &want_dx, 1e-12, &format!("{what} dx"));
        assert_close(&dk, &want_dk, 1e-12, &format!("{what} dk"));
        assert_close(&db, &want_db, 1e-12, &format!("{what} db"));

        // f32 takes its own paths (kernel-gradient panels packed straight from x).
        let f = |v: &[f64]| v.iter().map(|&e| e as f32).collect::<Vec<f32>>();
        let back = |v: &[f32]| v.iter().map(|&e| f64::from(e)).collect::<Vec<f64>>();
        let (x32, k32, b32, dy32) = (f(&x), f(&k), f(&bias), f(&dy));
        let mut col32 = vec![0f32; g.workspace_len()];
        let mut y32 = vec![0f32; y.len()];
        kernels::conv2d_forward(&g, &x32, &k32, Some(&b32), &mut y32, &mut col32, None).unwrap();
        // f32 rounding grows with the number of terms in each sum.
        let tol = |terms: usize| 1e-6 * (terms as f64).max(10.0);
        assert_close(&back(&y32), &y, tol(g.patch()), &format!("{what} f32"));
        // The f32 forward runs in tiles of images on both cores: the same bits as one
        // im2col matrix of the whole batch times the kernel, then the bias.
        let mut colr = vec![0f32; g.col_len()];
        kernels::im2col(&g, &x32, &mut colr).unwrap();
        let mut yr = vec![0f32; y.len()];
        kernels::gemm(
            g.rows(),
            g.o,
            g.patch(),
            1.0,
            &colr,
            Trans::No,
            &k32,
            Trans::No,
            0.0,
            &mut yr,
        )
        .unwrap();
        for row in yr.chunks_exact_mut(g.o) {
            row.iter_mut().zip(&b32).for_each(|(v, &b)| *v += b);
        }
        assert!(
            y32 == yr,
            "{what}: the tiled f32 forward differs from im2col · kernel in its bits"
        );
        let (mut dx32, mut dk32, mut db32) =
            (vec![7f32; x.len()], vec![7f32; k.len()], vec![7f32; g.o]);
        kernels::conv2d_backward(
            &g,
            &x32,
            &k32,
            &dy32,
            Some(&mut dx32),
            &mut dk32,
            Some(&mut db32),
            &mut col32,
            None,
        )
        .unwrap();
        assert_close(&back(&dx32), &want_dx, tol(g.kh * g.kw * g.o), &format!("{what} f32 dx"));
        assert_close(&back(&dk32), &want_dk, tol(g.rows()), &format!("{what} f32 dk"));
        assert_close(&back(&db32), &want_db, tol(g.rows()), &format!("{what} f32 db"));
    }
}

#[test]
fn f32_kernel_gradient_is_the_gemm_on_the_im2col_matrix_bit_for_bit() {
    // One image (one tile, one half), so the reference is one GEMM: colᵀ · dY. The
    // direct path sums over pixels in the GEMM's depth blocks (784 rows: two of them).
    let cases: &[ConvCase] = &[
        ([1, 10, 9, 32], [3, 3, 32, 32], (1, 1), Padding::Same),
        ([1, 12, 12, 16], [3, 3, 16, 64], (2, 2), Padding::Same),
        ([1, 28, 28, 8], [3, 3, 8, 32], (1, 1), Padding::Same),
        ([1, 9, 9, 24], [1, 1, 24, 64], (2, 2), Padding::Valid),
    ];
    for (i, (xs, ks, s, p)) in cases.iter().enumerate() {
        let g = Conv2dGeometry::new(xs, ks, *s, *p).unwrap();
        let f = |v: Vec<f64>| v.iter().map(|&e| e as f32).collect::<Vec<f32>>();
        let x = f(randv(xs.iter().product(), 50 + i as u64));
        let k = f(randv(ks.iter().product(), 60 + i as u64));
        let dy = f(randv(g.rows() * g.o, 70 + i as u64));
        let mut ws = vec![0f32; g.workspace_len()];
        let mut dk = vec![7f32; k.len()];
        kernels::conv2d_backward(&g, &x, &k, &dy, None, &mut dk, None, &mut ws, None).unwrap();
        let mut col = vec![0f32; g.col_len()];
        kernels::im2col(&g, &x, &mut col).unwrap();
        let mut want = vec![0f32; k.len()];
        kernels::gemm(
            g.patch(),
            g.o,
            g.rows(),
            1.0,
            &col,
            Trans::Yes,
            &dy,
            Trans::No,
            0.0,
            &mut want,
        )
        .unwrap();
        assert!(
            dk == want,
            "{xs:?} {ks:?}: the kernel gradient differs from colᵀ · dY in its bits"
        );
    }
}

#[test]
fn same_padding_matches_tensorflow_output_sizes() {
    // TensorFlow: out = ceil(in / stride); the extra pad goes bottom/right.
    let g = Conv2dGeometry::new(&[1, 28, 28, 1], &[3, 3, 1, 1], (2, 2), Padding::Same).unwrap();
    assert_eq!((g.oh, g.ow, g.pad_top, g.pad_left), (14, 14, 0, 0));
    let g = Conv2dGeometry::new(&[1, 5, 5, 1], &[3, 3, 1, 1], (1, 1), Padding::Same).unwrap();
    assert_eq!((g.oh, g.pad_top), (5, 1));
    let g = Conv2dGeometry::new(&[1, 28, 28, 1], &[3, 3, 1, 32], (1, 1), Padding::Valid).unwrap();
    assert_eq!(g.output_shape(), [1, 26, 26, 32]);
}

#[test]
fn pooling_matches_direct_loops() {
    let cases = [
        ((2, 2), (2, 2), Padding::Valid),
        ((3, 3), (2, 2), Padding::Same),
        ((2, 3), (1, 2), Padding::Valid),
        ((3, 2), (3, 3), Padding::Same),
    ];
    // The larger shapes take the two-core path (2x2 fast path included; 27 is odd, so a
    // row and a column belong to no window). Each input also comes with many ties
    // (rounded ReLU outputs), where the first maximum in window order must win.
    let shapes = [
        ([2, 7, 6, 3], &cases[..]),
        ([16, 64, 64, 4], &cases[..1]),
        ([48, 27, 27, 8], &cases[..1]),
    ];
    for (shape, cases) in shapes {
        for (ties, &(pool, s, p)) in
            [false, true].into_iter().flat_map(|t| cases.iter().map(move |c| (t, c)))
        {
            let x = randv(shape.iter().product(), 50);
            let x: Vec<f64> =
                if ties { x.iter().map(|v| (2.0 * v).round().max(0.0)).collect() } else { x };
            let g = Pool2dGeometry::new(&shape, pool, s, p).unwrap();
            let (mut ymax, mut yavg, mut arg) =
                (vec![0.0; g.output_len()], vec![0.0; g.output_len()], vec![0; g.output_len()]);
            kernels::max_pool2d_forward(&g, &x, &mut ymax, Some(&mut arg)).unwrap();
            kernels::avg_pool2d_forward(&g, &x, &mut yavg).unwrap();
            let dy = randv(g.output_len(), 51);
            let (mut want_dmax, mut want_davg) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            for b in 0..g.n {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        for c in 0..g.c {
                            let (mut best, mut at, mut sum, mut cnt) =
                                (f64::NEG_INFINITY, 0, 0.0, 0.0);
                            let mut members = Vec::new();
                            for py in 0..g.ph {
                                for px in 0..g.pw {
                                    let iy = (oy * g.sh + py) as isize - g.pad_top as isize;
                                    let ix = (ox * g.sw + px) as isize - g.pad_left as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let i = ((b * g.h + iy as usize) * g.w + ix as usize) * g.c + c;
                                    if x[i] > best {
                                        best = x[i];
                                        at = i;
                                    }
                                    sum += x[i];
                                    cnt += 1.0;
                                    members.push(i);
                                }
                            }
                            let o = ((b * g.oh + oy) * g.ow + ox) * g.c + c;
                            let what = format!("pool {pool:?} {s:?} {p:?} at {o}");
                            assert_eq!(ymax[o], best, "max {what}");
                            assert_eq!(arg[o], at, "argmax {what}");
                            assert!((yavg[o] - sum / cnt).abs() < 1e-12, "avg {what}");
                            want_dmax[at] += dy[o];
                            for i in members {
                                want_davg[i] += dy[o] / cnt;
                            }
                        }
                    }
                }
            }
            let (mut dmax, mut davg) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            kernels::max_pool2d_backward(&g, &arg, &dy, &mut dmax).unwrap();
            kernels::avg_pool2d_backward(&g, &dy, &mut davg).unwrap();
            assert_close(&dmax, &want_dmax, 1e-12, "max pool backward");
            // From the values instead of the argmax, overwriting whatever dx held.
            let mut dvals = vec![7.0; x.len()];
            kernels::max_pool2d_backward_from_values(&g, &x, &ymax, &dy, &mut dvals).unwrap();
            assert_close(
                &dvals,
                &want_dmax,
                1e-12,
                &format!("max pool backward from values {shape:?} {pool:?} ties {ties}"),
            );
            assert_close(&davg, &want_davg, 1e-12, "avg pool backward");
        }
    }
}

#[test]
fn global_average_pooling_matches_a_direct_mean() {
    let dims = [2, 3, 4, 5];
    let x = randv(120, 60);
    let mut y = vec![0.0; 10];
    kernels::global_avg_pool2d_forward(dims, &x, &mut y).unwrap();
    for b in 0..2 {
        for c in 0..5 {
            let want: f64 = (0..12).map(|p| x[(b * 12 + p) * 5 + c]).sum::<f64>() / 12.0;
            assert!((y[b * 5 + c] - want).abs() < 1e-12);
        }
    }
}

#[test]
fn softmax_log_softmax_and_sigmoid_stay_finite_at_1e4() {
    let x = [1e4f32, -1e4, 0.0, 1e4, 1e4, -1e4];
    let mut y = [0f32; 6];
    kernels::softmax(&x, 3, &mut y).unwrap();
    assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
    assert_eq!(&y[..3], &[1.0, 0.0, 0.0]);
    assert_eq!(&y[3..], &[0.5, 0.5, 0.0]);
    kernels::log_softmax(&x, 3, &mut y).unwrap();
    assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
    assert_eq!(y[0], 0.0);
    assert_eq!(y[1], -2e4);
    for v in [1e4f32, -1e4, 88.8, -88.8, 0.0] {
        let s = Activation::Sigmoid.apply(v);
        assert!(s.is_finite() && (0.0..=1.0).contains(&s), "sigmoid({v}) = {s}");
        let sp = Activation::Softplus.apply(v);
        assert!(sp.is_finite(), "softplus({v}) = {sp}");
    }
    assert_eq!(Activation::Sigmoid.apply(-1e4f32), 0.0);
    assert_eq!(Activation::Sigmoid.apply(1e4f32), 1.0);
    // Gradients there are finite too.
    let mut d = [0f32; 6];
    kernels::softmax(&x, 3, &mut y).unwrap();
    kernels::softmax_backward(&y, &[1.0; 6], 3, &mut d).unwrap();
    assert!(d.iter().all(|v| v.is_finite()));
}

#[test]
fn activations_match_their_textbook_definitions() {
    let xs = [-2.5f64, -0.3, 0.4, 1.7];
    for &x in &xs {
        let sig = 1.0 / (1.0 + (-x).exp());
        let cases = [
            (Activation::Relu, x.max(0.0)),
            (Activation::LeakyRelu(0.2), if x > 0.0 { x } else { 0.2 * x }),
            (Activation::Elu(1.0), if x > 0.0 { x } else { x.exp() - 1.0 }),
            (
                Activation::Selu,
                1.0507009873554805 * if x > 0.0 { x } else { 1.6732632423543772 * (x.exp() - 1.0) },
            ),
            (Activation::Sigmoid, sig),
            (Activation::HardSigmoid, (x / 6.0 + 0.5).clamp(0.0, 1.0)),
            (Activation::Tanh, x.tanh()),
            (Activation::Softplus, (1.0 + x.exp()).ln()),
            (Activation::Softsign, x / (1.0 + x.abs())),
            (Activation::Swish, x * sig),
            (
                Activation::Gelu { approximate: true },
                0.5 * x
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3)))
                            .tanh()),
            ),
        ];
        for (act, want) in cases {
            assert!(
                (act.apply(x) - want).abs() < 1e-14,
                "{act:?}({x}) = {} vs {want}",
                act.apply(x)
            );
        }
    }
    // Exact GELU at points where Φ is tabulated: Φ(1) = 0.8413447460685429.
    assert!(
        (Activation::Gelu { approximate: false }.apply(1.0f64) - 0.8413447460685429).abs() < 1e-15
    );
    for name in Activation::NAMES {
        assert!(Activation::from_name(name).is_some(), "{name}");
    }
    assert_eq!(Activation::from_name("rleu"), None);
}

#[test]
fn reductions_and_argmax_match_direct_loops() {
    use kernels::Reduce;
    let shape = [3, 4, 5];
    let x = randv(60, 70);
    for axis in 0..3 {
        let (outer, n, inner): (usize, usize, usize) =
            (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product());
        for kind in [Reduce::Sum, Reduce::Mean, Reduce::Max, Reduce::Min] {
            let mut out = vec![0.0; outer * inner];
            kernels::reduce_axis(kind, &x, &shape, axis, &mut out).unwrap();
            for o in 0..outer {
                for i in 0..inner {
                    let vals: Vec<f64> = (0..n).map(|j| x[(o * n + j) * inner + i]).collect();
                    let want = match kind {
                        Reduce::Sum => vals.iter().sum(),
                        Reduce::Mean => vals.iter().sum::<f64>() / n as f64,
                        Reduce::Max => vals.iter().copied().fold(f64::MIN, f64::max),
                        Reduce::Min => vals.iter().copied().fold(f64::MAX, f64::min),
                    };
                    assert!((out[o * inner + i] - want).abs() < 1e-12, "{kind:?} axis {axis}");
                }
            }
        }
        let mut am = vec![0; outer * inner];
        kernels::argmax_axis(&x, &shape, axis, &mut am).unwrap();
        for o in 0..outer {
            for i in 0..inner {
                let best = (0..n)
                    .max_by(|&a, &b| {
                        x[(o * n + a) * inner + i].total_cmp(&x[(o * n + b) * inner + i])
                    })
                    .unwrap();
                assert_eq!(am[o * inner + i], best);
            }
        }
    }
    assert_eq!(kernels::reduce_all(Reduce::Sum, &x).unwrap(), x.iter().sum::<f64>());
    assert_eq!(kernels::argmax_all(&[1.0, 3.0, 3.0, 2.0]).unwrap(), 1, "first index on ties");
}

#[test]
fn layout_kernels_match_index_arithmetic() {
    let x = randv(24, 80);
    let mut y = vec![0.0; 24];
    let s = kernels::permute(&x, &[2, 3, 4], &[2, 0, 1], &mut y).unwrap();
    assert_eq!(s, vec![4, 2, 3]);
    for a in 0..2 {
        for b in 0..3 {
            for c in 0..4 {
                assert_eq!(y[(c * 2 + a) * 3 + b], x[(a * 3 + b) * 4 + c]);
            }
        }
    }
    let mut t = vec![0.0; 24];
    kernels::permute(&x, &[6, 4], &[1, 0], &mut t).unwrap();
    for i in 0..6 {
        for j in 0..4 {
            assert_eq!(t[j * 6 + i], x[i * 4 + j]);
        }
    }
    let mut sl = vec![0.0; 4];
    kernels::slice(&x, &[2, 3, 4], &[1..2, 1..3, 2..4], &mut sl).unwrap();
    assert_eq!(sl, vec![x[12 + 4 + 2], x[12 + 4 + 3], x[12 + 8 + 2], x[12 + 8 + 3]]);
    let (a, b) = (vec![1.0, 2.0, 3.0, 4.0], vec![5.0, 6.0]);
    let mut cat = vec![0.0; 6];
    kernels::concat(&[(&a[..], &[2, 2][..]), (&b[..], &[2, 1][..])], 1, &mut cat).unwrap();
    assert_eq!(cat, vec![1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
    let table = vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
    let mut g = vec![0.0; 6];
    kernels::gather_rows(&table, 2, &[2, 0, 2], &mut g).unwrap();
    assert_eq!(g, vec![20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);
    let mut dt = vec![0.0; 6];
    kernels::scatter_add_rows(&[1.0, 1.0, 2.0, 2.0, 3.0, 3.0], 2, &[2, 0, 2], &mut dt).unwrap();
    assert_eq!(dt, vec![2.0, 2.0, 0.0, 0.0, 4.0, 4.0]);
}

/// The vectorizable float32 exp, sigmoid and tanh against f64 references: within a few
/// ulp over a dense sweep, including both tails and zero.
#[test]
fn fast_f32_exp_sigmoid_tanh_are_within_a_few_ulp() {
    use kiln_tape::kernels::activation::{exp_f32, sigmoid_f32, tanh_f32};
    let ulps = |got: f32, want: f64| {
        let w = want as f32;
        if w == 0.0 || !w.is_finite() {
            return if got == w { 0.0 } else { f64::INFINITY };
        }
        ((f64::from(got) - want) / f64::from(w.abs() * f32::EPSILON)).abs()
    };
    let (mut e, mut s, mut t) = (0.0f64, 0.0f64, 0.0f64);
    let mut x = -87.0f32;
    while x < 88.0 {
        e = e.max(ulps(exp_f32(x), f64::from(x).exp()));
        s = s.max(ulps(sigmoid_f32(x), 1.0 / (1.0 + (-f64::from(x)).exp())));
        t = t.max(ulps(tanh_f32(x), f64::from(x).tanh()));
        x += 0.001_37;
    }
    for &x in &[0.0f32, 1e-8, -1e-8, 1e-3, -0.624, 0.626, 9.0, -9.0, 20.0, -20.0] {
        t = t.max(ulps(tanh_f32(x), f64::from(x).tanh()));
        s = s.max(ulps(sigmoid_f32(x), 1.0 / (1.0 + (-f64::from(x)).exp())));
    }
    println!("worst ulp: exp {e:.2}, sigmoid {s:.2}, tanh {t:.2}");
    assert!(e <= 3.0 && s <= 4.0 && t <= 4.0, "exp {e}, sigmoid {s}, tanh {t}");
    assert_eq!(exp_f32(-200.0), exp_f32(-87.336_55));
    assert!(exp_f32(200.0).is_finite() && sigmoid_f32(-200.0) >= 0.0 && sigmoid_f32(200.0) == 1.0);
}
