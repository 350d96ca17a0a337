//! Losses (mean reduction) and their gradient w.r.t. the network's output.
//!
//! Each loss is computed in f64 (sums in sample order, then class order) and returned rounded
//! to f32; each gradient element is computed in f64 and rounded once.

/// `F.cross_entropy(logits, targets, weight, label_smoothing=ε)` with mean reduction, and
/// `d_logits = ∂loss/∂logits`.
///
/// With `logp = log_softmax(logits)` per row, `w` the class weights (all 1 without `weight`),
/// `W = Σ_i w[t_i]` (so `n` without weights: PyTorch's weighted mean divides by the weights of
/// the targets, not by `n`) and `K` classes:
///
/// `loss = (1 − ε)·Σ_i w[t_i]·(−logp[i, t_i]) / W + (ε/K)·Σ_i Σ_c w[c]·(−logp[i, c]) / W`
///
/// (PyTorch's `cross_entropy` with label smoothing: `(1 − ε)·nll_loss + ε/K · smooth_loss`,
/// the smooth term's mean also divided by `W` when weighted), and with `p = softmax(logits)`
///
/// `d_logits[i, j] = ((1 − ε)·w[t_i]·(p[i, j] − [j = t_i]) + (ε/K)·(p[i, j]·Σ_c w[c] − w[j])) / W`.
///
/// + `logits`, `d_logits`: `[n, k]` row-major; `d_logits` overwritten
/// + `targets`: `[n]` class indices
/// + `weight`: `[k]` class weights, or `None`
/// + `label_smoothing`: `ε` in `[0, 1]`
///
/// Returns the loss. `n = 0` gives NaN (PyTorch's mean of nothing) and zero-sized `d_logits`.
///
/// # Panics
/// If a slice is shorter than the layout above, a target is `≥ k`, or `ε` is outside `[0, 1]`.
pub fn cross_entropy(
    n: usize,
    k: usize,
    logits: &[f32],
    targets: &[usize],
    weight: Option<&[f32]>,
    label_smoothing: f32,
    d_logits: &mut [f32],
) -> f32 {
    assert!(
        logits.len() >= n * k && d_logits.len() >= n * k && targets.len() >= n,
        "cross_entropy: slice too short"
    );
    assert!(
        (0.0..=1.0).contains(&label_smoothing),
        "label_smoothing must be between 0.0 and 1.0"
    );
    if let Some(w) = weight {
        assert!(w.len() >= k, "cross_entropy: weight too short");
    }
    let w = |c: usize| weight.map_or(1.0, |w| w[c] as f64);
    let eps = label_smoothing as f64;
    let w_sum: f64 = (0..k).map(w).sum();
    let denom: f64 = targets[..n]
        .iter()
        .map(|&t| {
            assert!(
                t < k,
                "cross_entropy: target {t} out of bounds for {k} classes"
            );
            w(t)
        })
        .sum();
    let (mut nll, mut smooth) = (0.0f64, 0.0f64);
    // LOOP over samples
    for i in 0..n {
        let row = &logits[i * k..(i + 1) * k];
        let t = targets[i];
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        let logp = |c: usize| row[c] as f64 - lse;
        nll += w(t) * -logp(t);
        if eps != 0.0 {
            smooth += (0..k).map(|c| w(c) * -logp(c)).sum::<f64>();
        }
        let d = &mut d_logits[i * k..(i + 1) * k];
        for (j, o) in d.iter_mut().enumerate() {
            let p = logp(j).exp();
            let hit = if j == t { 1.0 } else { 0.0 };
            let g = (1.0 - eps) * w(t) * (p - hit) + eps / k as f64 * (p * w_sum - w(j));
            *o = (g / denom) as f32;
        }
    }
    let loss = (1.0 - eps) * nll / denom
        + if eps != 0.0 {
            eps / k as f64 * smooth / denom
        } else {
            0.0
        };
    loss as f32
}

/// The loss of a classifier that ends in softmax: `F.nll_loss(log(probs), targets)` (mean
/// reduction), `loss = −(1/n)·Σ_i log(probs[i, t_i])`, and `d_probs = ∂loss/∂probs`:
/// `−1/(n·probs[i, t_i])` at each target, 0 elsewhere. Chain it with
/// [`super::softmax_backward`] for the gradient before the softmax. A target probability of 0
/// gives an infinite loss and gradient, as in PyTorch.
///
/// + `probs`, `d_probs`: `[n, k]` row-major; `d_probs` overwritten
/// + `targets`: `[n]` class indices
///
/// # Panics
/// If a slice is shorter than the layout above or a target is `≥ k`.
pub fn nll_of_probs(
    n: usize,
    k: usize,
    probs: &[f32],
    targets: &[usize],
    d_probs: &mut [f32],
) -> f32 {
    assert!(
        probs.len() >= n * k && d_probs.len() >= n * k && targets.len() >= n,
        "nll_of_probs: slice too short"
    );
    d_probs[..n * k].fill(0.0);
    let mut sum = 0.0f64;
    for (i, &t) in targets[..n].iter().enumerate() {
        assert!(
            t < k,
            "nll_of_probs: target {t} out of bounds for {k} classes"
        );
        let y = probs[i * k + t] as f64;
        sum += -y.ln();
        d_probs[i * k + t] = (-1.0 / (n as f64 * y)) as f32;
    }
    (sum / n as f64) as f32
}

