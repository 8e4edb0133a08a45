//! Row kernels of an LSTM cell step: the elementwise parts, over `rows` rows of a
//! batch, compiled for the CPU's widest vectors (float32). Gate activations are
//! `a = [i, f, g, o]` per row (`4u` values); cell states, `tanh(c)` and states are `u`
//! per row.
//!
//! Plain multiplies and adds only (no fused multiply-add), so every ISA gives the same
//! bits as the scalar loop; other scalars run the generic loop.

use crate::scalar::Scalar;

/// Defines `$name` (float32 slices) running `$generic::<f32>` compiled for AVX-512,
/// AVX2+FMA or the baseline, chosen by runtime detection.
macro_rules! simd_kernel {
    ($name:ident => $generic:ident ( $($arg:ident : $ty:ty),* )) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $generic::<f32>($($arg),*)
                }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $generic::<f32>($($arg),*)
                }
                let cpu = super::isa::features();
                if cpu.avx512() {
                    // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if cpu.avx2_fma() {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic::<f32>($($arg),*)
        }
    };
}

simd_kernel!(cell_f32 => cell(rows: usize, u: usize, a: &[f32], cp: &[f32], cn: &mut [f32], tc: &mut [f32]));
simd_kernel!(state_f32 => state(rows: usize, u: usize, a: &[f32], tc: &[f32], h: &mut [f32]));
simd_kernel!(grad_f32 => grad(rows: usize, u: usize, a: &[f32], cp: &[f32], tc: &[f32], dh: &[f32], dc: &mut [f32], dz: &mut [f32]));

/// `c = f ⊙ c_prev + i ⊙ g` into `cn`, and a copy into `tc` (for its tanh), per row.
///
/// # Panics
/// If a buffer holds fewer than `rows` rows.
pub fn lstm_cell_rows<T: Scalar>(
    rows: usize,
    u: usize,
    a: &[T],
    cp: &[T],
    cn: &mut [T],
    tc: &mut [T],
) {
    let n = rows * u;
    assert!(
        a.len() >= 4 * n && cp.len() >= n && cn.len() >= n && tc.len() >= n,
        "lstm_cell_rows: short buffers"
    );
    match (T::as_f32(a), T::as_f32(cp), T::as_f32_mut(cn), T::as_f32_mut(tc)) {
        (Some(a), Some(cp), Some(cn), Some(tc)) => cell_f32(rows, u, a, cp, cn, tc),
        _ => cell(rows, u, a, cp, cn, tc),
    }
}

/// `h = o ⊙ tanh(c)` per row, `tc` holding `tanh(c)`.
///
/// # Panics
/// If a buffer holds fewer than `rows` rows.
pub fn lstm_state_rows<T: Scalar>(rows: usize, u: usize, a: &[T], tc: &[T], h: &mut [T]) {
    let n = rows * u;
    assert!(a.len() >= 4 * n && tc.len() >= n && h.len() >= n, "lstm_state_rows: short buffers");
    match (T::as_f32(a), T::as_f32(tc), T::as_f32_mut(h)) {
        (Some(a), Some(tc), Some(h)) => state_f32(rows, u, a, tc, h),
        _ => state(rows, u, a, tc, h),
    }
}

/// One backward step of Keras's default cell (sigmoid gates, tanh) per row: from the
/// activations `a`, the previous cell state `cp`, `tanh(c)` and the state gradient
/// `dh`, the gates' pre-activation gradients `dz` (`4u` per row) and the cell gradient
/// carried back (`dc` in and out): `dc' = dc + dh·o·(1 − tanh²c)`,
/// `dz = [dc'·g·i(1−i), dc'·c_prev·f(1−f), dc'·i·(1−g²), dh·tanh(c)·o(1−o)]`,
/// `dc ← dc'·f`.
///
/// # Panics
/// If a buffer holds fewer than `rows` rows.
#[allow(clippy::too_many_arguments)]
pub fn lstm_grad_rows<T: Scalar>(
    rows: usize,
    u: usize,
    a: &[T],
    cp: &[T],
    tc: &[T],
    dh: &[T],
    dc: &mut [T],
    dz: &mut [T],
) {
    let n = rows * u;
    assert!(
        a.len() >= 4 * n
            && cp.len() >= n
            && tc.len() >= n
            && dh.len() >= n
            && dc.len() >= n
            && dz.len() >= 4 * n,
        "lstm_grad_rows: short buffers"
    );
    match (
        T::as_f32(a),
        T::as_f32(cp),
        T::as_f32(tc),
        T::as_f32(dh),
        T::as_f32_mut(dc),
        T::as_f32_mut(dz),
    ) {
        (Some(a), Some(cp), Some(tc), Some(dh), Some(dc), Some(dz)) => {
            grad_f32(rows, u, a, cp, tc, dh, dc, dz)
        }
        _ => grad(rows, u, a, cp, tc, dh, dc, dz),
    }
}

