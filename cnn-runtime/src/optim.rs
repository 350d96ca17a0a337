//! Optimizers with `torch.optim`'s algorithms, one parameter tensor at a time.
//!
//! Each optimizer is built like its PyTorch namesake (`Sgd::new(0.05).momentum(0.9)` is
//! `torch.optim.SGD(params, lr=0.05, momentum=0.9)`) and updates a tensor with
//! [`Sgd::step_tensor`] / [`Adam::step_tensor`], keeping its state (momentum buffers, Adam's
//! moments and step count) under the tensor's `state_dict` key. The update order and the scalar
//! arithmetic (bias corrections in f64, as Python computes them) follow PyTorch's
//! single-tensor CPU implementations, the ones `torch.optim` runs for CPU tensors.
//!
//! The state can be saved and restored ([`Sgd::state_to_safetensors`],
//! [`Sgd::load_state`]) to resume training. [`StepLr`] and [`CosineAnnealingLr`] give the
//! learning rate per epoch as `torch.optim.lr_scheduler` does.

use std::collections::BTreeMap;

use crate::grads::{Grads, Parameters};
use crate::weights::{TensorWriter, Weights};
use crate::Error;

/// An optimizer: updates parameter tensors from their gradients, keeping its state per
/// `state_dict` key. [`Optimizer::step`] updates a whole network, as PyTorch's
/// `optimizer.step()` after `loss.backward()`.
pub trait Optimizer {
    /// One step on the parameter tensor `key`: `param` updated in place from `grad`.
    ///
    /// # Errors
    /// [`Error::Hyperparameter`] for a hyper-parameter PyTorch rejects; [`Error::ShapeMismatch`]
    /// when `grad`, `param` or the key's saved state differ in length.
    fn step_tensor(&mut self, key: &str, param: &mut [f32], grad: &[f32]) -> Result<(), Error>;

    /// One step on every parameter of `net` that has a gradient in `grads` (a frozen layer's
    /// parameters have none and stay as they are).
    ///
    /// # Errors
    /// [`Error::Mismatch`] when `grads` were made by another network; else as
    /// [`Optimizer::step_tensor`].
    fn step(&mut self, net: &mut dyn Parameters, grads: &Grads) -> Result<(), Error> {
        let specs = grads.specs();
        net.visit_params_mut(&mut |i, key, param| {
            match specs.get(i) {
                Some(s) if s.key == key && s.shape.iter().product::<usize>() == param.len() => {}
                other => {
                    return Err(Error::Mismatch {
                        what: "grads",
                        expected: format!(
                            "gradients whose parameter {i} is `{key}` of {} elements",
                            param.len()
                        ),
                        found: other.map_or_else(
                            || format!("{} parameters", specs.len()),
                            |s| format!("`{}` of shape {:?}", s.key, s.shape),
                        ),
                    })
                }
            }
            match grads.by_index(i) {
                Some(g) => self.step_tensor(key, param, g),
                None => Ok(()),
            }
        })
    }

    /// The learning rate.
    fn lr(&self) -> f32;

    /// Sets the learning rate (for a scheduler).
    fn set_lr(&mut self, lr: f32);
}

/// Checks one hyper-parameter: `Err(Error::Hyperparameter)` naming it unless `ok`.
fn check(
    optimizer: &'static str,
    name: &'static str,
    value: f32,
    ok: bool,
    expected: &'static str,
) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(Error::Hyperparameter {
            optimizer,
            name,
            value: value.to_string(),
            expected,
        })
    }
}

/// The gradient must have the parameter's length.
fn check_lengths(key: &str, param: &[f32], grad: &[f32]) -> Result<(), Error> {
    if param.len() == grad.len() {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            key: format!("grad.{key}"),
            expected: vec![param.len()],
            found: vec![grad.len()],
        })
    }
}