/// `F.mse_loss(pred, target)` (mean reduction): `loss = Σ (pred − target)² / len`, and
/// `d_pred = 2·(pred − target)/len`. (The fixtures' `mean(y²)/2` for feature maps is half of
/// this with a zero target, its gradient `y/len`.)
///
/// # Panics
/// If the slices differ in length.
pub fn mse(pred: &[f32], target: &[f32], d_pred: &mut [f32]) -> f32 {
    assert!(
        pred.len() == target.len() && target.len() == d_pred.len(),
        "mse: slices differ in length"
    );
    let len = pred.len() as f64;
    let mut sum = 0.0f64;
    for ((d, &p), &t) in d_pred.iter_mut().zip(pred).zip(target) {
        let e = p as f64 - t as f64;
        sum += e * e;
        *d = (2.0 * e / len) as f32;
    }
    (sum / len) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backward_elementwise::check::{
        assert_grad, fd_grad, fixture_bytes, max_abs, tensor, tensor_f32, wide,
    };
    use crate::test_util::rand_vec;

    /// Cross-entropy from the definition (f64): log-softmax, then the smoothed weighted mean.
    fn ce_f64(n: usize, k: usize, z: &[f64], t: &[usize], w: Option<&[f64]>, eps: f64) -> f64 {
        let wt = |c: usize| w.map_or(1.0, |w| w[c]);
        let (mut num, mut sm, mut den) = (0.0, 0.0, 0.0);
        for i in 0..n {
            let row = &z[i * k..(i + 1) * k];
            let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
            // the target distribution: (1 − ε) on the target plus ε/K everywhere
            num += wt(t[i]) * (lse - row[t[i]]);
            sm += (0..k).map(|c| wt(c) * (lse - row[c])).sum::<f64>();
            den += wt(t[i]);
        }
        (1.0 - eps) * num / den + eps / k as f64 * sm / den
    }

    /// Loss and gradient against the f64 definition and its central differences: 3 and 7
    /// samples, 1, 5 and 13 classes, with and without weights and label smoothing.
    #[test]
    fn cross_entropy_matches_finite_differences() {
        for (n, k) in [(3usize, 5usize), (7, 13), (3, 1), (1, 2)] {
            let z: Vec<f32> = rand_vec(n * k, 80 + k as u64)
                .iter()
                .map(|v| 4.0 * v)
                .collect();
            let t: Vec<usize> = (0..n).map(|i| (i * 7 + 3) % k).collect();
            let w: Vec<f32> = rand_vec(k, 81).iter().map(|v| 1.0 + 0.8 * v).collect();
            for weighted in [false, true] {
                for eps in [0.0f32, 0.1, 0.35] {
                    let wo = if weighted { Some(&w[..]) } else { None };
                    let mut d = vec![0.0; n * k];
                    let loss = cross_entropy(n, k, &z, &t, wo, eps, &mut d);
                    let w64 = wide(&w);
                    let wr = if weighted { Some(&w64[..]) } else { None };
                    let f = |v: &[f64]| ce_f64(n, k, v, &t, wr, eps as f64);
                    let want = f(&wide(&z));
                    assert!(
                        (loss as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                        "{loss} vs {want}"
                    );
                    let fd = fd_grad(f, &wide(&z), 1e-5);
                    assert_grad(&d, &fd, 1e-5, 1e-7 * max_abs(&fd).max(1.0));
                }
            }
        }
    }

    /// Values of PyTorch 2.15 (`F.cross_entropy`, float32) for one small case with class
    /// weights and label smoothing 0.2: the loss and `logits.grad`.
    #[test]
    fn cross_entropy_matches_pytorch() {
        let z = [
            1.0f32, -0.5, 2.0, 0.25, 0.0, 0.5, -1.0, 3.0, 1.5, -2.0, 0.75, 0.1,
        ];
        let t = [2usize, 0, 3];
        let w = [0.5f32, 2.0, 1.0, 1.5];
        let mut d = [0.0; 12];
        let loss = cross_entropy(3, 4, &z, &t, Some(&w), 0.2, &mut d);
        let (want_loss, want_d) = PYTORCH_CE;
        assert!(
            (loss - want_loss).abs() <= 1e-6 * (1.0 + want_loss.abs()),
            "{loss} vs {want_loss}"
        );
        crate::test_util::assert_close(&d, &want_d, 1e-6);
    }

    /// Produced by `torch.nn.functional.cross_entropy(z, t, weight=w, label_smoothing=0.2)`.
    const PYTORCH_CE: (f32, [f32; 12]) = (
        1.904_805_7,
        [
            0.070_963_8,
            -0.015_639_752,
            -0.067_781_39,
            0.012_457_313,
            -0.132_288_04,
            -0.017_870_57,
            -0.013_216_457,
            0.163_375_05,
            0.267_989_67,
            -0.024_989_106,
            0.113_859_08,
            -0.356_859_62,
        ],
    );

    /// NLL of probabilities against the definition and central differences.
    #[test]
    fn nll_of_probs_matches_finite_differences() {
        let (n, k) = (5, 7);
        let y: Vec<f32> = rand_vec(n * k, 90)
            .iter()
            .map(|v| 0.55 + 0.45 * v)
            .collect();
        let t: Vec<usize> = (0..n).map(|i| (3 * i + 1) % k).collect();
        let mut d = vec![0.0; n * k];
        let loss = nll_of_probs(n, k, &y, &t, &mut d);
        let f = |v: &[f64]| -(0..n).map(|i| v[i * k + t[i]].ln()).sum::<f64>() / n as f64;
        let want = f(&wide(&y));
        assert!((loss as f64 - want).abs() <= 1e-6 * want.abs());
        let fd = fd_grad(f, &wide(&y), 1e-6);
        assert_grad(&d, &fd, 1e-5, 1e-7);
    }

    /// MSE against the definition and central differences.
    #[test]
    fn mse_matches_finite_differences() {
        let p = rand_vec(37, 91);
        let t = rand_vec(37, 92);
        let mut d = vec![0.0; 37];
        let loss = mse(&p, &t, &mut d);
        let t64 = wide(&t);
        let f = |v: &[f64]| {
            v.iter()
                .zip(&t64)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                / 37.0
        };
        assert!((loss as f64 - f(&wide(&p))).abs() <= 1e-6);
        let fd = fd_grad(f, &wide(&p), 1e-4);
        assert_grad(&d, &fd, 1e-6, 1e-8);
    }

    /// The stored targets of a fixture, as class indices.
    fn targets(io: &[u8]) -> Vec<usize> {
        tensor(io, "target").iter().map(|&v| v as usize).collect()
    }

    /// `tiny_net`: `cross_entropy(train_output, target)` is the stored `loss`, and since the
    /// net ends in `fc` (key 5), `Σ_i d_logits[i]` is the stored `grad.5.bias`.
    #[test]
    fn fixture_tiny_net_cross_entropy() {
        let io = fixture_bytes("tiny_net.io.safetensors");
        let z = tensor_f32(&io, "train_output");
        let t = targets(&io);
        let (n, k) = (t.len(), z.len() / t.len());
        let mut d = vec![0.0; z.len()];
        let loss = cross_entropy(n, k, &z, &t, None, 0.0, &mut d);
        let want = tensor(&io, "loss")[0];
        assert!(
            (loss as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "{loss} vs {want}"
        );
        let db: Vec<f32> = (0..k).map(|j| (0..n).map(|i| d[i * k + j]).sum()).collect();
        let want_db = tensor(&io, "grad.5.bias");
        assert_grad(&db, &want_db, 1e-5, 1e-6 * max_abs(&want_db));
    }

    /// `mlp_softmax` (`… fc(10) softmax`, key 9 the fc): `nll_loss(log(train_output), target)`
    /// is the stored `loss`, and the gradient through softmax summed over the batch is the
    /// stored `grad.9.bias`.
    #[test]
    fn fixture_mlp_softmax_nll() {
        let io = fixture_bytes("mlp_softmax.io.safetensors");
        let y = tensor_f32(&io, "train_output");
        let t = targets(&io);
        let (n, k) = (t.len(), y.len() / t.len());
        let mut dy = vec![0.0; y.len()];
        let loss = nll_of_probs(n, k, &y, &t, &mut dy);
        let want = tensor(&io, "loss")[0];
        assert!(
            (loss as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "{loss} vs {want}"
        );
        let mut dz = vec![0.0; y.len()];
        super::super::softmax_backward(n, k, 1, &y, &dy, &mut dz);
        let db: Vec<f32> = (0..k)
            .map(|j| (0..n).map(|i| dz[i * k + j]).sum())
            .collect();
        let want_db = tensor(&io, "grad.9.bias");
        assert_grad(&db, &want_db, 1e-5, 1e-6 * max_abs(&want_db));
    }
}
