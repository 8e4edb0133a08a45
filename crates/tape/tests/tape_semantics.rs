//! The tape's contract: accumulation, no-grad mode, scalar-only backward, and typed
//! errors (never panics) for every shape mismatch at the public API.

use kiln_tape::{Padding, Tape, TapeError, Tensor, Trans, concat};

fn t(shape: &[usize], data: &[f64]) -> Tensor<f64> {
    Tensor::from_vec(shape, data.to_vec()).unwrap()
}

#[test]
fn a_variable_used_several_times_accumulates() {
    let tape = Tape::new();
    let x = tape.var(t(&[3], &[1.0, -2.0, 3.0]));
    // y = Σ (x·x + x + 3x) → dy/dx = 2x + 4
    let y = x.mul(x).unwrap().add(x).unwrap().add(x.mul_scalar(3.0)).unwrap().sum().unwrap();
    let g = tape.backward(y).unwrap();
    assert_eq!(g.get(x).unwrap().data(), &[6.0, 0.0, 10.0]);
}

#[test]
fn constants_and_no_grad_get_no_gradient() {
    let tape = Tape::new();
    let w = tape.var(t(&[2], &[1.0, 2.0]));
    let c = tape.constant(t(&[2], &[3.0, 4.0]));
    let detached = {
        let _guard = tape.no_grad();
        assert!(!tape.is_recording());
        w.mul_scalar(10.0)
    };
    assert!(tape.is_recording());
    let loss = w.mul(c).unwrap().add(detached).unwrap().sum().unwrap();
    let g = tape.backward(loss).unwrap();
    assert_eq!(g.get(w).unwrap().data(), &[3.0, 4.0], "no contribution through the no-grad branch");
    assert!(g.get(c).is_none());
    assert!(g.get(detached).is_none());
}

#[test]
fn backward_needs_a_scalar() {
    let tape = Tape::new();
    let x = tape.var(t(&[2], &[1.0, 2.0]));
    let y = x.exp();
    let e = tape.backward(y).err().unwrap();
    assert_eq!(e, TapeError::NonScalarLoss { shape: vec![2] });
    assert!(e.to_string().contains("sum() or mean()"), "{e}");
}

#[test]
fn variables_from_another_tape_are_rejected() {
    let (a, b) = (Tape::new(), Tape::new());
    let x = a.var(t(&[1], &[1.0]));
    let y = b.var(t(&[1], &[1.0]));
    assert_eq!(x.add(y).unwrap_err(), TapeError::ForeignVariable);
    let s = x.sum().unwrap();
    assert!(matches!(b.backward(s), Err(TapeError::ForeignVariable)));
}

#[test]
fn every_shape_mismatch_is_an_error_naming_the_shapes() {
    let tape = Tape::<f64>::new();
    let v = |shape: &[usize]| tape.var(Tensor::zeros(shape));
    let msg = |r: kiln_tape::Result<kiln_tape::Var<'_, f64>>| r.unwrap_err().to_string();

    let m = msg(v(&[2, 3]).add(v(&[4])));
    assert!(m.contains("[2, 3]") && m.contains("[4]"), "{m}");
    assert!(v(&[2, 3]).sub(v(&[2, 2])).is_err());
    assert!(v(&[2, 3]).mul(v(&[3, 3])).is_err());
    assert!(v(&[2, 3]).div(v(&[2])).is_err());
    let m = msg(v(&[2, 3]).matmul(v(&[4, 5])));
    assert!(m.contains("inner dimensions differ (3 vs 4)"), "{m}");
    assert!(v(&[2, 3, 1]).matmul(v(&[3, 5])).is_err(), "rank 3 in a matrix product");
    assert!(
        v(&[3, 2]).gemm(Trans::Yes, v(&[3, 5]), Trans::No, 1.0, Some(v(&[3, 5]))).is_err(),
        "C of the wrong shape"
    );
    let m = msg(v(&[1, 5, 5, 3]).conv2d(v(&[3, 3, 2, 4]), None, (1, 1), Padding::Valid));
    assert!(m.contains("expects 2 input channels but the input has 3"), "{m}");
    let m = msg(v(&[1, 2, 2, 1]).conv2d(v(&[3, 3, 1, 1]), None, (1, 1), Padding::Valid));
    assert!(m.contains("does not fit"), "{m}");
    assert!(
        v(&[1, 5, 5, 1]).conv2d(v(&[3, 3, 1, 1]), None, (0, 1), Padding::Same).is_err(),
        "zero stride"
    );
    assert!(
        v(&[1, 5, 5, 1]).conv2d(v(&[3, 3, 1, 2]), Some(v(&[3])), (1, 1), Padding::Same).is_err(),
        "bias size"
    );
    assert!(
        v(&[5, 5, 1]).conv2d(v(&[3, 3, 1, 2]), None, (1, 1), Padding::Same).is_err(),
        "rank 3 input"
    );
    assert!(v(&[1, 2, 2, 1]).max_pool2d((3, 3), (1, 1), Padding::Valid).is_err());
    assert!(v(&[1, 4, 4, 1]).avg_pool2d((0, 2), (1, 1), Padding::Valid).is_err());
    assert!(v(&[4, 4]).global_avg_pool2d().is_err());
    let m = msg(v(&[2, 3]).reshape(&[4, 2]));
    assert!(m.contains("keep the number of elements"), "{m}");
    assert!(v(&[2, 3]).permute(&[0, 0]).is_err());
    assert!(v(&[2, 3]).slice(&[0..1, 2..4]).is_err());
    assert!(concat(&[v(&[2, 3]), v(&[3, 3])], 1).is_err());
    assert!(concat(&[v(&[2, 3]), v(&[2, 3])], 2).is_err());
    assert!(concat::<f64>(&[], 0).is_err());
    let m = msg(v(&[3, 2]).gather_rows(&[0, 3]));
    assert!(m.contains("index 3 at position 1"), "{m}");
    assert!(v(&[2, 3]).sum_axis(2).is_err());
    assert!(v(&[2, 3]).argmax(5).is_err());
    assert!(v(&[]).softmax().is_err());
    assert!(v(&[3]).clamp(1.0, 0.0).is_err());
    assert!(Tensor::<f32>::from_vec(&[2, 2], vec![0.0; 3]).is_err());
}

#[test]
fn kernels_reject_wrong_buffer_lengths_instead_of_panicking() {
    use kiln_tape::kernels;
    let mut c = vec![0.0f32; 5];
    assert!(
        kernels::gemm(2, 2, 2, 1.0, &[0.0; 4], Trans::No, &[0.0; 4], Trans::No, 0.0, &mut c)
            .is_err()
    );
    let mut y = vec![0.0f32; 3];
    assert!(kernels::softmax(&[0.0; 4], 3, &mut y).is_err());
    assert!(
        kernels::broadcast_binary("add", &[0.0f32; 6], &[2, 3], &[0.0; 3], &[3], &mut y, |a, b| a
            + b)
        .is_err()
    );
    let g = kernels::Pool2dGeometry::new(&[1, 4, 4, 1], (2, 2), (2, 2), Padding::Valid).unwrap();
    assert!(
        kernels::max_pool2d_backward(&g, &[99, 0, 0, 0], &[1.0f32; 4], &mut [0.0; 16]).is_err()
    );
}
