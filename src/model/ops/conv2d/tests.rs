//! Our conv against candle's and finite differences.

use super::*;
use crate::model::ops::test_util::{max_diff, uniform, weighted_grads};
use candle_core::{Device, Var};

/// Values in [-1, 1).
fn randn(shape: &[usize], seed: u64) -> Tensor {
    uniform(shape, seed, (-1.0, 1.0))
}

/// Output, input gradient and weight gradient of ours and candle's, for `sum(y · r)`.
fn both(x: &[usize], w: &[usize], stride: usize, pad: usize) -> [(Tensor, Tensor); 3] {
    let xv = Var::from_tensor(&randn(x, 1)).unwrap();
    let wv = Var::from_tensor(&randn(w, 2)).unwrap();
    let ours = conv2d(&xv, &wv, stride, pad).unwrap();
    let theirs = xv.conv2d(&wv, pad, stride, 1, 1).unwrap();
    let r = randn(theirs.dims(), 3);
    let (g_ours, g_theirs) = (weighted_grads(&ours, &r), weighted_grads(&theirs, &r));
    let grad = |g: &candle_core::backprop::GradStore, v: &Var| g.get(v).unwrap().clone();
    [
        (ours, theirs),
        (grad(&g_ours, &xv), grad(&g_theirs, &xv)),
        (grad(&g_ours, &wv), grad(&g_theirs, &wv)),
    ]
}

#[test]
fn matches_candle_forward_and_backward() {
    // (input, kernel, stride, padding): odd sizes, batch 1, strides 1/2, kernels 1/3/5/7, inputs
    // smaller than the kernel; stride 1 with "same" padding takes the shifted-plane path.
    let cases: &[(&[usize], &[usize], usize, usize)] = &[
        (&[2, 3, 8, 8], &[4, 3, 3, 3], 1, 1),
        (&[1, 5, 7, 9], &[6, 5, 3, 3], 2, 1),
        (&[3, 4, 9, 9], &[8, 4, 1, 1], 2, 0),
        (&[5, 6, 5, 5], &[3, 6, 1, 1], 1, 0),
        (&[2, 3, 13, 11], &[4, 3, 7, 7], 2, 3),
        (&[1, 2, 5, 5], &[2, 2, 3, 3], 1, 0),
        (&[9, 8, 2, 2], &[16, 8, 3, 3], 1, 1),
        (&[2, 2, 3, 3], &[2, 2, 3, 3], 2, 1),
        (&[2, 3, 2, 3], &[4, 3, 7, 7], 1, 3),
        (&[3, 2, 7, 5], &[3, 2, 5, 5], 1, 2),
        // Maps over 64 output pixels, past the gather table: shifted planes, then rows.
        (&[2, 3, 12, 10], &[4, 3, 3, 3], 1, 1),
        (&[1, 2, 11, 9], &[3, 2, 5, 5], 1, 2),
        (&[2, 2, 17, 15], &[3, 2, 3, 3], 2, 1),
        (&[1, 3, 12, 12], &[2, 3, 3, 3], 1, 0),
        // Chunks of several images whatever the thread count (up to 35 threads).
        (&[70, 4, 2, 2], &[5, 4, 3, 3], 1, 1),
        (&[1, 2, 1, 1], &[3, 2, 5, 5], 2, 2),
    ];
    for &(x, w, s, p) in cases {
        for (what, (ours, theirs)) in ["output", "input grad", "weight grad"]
            .iter()
            .zip(both(x, w, s, p))
        {
            assert_eq!(ours.dims(), theirs.dims(), "{what} {x:?} {w:?} s{s} p{p}");
            let d = max_diff(&ours, &theirs);
            assert!(d < 1e-4, "{what} {x:?} {w:?} s{s} p{p}: differs by {d}");
        }
    }
}

#[test]
fn im2col_paths_agree() {
    // (input [C, H, W], kernel, stride, padding)
    let cases = [
        ([3, 6, 5], 3, 1, 1),
        ([2, 5, 7], 3, 2, 1),
        ([2, 9, 8], 5, 1, 2),
        ([1, 4, 4], 7, 1, 3),
        ([2, 6, 6], 1, 2, 0),
        ([2, 5, 5], 3, 1, 0),
    ];
    for ([c, h, w], k, stride, pad) in cases {
        let x = randn(&[1, c, h, w], 1)
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let xl = Layout::contiguous((1, c, h, w));
        let g = Geometry::new(&xl, &Layout::contiguous((2, c, k, k)), stride, pad).unwrap();
        let act = InputActivation {
            scale: vec![0.5; c],
            shift: vec![-0.1; c],
        };
        let (len, table) = (g.k() * g.p(), g.gather_table());
        let mut expected = vec![f32::NAN; len];
        g.im2col_by_rows(&x, Some(&act), &mut expected, g.p(), 0);
        let mut by_table = vec![f32::NAN; len];
        g.im2col_by_table(&table, &x, Some(&act), &mut by_table, g.p(), 0);
        assert_eq!(
            by_table, expected,
            "gather table {c}x{h}x{w} k{k} s{stride} p{pad}"
        );
        let mut dx_rows = vec![0.0; x.len()];
        g.col2im_by_rows(&expected, g.p(), 0, &mut dx_rows);
        let mut dx_table = vec![0.0; x.len()];
        g.col2im_by_table(&table, &expected, g.p(), 0, &mut dx_table);
        assert_eq!(dx_table, dx_rows, "col2im table {c}x{h}x{w} k{k}");
        if g.is_same_shape() {
            let mut shifted = vec![f32::NAN; len];
            g.im2col_shifted(&x, Some(&act), &mut shifted, g.p(), 0);
            assert_eq!(shifted, expected, "shifted {c}x{h}x{w} k{k}");
            let mut dx_shifted = vec![0.0; x.len()];
            g.col2im_shifted(&mut expected.clone(), g.p(), 0, &mut dx_shifted);
            assert_eq!(dx_shifted, dx_rows, "col2im shifted {c}x{h}x{w} k{k}");
        }
    }
}

#[test]
fn weight_gradient_has_the_same_bits_on_every_run() {
    // Many chunks, so a reduction in scheduling order would show.
    let x = randn(&[256, 16, 16, 16], 7);
    let w = Var::from_tensor(&randn(&[32, 16, 3, 3], 8)).unwrap();
    let r = randn(&[256, 32, 16, 16], 9);
    let grad = || {
        let g = (conv2d(&x, &w, 1, 1).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        g.get(&w)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let first = grad();
    for _ in 0..8 {
        assert_eq!(grad(), first);
    }
}

#[test]
fn weight_gradient_matches_finite_differences() {
    let x = randn(&[2, 2, 5, 5], 4);
    let w = Var::from_tensor(&randn(&[3, 2, 3, 3], 5)).unwrap();
    let r = randn(&[2, 3, 3, 3], 6);
    let f = |w: &Tensor| {
        (conv2d(&x, w, 2, 1).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let g = (conv2d(&x, &w, 2, 1).unwrap() * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = g
        .get(&w)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let w0 = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for i in [0, 7, 20, 53] {
        let at = |d: f32| {
            let mut v = w0.clone();
            v[i] += d;
            f(&Tensor::from_vec(v, w.dims(), &Device::Cpu).unwrap())
        };
        let fd = (at(1e-2) - at(-1e-2)) / 2e-2;
        assert!(
            (fd - g[i]).abs() < 2e-2,
            "w[{i}]: analytic {} vs fd {fd}",
            g[i]
        );
    }
}