/// `torch.optim.SGD`: stochastic gradient descent with optional momentum (heavy-ball or
/// Nesterov), dampening and L2 weight decay.
///
/// Per element, with `g` the gradient and `b` the momentum buffer (created from the first
/// gradient):
/// ```text
/// g = g + weight_decay·p
/// b = g                                   (first step)
/// b = momentum·b + (1 − dampening)·g      (later steps)
/// g = g + momentum·b   (nesterov)   or   g = b
/// p = p − lr·g
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Sgd {
    lr: f32,
    momentum: f32,
    dampening: f32,
    nesterov: bool,
    weight_decay: f32,
    buffers: BTreeMap<String, Vec<f32>>,
}

impl Optimizer for Sgd {
    fn step_tensor(&mut self, key: &str, param: &mut [f32], grad: &[f32]) -> Result<(), Error> {
        Sgd::step_tensor(self, key, param, grad)
    }

    fn lr(&self) -> f32 {
        Sgd::lr(self)
    }

    fn set_lr(&mut self, lr: f32) {
        Sgd::set_lr(self, lr)
    }
}

impl Sgd {
    /// SGD with learning rate `lr` and PyTorch's defaults (no momentum, dampening or weight
    /// decay).
    pub fn new(lr: f32) -> Self {
        Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            buffers: BTreeMap::new(),
        }
    }

    /// `momentum` (default 0).
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// `dampening` (default 0).
    pub fn dampening(mut self, dampening: f32) -> Self {
        self.dampening = dampening;
        self
    }

    /// `nesterov` (default false); needs a momentum and zero dampening.
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// `weight_decay`, an L2 penalty added to the gradient (default 0).
    pub fn weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// The learning rate.
    pub fn lr(&self) -> f32 {
        self.lr
    }

    /// Sets the learning rate (what a scheduler does between steps).
    pub fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }

    fn validate(&self) -> Result<(), Error> {
        let (lr, m, d, wd) = (self.lr, self.momentum, self.dampening, self.weight_decay);
        check("SGD", "lr", lr, lr >= 0.0, "a learning rate ≥ 0")?;
        check("SGD", "momentum", m, m >= 0.0, "a momentum ≥ 0")?;
        check("SGD", "dampening", d, d.is_finite(), "a finite dampening")?;
        check("SGD", "weight_decay", wd, wd >= 0.0, "a weight decay ≥ 0")?;
        if self.nesterov {
            check(
                "SGD",
                "momentum",
                m,
                m > 0.0,
                "a momentum > 0 with nesterov=true",
            )?;
            check(
                "SGD",
                "dampening",
                d,
                d == 0.0,
                "dampening 0 with nesterov=true",
            )?;
        }
        Ok(())
    }

    /// One SGD step on the parameter tensor `key`: `param` updated in place from `grad`.
    ///
    /// # Errors
    /// [`Error::Hyperparameter`] for a hyper-parameter PyTorch rejects (a negative learning
    /// rate, Nesterov without momentum, …); [`Error::ShapeMismatch`] when `grad` and `param`
    /// differ in length, or the key's saved momentum buffer does.
    pub fn step_tensor(&mut self, key: &str, param: &mut [f32], grad: &[f32]) -> Result<(), Error> {
        self.validate()?;
        check_lengths(key, param, grad)?;
        let (lr, m, d, wd) = (self.lr, self.momentum, self.dampening, self.weight_decay);
        if m == 0.0 {
            // LOOP over elements: plain SGD
            for (p, &g) in param.iter_mut().zip(grad) {
                let g = if wd != 0.0 { g + wd * *p } else { g };
                *p -= lr * g;
            }
            return Ok(());
        }
        let first = !self.buffers.contains_key(key);
        if first {
            self.buffers.insert(key.to_string(), vec![0.0; param.len()]);
        }
        let buf = self.buffers.get_mut(key).expect("inserted above");
        if buf.len() != param.len() {
            return Err(Error::ShapeMismatch {
                key: format!("momentum_buffer.{key}"),
                expected: vec![param.len()],
                found: vec![buf.len()],
            });
        }
        // LOOP over elements
        for ((p, &g), b) in param.iter_mut().zip(grad).zip(buf.iter_mut()) {
            let g = if wd != 0.0 { g + wd * *p } else { g };
            *b = if first { g } else { m * *b + (1.0 - d) * g };
            let g = if self.nesterov { g + m * *b } else { *b };
            *p -= lr * g;
        }
        Ok(())
    }

    /// The momentum buffers as a safetensors file, `momentum_buffer.{key}` per tensor.
    pub fn state_to_safetensors(&self) -> Vec<u8> {
        let mut out = TensorWriter::new();
        for (key, buf) in &self.buffers {
            out.f32(format!("momentum_buffer.{key}"), &[buf.len()], buf);
        }
        out.finish()
    }

    /// Restores momentum buffers saved by [`state_to_safetensors`](Self::state_to_safetensors),
    /// replacing the current ones; the hyper-parameters are the optimizer's own.
    ///
    /// # Errors
    /// A malformed file, or a tensor that is not a one-dimensional `momentum_buffer.{key}`.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let w = Weights::parse(bytes)?;
        let mut buffers = BTreeMap::new();
        for (name, len) in w.names_and_lens() {
            let key = name
                .strip_prefix("momentum_buffer.")
                .ok_or_else(|| Error::UnexpectedTensor { key: name.clone() })?;
            buffers.insert(key.to_string(), w.f32(&name, &[len])?);
        }
        w.finish()?;
        self.buffers = buffers;
        Ok(())
    }
}

