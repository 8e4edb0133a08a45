//! Kernel benchmarks at the shapes of the MNIST workloads.
//!
//! Throughput is reported in elements/s where one element is one floating-point
//! operation, so criterion's "Gelem/s" reads as GFLOP/s. Run with `cargo xtask bench`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln::tape::Tensor;
use kiln::tape::kernels::{self, Conv2dGeometry, Padding, Trans};
use std::hint::black_box;

fn randv(n: usize, seed: u64) -> Vec<f32> {
    Tensor::<f32>::random_normal(&[n], 0.0, 1.0, seed).into_vec()
}

/// The dense layer 784 → 128 at batch 32 and 256: forward X·W, and the two backward
/// products Xᵀ·dY (kernel gradient) and dY·Wᵀ (input gradient).
fn gemm_mlp(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    for batch in [32usize, 256] {
        let (i, o) = (784usize, 128usize);
        let x = randv(batch * i, 1);
        let w = randv(i * o, 2);
        let dy = randv(batch * o, 3);
        let flops = (2 * batch * i * o) as u64;
        g.throughput(Throughput::Elements(flops));
        let mut y = vec![0f32; batch * o];
        g.bench_function(BenchmarkId::new("X·W", format!("{batch}x{i}·{i}x{o}")), |b| {
            b.iter(|| {
                kernels::gemm(
                    batch,
                    o,
                    i,
                    1.0,
                    black_box(&x),
                    Trans::No,
                    &w,
                    Trans::No,
                    0.0,
                    &mut y,
                )
                .unwrap()
            })
        });
        let mut dw = vec![0f32; i * o];
        g.bench_function(BenchmarkId::new("Xᵀ·dY", format!("{i}x{batch}·{batch}x{o}")), |b| {
            b.iter(|| {
                kernels::gemm(
                    i,
                    o,
                    batch,
                    1.0,
                    black_box(&x),
                    Trans::Yes,
                    &dy,
                    Trans::No,
                    0.0,
                    &mut dw,
                )
                .unwrap()
            })
        });
        let mut dx = vec![0f32; batch * i];
        g.bench_function(BenchmarkId::new("dY·Wᵀ", format!("{batch}x{o}·{o}x{i}")), |b| {
            b.iter(|| {
                kernels::gemm(
                    batch,
                    i,
                    o,
                    1.0,
                    black_box(&dy),
                    Trans::No,
                    &w,
                    Trans::Yes,
                    0.0,
                    &mut dx,
                )
                .unwrap()
            })
        });
    }
    // The convolutions' GEMMs: im2col(x)·K, colᵀ·dY and dY·Kᵀ for both convnet layers.
    for &(m, k, n, name) in &[
        (128 * 26 * 26, 9, 32, "conv1 col·K"),
        (128 * 11 * 11, 288, 64, "conv2 col·K"),
        (288, 64, 128 * 11 * 11, "conv2 colᵀ·dY"),
        (128 * 11 * 11, 64, 288, "conv2 dY·Kᵀ"),
    ] {
        let (ta, a_len) =
            if name.contains("colᵀ") { (Trans::Yes, k * m) } else { (Trans::No, m * k) };
        let tb = if name.contains("Kᵀ") { Trans::Yes } else { Trans::No };
        let a = randv(a_len, 8);
        let b = randv(k * n, 9);
        let mut c = vec![0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        g.bench_function(BenchmarkId::new(name, format!("{m}x{k}·{k}x{n}")), |bch| {
            bch.iter(|| {
                kernels::gemm(m, n, k, 1.0, black_box(&a), ta, &b, tb, 0.0, &mut c).unwrap()
            })
        });
    }
    g.finish();
}

/// The two convolutions of Keras's simple MNIST convnet at batch 128.
fn conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv2d");
    g.sample_size(10);
    for (input, kernel) in [([128, 28, 28, 1], [3, 3, 1, 32]), ([128, 13, 13, 32], [3, 3, 32, 64])]
    {
        let geom = Conv2dGeometry::new(&input, &kernel, (1, 1), Padding::Valid).unwrap();
        let x = randv(input.iter().product(), 4);
        let k = randv(kernel.iter().product(), 5);
        let bias = randv(kernel[3], 6);
        let mut col = vec![0f32; geom.workspace_len()];
        let mut y = vec![0f32; geom.rows() * geom.o];
        let gemm_flops = (2 * geom.rows() * geom.patch() * geom.o) as u64;
        let name = format!("{input:?}*{kernel:?}");
        g.throughput(Throughput::Elements(gemm_flops));
        g.bench_function(BenchmarkId::new("forward", &name), |b| {
            b.iter(|| {
                kernels::conv2d_forward(
                    &geom,
                    black_box(&x),
                    &k,
                    Some(&bias),
                    &mut y,
                    &mut col,
                    None,
                )
                .unwrap()
            })
        });
        let dy = randv(y.len(), 7);
        let (mut dx, mut dk, mut db) =
            (vec![0f32; x.len()], vec![0f32; k.len()], vec![0f32; geom.o]);
        // Backward with the input gradient: two GEMMs of the forward's size.
        g.throughput(Throughput::Elements(2 * gemm_flops));
        g.bench_function(BenchmarkId::new("backward", &name), |b| {
            b.iter(|| {
                kernels::conv2d_backward(
                    &geom,
                    black_box(&x),
                    &k,
                    &dy,
                    Some(&mut dx),
                    &mut dk,
                    Some(&mut db),
                    &mut col,
                    None,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

/// The convnet's two Conv2D (relu) → MaxPool2D(2) blocks as `model!` runs them fused,
/// forward in training mode (pool winners kept), and the first block's kernel gradient
/// from the winners (its one-channel direct path).
fn conv_pool(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv2d+pool");
    g.sample_size(10);
    let relu = |y: &mut [f32]| kiln::tape::Activation::Relu.forward_inplace(y);
    for (input, kernel) in [([128, 28, 28, 1], [3, 3, 1, 32]), ([128, 13, 13, 32], [3, 3, 32, 64])]
    {
        let geom = Conv2dGeometry::new(&input, &kernel, (1, 1), Padding::Valid).unwrap();
        let x = randv(input.iter().product(), 4);
        let k = randv(kernel.iter().product(), 5);
        let bias = randv(kernel[3], 6);
        let mut ws = vec![0f32; geom.workspace_len()];
        let pooled_len = geom.n * (geom.oh / 2) * (geom.ow / 2) * geom.o;
        let (mut pooled, mut winners) = (vec![0f32; pooled_len], vec![0f32; pooled_len]);
        let name = format!("{input:?}*{kernel:?}");
        g.throughput(Throughput::Elements((2 * geom.rows() * geom.patch() * geom.o) as u64));
        g.bench_function(BenchmarkId::new("forward", &name), |b| {
            b.iter(|| {
                kernels::conv2d_maxpool2_forward(
                    &geom,
                    black_box(&x),
                    &k,
                    Some(&bias),
                    &mut pooled,
                    Some(&mut winners),
                    &mut ws,
                    Some(&relu),
                )
                .unwrap()
            })
        });
        if input[3] == 1 {
            let dpool = randv(pooled_len, 7);
            let (mut dk, mut db) = (vec![0f32; k.len()], vec![0f32; geom.o]);
            g.bench_function(BenchmarkId::new("kernel gradient", &name), |b| {
                b.iter(|| {
                    kernels::conv2d_maxpool2_kernel_grad(
                        &geom,
                        black_box(&x),
                        &winners,
                        &dpool,
                        &mut dk,
                        Some(&mut db),
                        &mut ws,
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, gemm_mlp, conv, conv_pool);
criterion_main!(benches);