#[inline(always)]
fn cell<T: Scalar>(rows: usize, u: usize, a: &[T], cp: &[T], cn: &mut [T], tc: &mut [T]) {
    for k in 0..rows {
        let ar = &a[4 * k * u..4 * (k + 1) * u];
        let (i, fg, g) = (&ar[..u], &ar[u..2 * u], &ar[2 * u..3 * u]);
        let cpr = &cp[k * u..(k + 1) * u];
        let (cnr, tcr) = (&mut cn[k * u..(k + 1) * u], &mut tc[k * u..(k + 1) * u]);
        for j in 0..u {
            let c = fg[j] * cpr[j] + i[j] * g[j];
            cnr[j] = c;
            tcr[j] = c;
        }
    }
}

#[inline(always)]
fn state<T: Scalar>(rows: usize, u: usize, a: &[T], tc: &[T], h: &mut [T]) {
    for k in 0..rows {
        let o = &a[4 * k * u + 3 * u..4 * (k + 1) * u];
        let (tcr, hr) = (&tc[k * u..(k + 1) * u], &mut h[k * u..(k + 1) * u]);
        for j in 0..u {
            hr[j] = o[j] * tcr[j];
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn grad<T: Scalar>(
    rows: usize,
    u: usize,
    a: &[T],
    cp: &[T],
    tc: &[T],
    dh: &[T],
    dc: &mut [T],
    dz: &mut [T],
) {
    let one = T::one();
    for k in 0..rows {
        let ar = &a[4 * k * u..4 * (k + 1) * u];
        let (i, fg, g, o) = (&ar[..u], &ar[u..2 * u], &ar[2 * u..3 * u], &ar[3 * u..]);
        let (cp, tc, dh) =
            (&cp[k * u..(k + 1) * u], &tc[k * u..(k + 1) * u], &dh[k * u..(k + 1) * u]);
        let dc = &mut dc[k * u..(k + 1) * u];
        let dzr = &mut dz[4 * k * u..4 * (k + 1) * u];
        let (dzi, rest) = dzr.split_at_mut(u);
        let (dzf, rest) = rest.split_at_mut(u);
        let (dzg, dzo) = rest.split_at_mut(u);
        for j in 0..u {
            let dct = dc[j] + dh[j] * o[j] * (one - tc[j] * tc[j]);
            dzi[j] = dct * g[j] * (i[j] * (one - i[j]));
            dzf[j] = dct * cp[j] * (fg[j] * (one - fg[j]));
            dzg[j] = dct * i[j] * (one - g[j] * g[j]);
            dzo[j] = dh[j] * tc[j] * (o[j] * (one - o[j]));
            dc[j] = dct * fg[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The float32 kernels (vectorized by dispatch) give the bits of the generic loops.
    #[test]
    fn dispatched_kernels_equal_the_generic_loops() {
        let (rows, u) = (3, 37);
        let v = |n: usize, s: usize| -> Vec<f32> {
            (0..n).map(|i| (((i * 7 + s) % 19) as f32 - 9.0) / 10.0).collect()
        };
        let (a, cp, tc, dh) = (v(4 * rows * u, 1), v(rows * u, 2), v(rows * u, 3), v(rows * u, 4));
        let (mut cn1, mut tc1, mut cn2, mut tc2) =
            (vec![0.0; rows * u], vec![0.0; rows * u], vec![0.0; rows * u], vec![0.0; rows * u]);
        lstm_cell_rows(rows, u, &a, &cp, &mut cn1, &mut tc1);
        cell::<f32>(rows, u, &a, &cp, &mut cn2, &mut tc2);
        assert_eq!((cn1, tc1), (cn2, tc2));
        let (mut h1, mut h2) = (vec![0.0; rows * u], vec![0.0; rows * u]);
        lstm_state_rows(rows, u, &a, &tc, &mut h1);
        state::<f32>(rows, u, &a, &tc, &mut h2);
        assert_eq!(h1, h2);
        let (mut dc1, mut dz1) = (v(rows * u, 5), vec![0.0; 4 * rows * u]);
        let (mut dc2, mut dz2) = (dc1.clone(), dz1.clone());
        lstm_grad_rows(rows, u, &a, &cp, &tc, &dh, &mut dc1, &mut dz1);
        grad::<f32>(rows, u, &a, &cp, &tc, &dh, &mut dc2, &mut dz2);
        assert_eq!((&dc1, &dz1), (&dc2, &dz2));
        // And the float64 path agrees with the float32 one to float32 rounding.
        let w = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let (mut dc3, mut dz3) = (w(&v(rows * u, 5)), vec![0.0f64; 4 * rows * u]);
        lstm_grad_rows(rows, u, &w(&a), &w(&cp), &w(&tc), &w(&dh), &mut dc3, &mut dz3);
        assert!(dz3.iter().zip(&dz2).all(|(x, &y)| (x - y as f64).abs() < 1e-5));
    }
}