/// Adam's state of one tensor.
#[derive(Debug, Clone, PartialEq)]
struct Moments {
    step: u64,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

/// `torch.optim.Adam` and `torch.optim.AdamW` (built with [`Adam::new`] and [`Adam::adamw`]).
///
/// Per element, at step `t` (from 1), with `g` the gradient:
/// ```text
/// Adam:   g = g + weight_decay·p          AdamW:  p = p·(1 − lr·weight_decay)
/// m = m + (g − m)·(1 − β1)                  (torch's lerp)
/// v = β2·v + (1 − β2)·g²
/// p = p − lr / (1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)
/// ```
/// the bias corrections in f64, as Python computes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    lr: f32,
    betas: (f32, f32),
    eps: f32,
    weight_decay: f32,
    decoupled: bool,
    state: BTreeMap<String, Moments>,
}

impl Optimizer for Adam {
    fn step_tensor(&mut self, key: &str, param: &mut [f32], grad: &[f32]) -> Result<(), Error> {
        Adam::step_tensor(self, key, param, grad)
    }

    fn lr(&self) -> f32 {
        Adam::lr(self)
    }

    fn set_lr(&mut self, lr: f32) {
        Adam::set_lr(self, lr)
    }
}

impl Adam {
    /// `torch.optim.Adam(lr=lr)`: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn new(lr: f32) -> Self {
        Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            state: BTreeMap::new(),
        }
    }

    /// `torch.optim.AdamW(lr=lr)`: as [`Adam::new`] with decoupled weight decay, 0.01 by
    /// default.
    pub fn adamw(lr: f32) -> Self {
        Adam {
            weight_decay: 1e-2,
            decoupled: true,
            ..Adam::new(lr)
        }
    }

    /// `betas` (default (0.9, 0.999)), each in `[0, 1)`.
    pub fn betas(mut self, beta1: f32, beta2: f32) -> Self {
        self.betas = (beta1, beta2);
        self
    }

    /// `eps` (default 1e-8).
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }

    /// `weight_decay`: added to the gradient (Adam) or applied to the weights (AdamW).
    pub fn weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// The learning rate.
    pub fn lr(&self) -> f32 {
        self.lr
    }

    /// Sets the learning rate (what a scheduler does between steps).
    pub fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }

    fn name(&self) -> &'static str {
        if self.decoupled {
            "AdamW"
        } else {
            "Adam"
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let name = self.name();
        let (lr, (b1, b2), eps, wd) = (self.lr, self.betas, self.eps, self.weight_decay);
        check(name, "lr", lr, lr >= 0.0, "a learning rate ≥ 0")?;
        check(
            name,
            "beta1",
            b1,
            (0.0..1.0).contains(&b1),
            "a beta in [0, 1)",
        )?;
        check(
            name,
            "beta2",
            b2,
            (0.0..1.0).contains(&b2),
            "a beta in [0, 1)",
        )?;
        check(name, "eps", eps, eps >= 0.0, "an eps ≥ 0")?;
        check(name, "weight_decay", wd, wd >= 0.0, "a weight decay ≥ 0")
    }

    /// One Adam (or AdamW) step on the parameter tensor `key`: `param` updated in place from
    /// `grad`, the tensor's moments and step count advanced.
    ///
    /// # Errors
    /// [`Error::Hyperparameter`] for a hyper-parameter PyTorch rejects; [`Error::ShapeMismatch`]
    /// when `grad`, `param` or the key's saved moments differ in length.
    pub fn step_tensor(&mut self, key: &str, param: &mut [f32], grad: &[f32]) -> Result<(), Error> {
        self.validate()?;
        check_lengths(key, param, grad)?;
        let (lr, (b1, b2), eps, wd) = (self.lr, self.betas, self.eps, self.weight_decay);
        let decoupled = self.decoupled;
        if !self.state.contains_key(key) {
            let zeros = vec![0.0; param.len()];
            self.state.insert(
                key.to_string(),
                Moments {
                    step: 0,
                    exp_avg: zeros.clone(),
                    exp_avg_sq: zeros,
                },
            );
        }
        let s = self.state.get_mut(key).expect("inserted above");
        if s.exp_avg.len() != param.len() || s.exp_avg_sq.len() != param.len() {
            return Err(Error::ShapeMismatch {
                key: format!("exp_avg.{key}"),
                expected: vec![param.len()],
                found: vec![s.exp_avg.len()],
            });
        }
        s.step += 1;
        // Python floats: the bias corrections and the step size in f64, used as f32.
        let t = s.step as i32;
        let bias1 = 1.0 - (b1 as f64).powi(t);
        let bias2_sqrt = (1.0 - (b2 as f64).powi(t)).sqrt();
        let step_size = (lr as f64 / bias1) as f32;
        let bias2_sqrt = bias2_sqrt as f32;
        let decay = (1.0 - lr as f64 * wd as f64) as f32;
        let (w1, w2) = (1.0 - b1, 1.0 - b2);
        // LOOP over elements
        for (((p, &g), m), v) in param
            .iter_mut()
            .zip(grad)
            .zip(s.exp_avg.iter_mut())
            .zip(s.exp_avg_sq.iter_mut())
        {
            let g = if decoupled {
                if wd != 0.0 {
                    *p *= decay;
                }
                g
            } else if wd != 0.0 {
                g + wd * *p
            } else {
                g
            };
            *m += (g - *m) * w1;
            *v = *v * b2 + w2 * g * g;
            let denom = v.sqrt() / bias2_sqrt + eps;
            *p -= step_size * *m / denom;
        }
        Ok(())
    }

    /// The state as a safetensors file: `exp_avg.{key}`, `exp_avg_sq.{key}` and the step count
    /// `step.{key}` (an I64 scalar, as PyTorch keeps it) per tensor.
    pub fn state_to_safetensors(&self) -> Vec<u8> {
        let mut out = TensorWriter::new();
        for (key, s) in &self.state {
            out.f32(format!("exp_avg.{key}"), &[s.exp_avg.len()], &s.exp_avg);
            out.f32(
                format!("exp_avg_sq.{key}"),
                &[s.exp_avg_sq.len()],
                &s.exp_avg_sq,
            );
            out.i64_scalar(format!("step.{key}"), s.step as i64);
        }
        out.finish()
    }

    /// Restores a state saved by [`state_to_safetensors`](Self::state_to_safetensors),
    /// replacing the current one; the hyper-parameters are the optimizer's own.
    ///
    /// # Errors
    /// A malformed file, a tensor of another name, or a key without all three of its tensors.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let w = Weights::parse(bytes)?;
        let mut state = BTreeMap::new();
        for (name, len) in w.names_and_lens() {
            let Some(key) = name.strip_prefix("exp_avg.") else {
                continue;
            };
            let exp_avg = w.f32(&name, &[len])?;
            let exp_avg_sq = w.f32(&format!("exp_avg_sq.{key}"), &[len])?;
            let step = w.int_scalar(&format!("step.{key}"))?;
            let step = u64::try_from(step).map_err(|_| Error::Safetensors {
                reason: format!("`step.{key}` is negative: {step}"),
            })?;
            state.insert(
                key.to_string(),
                Moments {
                    step,
                    exp_avg,
                    exp_avg_sq,
                },
            );
        }
        w.finish()?;
        self.state = state;
        Ok(())
    }
}

