//! The multi-view losses: values against the reference formulas, the forms that must agree,
//! finite-difference gradients, and degenerate inputs.

use candle_core::{DType, Device, Tensor, Var};
use sslfast::loss::{barlow_twins, vicreg, LossForm};

/// The fixed input of tools/loss_reference.py: `[k * 4, 3]`.
fn inputs(k: usize) -> Tensor {
    reference_inputs(k, 4, 3)
}

/// `[k * b, d]` filled as tools/loss_reference.py fills it.
fn reference_inputs(k: usize, b: usize, d: usize) -> Tensor {
    let n = k * b * d;
    let v: Vec<f64> = (0..n)
        .map(|i| (0.7 * i as f64 + 0.3).sin() + 0.1 * (i % 5) as f64)
        .collect();
    Tensor::from_vec(v, (k * b, d), &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

fn bt(z: &Tensor, k: usize, form: LossForm) -> f64 {
    scalar(&barlow_twins::loss(z, k, 0.5, form).unwrap().total)
}

fn vic(z: &Tensor, k: usize, form: LossForm) -> f64 {
    scalar(
        &vicreg::loss(z, k, vicreg::Weights::default(), form)
            .unwrap()
            .total,
    )
}

#[test]
fn values_match_the_reference_formulas() {
    // Numbers printed by `python3 tools/loss_reference.py` (numpy transcription of fastssl).
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.abs().max(1.0);
    assert!(close(
        bt(&inputs(2), 2, LossForm::Efficient),
        7.102919997271968
    ));
    assert!(close(
        bt(&inputs(4), 4, LossForm::Efficient),
        2.7543389098114095
    ));
    assert!(close(
        vic(&inputs(2), 2, LossForm::Efficient),
        42.87577097531514
    ));
    assert!(close(
        vic(&inputs(4), 4, LossForm::Efficient),
        33.69592872947505
    ));
}

#[test]
fn projectors_wider_than_twice_the_batch_match_the_reference_formulas() {
    // D > 2B: the redundancy and covariance terms go through B×B Gram matrices instead of the
    // D×D correlation, so this checks that path against the same numpy transcription.
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.abs().max(1.0);
    let expected = [
        (2, 29.488410388128365, 52.89396379786295),
        (4, 7.71277974533371, 39.3441932315659),
    ];
    for (k, barlow, vicreg) in expected {
        let z = reference_inputs(k, 3, 8);
        let got = bt(&z, k, LossForm::Efficient);
        assert!(close(got, barlow), "K={k}: barlow twins {got} vs {barlow}");
        let got = vic(&z, k, LossForm::Efficient);
        assert!(close(got, vicreg), "K={k}: vicreg {got} vs {vicreg}");
    }
    let z = reference_inputs(3, 3, 8);
    check_gradient_at(&z, |z| {
        barlow_twins::loss(z, 3, 0.5, LossForm::Naive)
            .unwrap()
            .total
    });
    check_gradient_at(&z, |z| {
        barlow_twins::loss(z, 3, 0.5, LossForm::Efficient)
            .unwrap()
            .total
    });
    check_gradient_at(&z, |z| {
        vicreg::loss(z, 3, vicreg::Weights::default(), LossForm::Efficient)
            .unwrap()
            .total
    });
}

#[test]
fn two_views_efficient_naive_and_pairwise_agree() {
    // At K = 2 the efficient form is the pairwise loss and the naive average over the two ordered
    // pairs equals it too (c21 = c12ᵀ; VICReg's terms are symmetric).
    let z = inputs(2);
    let pair = bt(&z, 2, LossForm::Efficient);
    assert!((bt(&z, 2, LossForm::Naive) - pair).abs() < 1e-9);
    let pair = vic(&z, 2, LossForm::Efficient);
    assert!((vic(&z, 2, LossForm::Naive) - pair).abs() < 1e-9);
}

#[test]
fn efficient_equals_naive_when_all_views_agree_and_differs_otherwise() {
    // With identical views, zbar (or the leave-one-out mean) is each view itself, so the O(K)
    // form reduces to the pairwise loss of a view with itself, as does every pair of the naive
    // form. With distinct views they are different objectives.
    let one = inputs(1).narrow(0, 0, 4).unwrap();
    let same = Tensor::cat(&[&one, &one, &one, &one], 0).unwrap();
    for form_pair in [
        (
            bt(&same, 4, LossForm::Efficient),
            bt(&same, 4, LossForm::Naive),
        ),
        (
            vic(&same, 4, LossForm::Efficient),
            vic(&same, 4, LossForm::Naive),
        ),
    ] {
        assert!((form_pair.0 - form_pair.1).abs() < 1e-9, "{form_pair:?}");
    }
    let z = inputs(4);
    assert!((bt(&z, 4, LossForm::Efficient) - bt(&z, 4, LossForm::Naive)).abs() > 1e-3);
    assert!((vic(&z, 4, LossForm::Efficient) - vic(&z, 4, LossForm::Naive)).abs() > 1e-3);
}

fn check_gradient(f: impl Fn(&Tensor) -> Tensor, k: usize) {
    check_gradient_at(&inputs(k), f)
}

fn check_gradient_at(z: &Tensor, f: impl Fn(&Tensor) -> Tensor) {
    let var = Var::from_tensor(z).unwrap();
    let grads = f(var.as_tensor()).backward().unwrap();
    let analytic = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let base = z.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let h = 1e-6;
    for i in (0..base.len()).step_by(5) {
        let at = |delta: f64| {
            let mut v = base.clone();
            v[i] += delta;
            scalar(&f(&Tensor::from_vec(v, z.shape(), &Device::Cpu).unwrap()))
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        assert!(
            (numeric - analytic[i]).abs() < 1e-5 * numeric.abs().max(1.0),
            "coordinate {i}: numeric {numeric}, autograd {}",
            analytic[i]
        );
    }
}

#[test]
fn gradients_match_finite_differences() {
    for (k, form) in [
        (2, LossForm::Efficient),
        (4, LossForm::Efficient),
        (3, LossForm::Naive),
    ] {
        check_gradient(|z| barlow_twins::loss(z, k, 0.5, form).unwrap().total, k);
        check_gradient(
            |z| {
                vicreg::loss(z, k, vicreg::Weights::default(), form)
                    .unwrap()
                    .total
            },
            k,
        );
    }
}

#[test]
fn zero_variance_inputs_give_finite_losses() {
    let flat = Tensor::ones((16, 8), DType::F32, &Device::Cpu).unwrap();
    for k in [2, 4] {
        for form in [LossForm::Efficient, LossForm::Naive] {
            let b = barlow_twins::loss(&flat, k, 1.0 / 8.0, form)
                .unwrap()
                .total
                .to_scalar::<f32>()
                .unwrap();
            let v = vicreg::loss(&flat, k, vicreg::Weights::default(), form)
                .unwrap()
                .total
                .to_scalar::<f32>()
                .unwrap();
            assert!(b.is_finite() && v.is_finite(), "k={k} {form:?}: {b} {v}");
            // Collapse is what both losses punish: Barlow Twins' on-diagonal term is D per view.
            assert!((b - 8.0).abs() < 0.1, "{b}");
            assert!(
                (v - 25.0).abs() < 1e-3,
                "variance hinge 1 per view x mu 25: {v}"
            );
        }
    }
}

#[test]
fn empty_or_ragged_batches_are_errors_not_panics() {
    let ragged = Tensor::zeros((7, 4), DType::F32, &Device::Cpu).unwrap();
    let empty = Tensor::zeros((0, 4), DType::F32, &Device::Cpu).unwrap();
    for (z, k) in [(&ragged, 2), (&empty, 2), (&ragged, 3)] {
        for form in [LossForm::Efficient, LossForm::Naive] {
            let bt = barlow_twins::loss(z, k, 0.1, form)
                .err()
                .map(|e| e.to_string());
            let vic = vicreg::loss(z, k, vicreg::Weights::default(), form)
                .err()
                .map(|e| e.to_string());
            for err in [bt, vic] {
                let err = err.expect("a batch that does not split into k views is refused");
                assert!(err.contains("cannot be split into"), "{err}");
            }
        }
    }
}