/// `torch.optim.lr_scheduler.StepLR`: the learning rate times `gamma` every `step_size`
/// epochs, computed as PyTorch does (in f64, one multiplication per decay, not a power).
///
/// ```
/// use cnn_runtime::optim::{Sgd, StepLr}; // `cnn::optim` in the facade
/// let mut opt = Sgd::new(0.1);
/// let mut sched = StepLr::new(opt.lr() as f64, 3, 0.5);
/// for _epoch in 0..3 {
///     // … train one epoch with `opt` …
///     opt.set_lr(sched.step() as f32);
/// }
/// assert_eq!(opt.lr(), 0.05);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StepLr {
    lr: f64,
    step_size: u64,
    gamma: f64,
    epoch: u64,
}

impl StepLr {
    /// Starts at `base_lr` (the optimizer's learning rate), epoch 0.
    pub fn new(base_lr: f64, step_size: u64, gamma: f64) -> Self {
        StepLr {
            lr: base_lr,
            step_size,
            gamma,
            epoch: 0,
        }
    }

    /// Ends an epoch: the learning rate for the next one.
    pub fn step(&mut self) -> f64 {
        self.epoch += 1;
        if self.step_size > 0 && self.epoch.is_multiple_of(self.step_size) {
            self.lr *= self.gamma;
        }
        self.lr
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }
}

/// `torch.optim.lr_scheduler.CosineAnnealingLR`: the learning rate follows a cosine from the
/// base rate down to `eta_min` over `t_max` epochs and back, computed with PyTorch's recursive
/// form (so the values equal PyTorch's, not only its closed form's).
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealingLr {
    base_lr: f64,
    lr: f64,
    t_max: u64,
    eta_min: f64,
    epoch: u64,
}

impl CosineAnnealingLr {
    /// Starts at `base_lr` (the optimizer's learning rate), epoch 0; `t_max` ≥ 1.
    pub fn new(base_lr: f64, t_max: u64, eta_min: f64) -> Self {
        CosineAnnealingLr {
            base_lr,
            lr: base_lr,
            t_max: t_max.max(1),
            eta_min,
            epoch: 0,
        }
    }

    /// Ends an epoch: the learning rate for the next one.
    pub fn step(&mut self) -> f64 {
        use std::f64::consts::PI;
        self.epoch += 1;
        let (e, t) = (self.epoch as f64, self.t_max as f64);
        self.lr = if (self.epoch - 1 + self.t_max).is_multiple_of(2 * self.t_max) {
            self.lr + (self.base_lr - self.eta_min) * (1.0 - (PI / t).cos()) / 2.0
        } else {
            (1.0 + (PI * e / t).cos()) / (1.0 + (PI * (e - 1.0) / t).cos())
                * (self.lr - self.eta_min)
                + self.eta_min
        };
        self.lr
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::rand_vec;

    const P0: [f32; 5] = [0.5, -1.25, 2.0, 0.0, -0.3];
    const GRADS: [[f32; 5]; 3] = [
        [0.1, -0.2, 0.3, 0.0, 1.5],
        [-0.4, 0.25, 0.05, 2.0, -0.7],
        [0.3, 0.3, -0.9, -1.0, 0.2],
    ];

    /// The parameter after each of the three steps, printed by PyTorch 2.15 (`p.grad = g;
    /// opt.step()` on a float32 `nn.Parameter(P0)`).
    fn check_against_torch(mut step: impl FnMut(&mut [f32], &[f32]), want: [[f32; 5]; 3]) {
        let mut p = P0;
        for (g, want) in GRADS.iter().zip(want) {
            step(&mut p, g);
            for (a, b) in p.iter().zip(want) {
                assert!(
                    (a - b).abs() <= 2e-7 * (1.0 + b.abs()),
                    "{p:?} against {want:?}"
                );
            }
        }
    }

    #[test]
    fn sgd_matches_torch() {
        // SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        let mut opt = Sgd::new(0.05)
            .momentum(0.9)
            .nesterov(true)
            .weight_decay(5e-4);
        check_against_torch(
            |p, g| opt.step_tensor("w", p, g).unwrap(),
            [
                [0.49047625, -1.2309406, 1.971405, 0.0, -0.44248575],
                [0.52439284, -1.2465068, 1.9543709, -0.19, -0.43670866],
                [0.5084039, -1.2777349, 2.0267417, -0.17599097, -0.48199847],
            ],
        );
        // SGD(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.01)
        let mut opt = Sgd::new(0.1)
            .momentum(0.8)
            .dampening(0.3)
            .weight_decay(0.01);
        check_against_torch(
            |p, g| opt.step_tensor("w", p, g).unwrap(),
            [
                [0.4895, -1.22875, 1.968, 0.0, -0.4497],
                [0.50875735, -1.2283899, 1.9375224, -0.14, -0.52014524],
                [0.5028071, -1.2482419, 1.974784, -0.181902, -0.5901373],
            ],
        );
    }

    #[test]
    fn adam_and_adamw_match_torch() {
        // Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
        let mut opt = Adam::new(0.01).betas(0.8, 0.99).eps(1e-6).weight_decay(0.1);
        check_against_torch(
            |p, g| opt.step_tensor("w", p, g).unwrap(),
            [
                [0.49000007, -1.24, 1.99, 0.0, -0.31],
                [0.4947465, -1.236974, 1.9808575, -0.00783707, -0.31213287],
                [0.492492, -1.2382329, 1.9823011, -0.00973714, -0.31439897],
            ],
        );
        // AdamW(lr=1e-3), weight_decay 1e-2 by default
        let mut opt = Adam::adamw(1e-3);
        check_against_torch(
            |p, g| opt.step_tensor("w", p, g).unwrap(),
            [
                [0.498995, -1.2489874, 1.9989799, 0.0, -0.300997],
                [0.4995495, -1.2491376, 1.9981766, -0.0007441368, -0.3012863],
                [0.4995182, -1.2496538, 1.9985682, -0.0009727697, -0.30158433],
            ],
        );
    }

    /// f64 versions of the update rules, for longer runs on random tensors.
    fn sgd64(p: &mut [f64], b: &mut Option<Vec<f64>>, g: &[f32], h: (f64, f64, f64, bool, f64)) {
        let (lr, m, d, nesterov, wd) = h;
        let g: Vec<f64> = g
            .iter()
            .zip(p.iter())
            .map(|(&g, &p)| g as f64 + wd * p)
            .collect();
        let step: Vec<f64> = if m == 0.0 {
            g
        } else {
            let buf = match b {
                None => g.clone(),
                Some(b) => b
                    .iter()
                    .zip(&g)
                    .map(|(b, g)| m * b + (1.0 - d) * g)
                    .collect(),
            };
            let s = if nesterov {
                g.iter().zip(&buf).map(|(g, b)| g + m * b).collect()
            } else {
                buf.clone()
            };
            *b = Some(buf);
            s
        };
        p.iter_mut().zip(step).for_each(|(p, s)| *p -= lr * s);
    }

    #[test]
    fn long_runs_follow_the_update_rules() {
        let n = 37;
        for (i, h) in [
            (0.05, 0.9, 0.0, true, 5e-4),
            (0.01, 0.0, 0.0, false, 0.0),
            (0.1, 0.5, 0.5, false, 1e-3),
        ]
        .into_iter()
        .enumerate()
        {
            let mut opt = Sgd::new(h.0 as f32)
                .momentum(h.1 as f32)
                .dampening(h.2 as f32)
                .nesterov(h.3)
                .weight_decay(h.4 as f32);
            let mut p = rand_vec(n, i as u64);
            let mut p64: Vec<f64> = p.iter().map(|&v| v as f64).collect();
            let mut b64 = None;
            for step in 0..8 {
                let g = rand_vec(n, 100 + step);
                opt.step_tensor("w", &mut p, &g).unwrap();
                sgd64(&mut p64, &mut b64, &g, h);
            }
            for (a, b) in p.iter().zip(&p64) {
                assert!(
                    (*a as f64 - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{h:?}: {a} against {b}"
                );
            }
        }
    }

    #[test]
    fn state_round_trips_and_training_resumes_bit_for_bit() {
        let n = 11;
        let grads: Vec<Vec<f32>> = (0..6).map(|s| rand_vec(n, 7 + s)).collect();
        let run = |resume: bool| -> (Vec<f32>, Vec<f32>) {
            let mut sgd = Sgd::new(0.05).momentum(0.9).nesterov(true);
            let mut adam = Adam::adamw(1e-2);
            let (mut a, mut b) = (rand_vec(n, 1), rand_vec(n, 2));
            for (s, g) in grads.iter().enumerate() {
                if resume && s == 3 {
                    let (sgd_state, adam_state) =
                        (sgd.state_to_safetensors(), adam.state_to_safetensors());
                    sgd = Sgd::new(0.05).momentum(0.9).nesterov(true);
                    adam = Adam::adamw(1e-2);
                    sgd.load_state(&sgd_state).unwrap();
                    adam.load_state(&adam_state).unwrap();
                }
                sgd.step_tensor("0.weight", &mut a, g).unwrap();
                adam.step_tensor("0.weight", &mut b, g).unwrap();
            }
            (a, b)
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (a, b) = run(false);
        let (ra, rb) = run(true);
        assert_eq!(bits(&a), bits(&ra), "SGD resumed");
        assert_eq!(bits(&b), bits(&rb), "AdamW resumed");
        // A state without the optimizer's own tensors is refused.
        let adam_state = Adam::new(0.1).state_to_safetensors();
        assert!(
            Sgd::new(0.1).load_state(&adam_state).is_ok(),
            "empty states load"
        );
        let mut adam = Adam::new(0.1);
        adam.step_tensor("w", &mut [1.0], &[1.0]).unwrap();
        let err = Sgd::new(0.1).load_state(&adam.state_to_safetensors());
        assert!(
            matches!(err, Err(Error::UnexpectedTensor { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn schedulers_give_torchs_learning_rates() {
        // StepLR(step_size=3, gamma=0.5) and CosineAnnealingLR(T_max=4, eta_min=0.001) on an
        // SGD(lr=0.1), `param_groups[0]["lr"]` after each `scheduler.step()`, PyTorch 2.15.
        let mut step = StepLr::new(0.1, 3, 0.5);
        let got: Vec<f64> = (0..10).map(|_| step.step()).collect();
        let want = [
            0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125, 0.0125,
        ];
        assert_eq!(got, want);
        let mut cos = CosineAnnealingLr::new(0.1, 4, 0.001);
        let got: Vec<f64> = (0..12).map(|_| cos.step()).collect();
        let want = [
            0.0855017856687341,
            0.0505,
            0.0154982143312659,
            0.001,
            0.015498214331265896,
            0.05050000000000001,
            0.08550178566873413,
            0.10000000000000003,
            0.08550178566873413,
            0.05050000000000003,
            0.015498214331265945,
            0.001,
        ];
        assert_eq!(got, want, "bit for bit, PyTorch's recursive form");
        assert_eq!(cos.lr(), 0.001);
    }

    /// One 2×3 weight and its 2 biases, for [`Optimizer::step`].
    struct Net([f32; 6], [f32; 2]);

    impl Parameters for Net {
        fn visit_params_mut(&mut self, f: &mut crate::ParamVisitor<'_>) -> Result<(), Error> {
            f(0, "0.weight", &mut self.0)?;
            f(1, "0.bias", &mut self.1)
        }
    }

    const SPECS: &[crate::grads::ParamSpec] = &[
        crate::grads::ParamSpec {
            key: "0.weight",
            shape: &[2, 3],
            top: 0,
        },
        crate::grads::ParamSpec {
            key: "0.bias",
            shape: &[2],
            top: 0,
        },
    ];

    /// `step` updates each parameter by its gradient, and refuses gradients made for another
    /// network (another key, or another size, at the same index) before changing anything.
    #[test]
    fn a_step_takes_the_gradients_of_this_network_only() {
        let mut grads = crate::Grads::new(SPECS);
        let (w, b) = grads.weight_bias(0, true);
        w.fill(1.0);
        b.unwrap().fill(-2.0);
        let mut net = Net([0.0; 6], [0.0; 2]);
        Sgd::new(0.5).step(&mut net, &grads).unwrap();
        assert_eq!((net.0, net.1), ([-0.5; 6], [1.0; 2]));
        for other in [
            &[
                crate::grads::ParamSpec {
                    key: "1.weight",
                    shape: &[2, 3],
                    top: 1,
                },
                SPECS[1],
            ][..],
            &[
                crate::grads::ParamSpec {
                    key: "0.weight",
                    shape: &[3, 3],
                    top: 0,
                },
                SPECS[1],
            ][..],
        ] {
            let other: &'static [crate::grads::ParamSpec] =
                Box::leak(other.to_vec().into_boxed_slice());
            let mut g = crate::Grads::new(other);
            let (w, _) = g.weight_bias(0, true);
            w.fill(1.0);
            let e = Sgd::new(0.5).step(&mut net, &g).unwrap_err();
            assert!(matches!(e, Error::Mismatch { what: "grads", .. }), "{e}");
            assert_eq!(net.0, [-0.5; 6], "a refused step changes nothing");
        }
    }

    #[test]
    fn bad_hyperparameters_and_lengths_are_errors() {
        let mut p = [1.0f32; 3];
        let e = Sgd::new(-0.1)
            .step_tensor("w", &mut p, &[0.0; 3])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "SGD: `lr` is -0.1, expected a learning rate ≥ 0"
        );
        let e = Sgd::new(0.1)
            .nesterov(true)
            .step_tensor("w", &mut p, &[0.0; 3])
            .unwrap_err();
        assert!(e.to_string().contains("`momentum` is 0"), "{e}");
        let e = Adam::new(0.1)
            .betas(0.9, 1.0)
            .step_tensor("w", &mut p, &[0.0; 3])
            .unwrap_err();
        assert!(e.to_string().starts_with("Adam: `beta2` is 1"), "{e}");
        let e = Adam::adamw(0.1)
            .eps(f32::NAN)
            .step_tensor("w", &mut p, &[0.0; 3])
            .unwrap_err();
        assert!(e.to_string().starts_with("AdamW: `eps` is NaN"), "{e}");
        let e = Adam::new(0.1)
            .step_tensor("w", &mut p, &[0.0; 2])
            .unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
        assert_eq!(p, [1.0; 3], "a refused step changes nothing");
        let mut sgd = Sgd::new(0.1).momentum(0.5);
        sgd.step_tensor("w", &mut p, &[1.0; 3]).unwrap();
        let e = sgd.step_tensor("w", &mut [0.0; 4], &[0.0; 4]).unwrap_err();
        assert!(e.to_string().contains("momentum_buffer.w"), "{e}");
    }
}
