//! The training API beyond PyTorch parity (which `test_parity` and `test_block_parity` check):
//! results independent of the thread count, freezing, dropout from the network's generator,
//! the saved state after training, and every bad input as an `Err`.

use cnn::ndarray::{Array1, Array2, Array4};
use cnn::optim::{Adam, Optimizer, Sgd};
use cnn::{cnn, Error, Loss, Model, Train};

cnn! {
    /// Every kind of layer and block with a backward pass.
    struct Everything {
        input(3, 12, 12)
        conv(3 -> 8, k3, p1) bn relu conv(8 -> 8, k3, p1, g8) relu6
        residual(shortcut { conv(8 -> 12, k1, s2) bn }) {
            conv(8 -> 12, k3, s2, p1) bn relu conv(12 -> 12, k3, p1) bn
        } relu
        concat {
            branch {}
            branch { maxpool(2) convtranspose(12 -> 4, k2, s2) }
            branch { avgpool(2) upsample(scale_factor=2, mode=bilinear) tanh }
        }
        conv(28 -> 16, k5, p2) silu gap dropout(0.3) fc(16) gelu fc(5)
    }

    /// Ends in softmax, for the NLL of probabilities.
    struct Probs {
        input(1, 4, 4)
        flatten fc(8) sigmoid fc(3) softmax
    }

    /// A feature-map output, for `mse`.
    struct Maps {
        input(2, 6, 6)
        conv(2 -> 4, k3, p1) bn leakyrelu(0.1) convtranspose(4 -> 2, k2, s2)
    }
}

fn batch(n: usize, c: usize, hw: usize, seed: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, c, hw, hw), |(s, ch, h, w)| {
        (((s + seed) * 31 + ch * 17 + h * 7 + w * 3) % 23) as f32 / 11.0 - 1.0
    })
}

/// Three steps of SGD then two of AdamW (dropout on) from one seed.
fn train_everything() -> (Vec<u8>, Vec<f32>) {
    let mut net = Everything::seeded(7);
    let mut sgd = Sgd::new(0.05)
        .momentum(0.9)
        .nesterov(true)
        .weight_decay(1e-3);
    let mut adam = Adam::adamw(1e-3);
    let mut losses = Vec::new();
    for step in 0..5 {
        let x = batch(13, 3, 12, step);
        let y = Array1::from_shape_fn(13, |i| (i * 3 + step) % 5);
        let opt: &mut dyn Optimizer = if step < 3 { &mut sgd } else { &mut adam };
        losses.push(
            net.train_step(x.view(), y.view(), Loss::CrossEntropy, opt)
                .unwrap(),
        );
    }
    (net.to_safetensors(), losses)
}

#[test]
fn results_are_the_same_bits_for_any_thread_count() {
    let mut runs = Vec::new();
    for threads in [1, 2, 3, 8] {
        cnn::set_num_threads(threads);
        runs.push((threads, train_everything()));
    }
    cnn::set_num_threads(0);
    let (_, (weights, losses)) = &runs[0];
    assert!(losses.iter().all(|l| l.is_finite()));
    for (threads, (w, l)) in &runs[1..] {
        assert_eq!(l, losses, "losses with {threads} threads");
        assert!(
            w == weights,
            "weights after training with {threads} threads"
        );
    }
}

#[test]
fn training_lowers_the_loss_and_the_state_round_trips() {
    let mut net = Everything::seeded(1);
    let mut opt = Adam::new(3e-3);
    let x = batch(10, 3, 12, 0);
    let y = Array1::from_shape_fn(10, |i| i % 5);
    let mut losses = Vec::new();
    for _ in 0..30 {
        losses.push(
            net.train_step(x.view(), y.view(), Loss::CrossEntropy, &mut opt)
                .unwrap(),
        );
    }
    assert!(losses[29] < losses[0] * 0.5, "{losses:?}");
    // Running statistics and num_batches_tracked were updated and are saved.
    let saved = net.to_safetensors();
    let st = safetensors::SafeTensors::deserialize(&saved).unwrap();
    let count = st.tensor("1.num_batches_tracked").unwrap();
    assert_eq!(i64::from_le_bytes(count.data().try_into().unwrap()), 30);
    let back = Everything::from_safetensors(&saved).unwrap();
    assert_eq!(back, net);
    assert_eq!(
        back.forward_batch(x.view()).unwrap(),
        net.forward_batch(x.view()).unwrap()
    );
    // The optimizer's state resumes bit for bit.
    let mut resumed = Adam::new(3e-3);
    resumed.load_state(&opt.state_to_safetensors()).unwrap();
    let (mut a, mut b) = (net.clone(), net);
    let la = a.train_step(x.view(), y.view(), Loss::CrossEntropy, &mut opt);
    let lb = b.train_step(x.view(), y.view(), Loss::CrossEntropy, &mut resumed);
    assert_eq!(la.unwrap(), lb.unwrap());
    assert_eq!(a.to_safetensors(), b.to_safetensors());
}

#[test]
fn frozen_layers_keep_their_weights_and_get_no_gradient() {
    let mut net = Everything::seeded(2);
    let top = Everything::LAYERS.iter().filter(|l| l.depth == 0).count();
    // Everything but the last fc: the classifier alone is fine-tuned.
    net.freeze(0..top - 1).unwrap();
    assert_eq!(net.frozen_layers(), (0..top - 1).collect::<Vec<_>>());
    let before = net.clone();
    let x = batch(4, 3, 12, 1);
    let (out, cache) = net.forward_train(x.view(), false).unwrap();
    let y = Array1::from(vec![0, 1, 2, 3]);
    let (_, d) = Loss::CrossEntropy.compute(out.view(), y.view()).unwrap();
    let grads = net.backward(&cache, d.view()).unwrap();
    let last = top - 1;
    let keys: Vec<&str> = grads.iter().map(|(k, _, _)| k).collect();
    assert_eq!(
        keys,
        [format!("{last}.weight"), format!("{last}.bias")]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert!(grads.get("0.weight").is_none());
    assert_eq!(grads.shape("0.weight"), Some(&[8, 3, 3, 3][..]));
    // The same gradient as without freezing.
    let mut free = before.clone();
    assert_eq!(
        free.frozen_layers(),
        net.frozen_layers(),
        "a clone keeps them"
    );
    free.unfreeze_all();
    let (out2, cache2) = free.forward_train(x.view(), false).unwrap();
    assert_eq!(out, out2);
    let all = free.backward(&cache2, d.view()).unwrap();
    let key = format!("{last}.weight");
    assert_eq!(grads.get(&key), all.get(&key));
    assert_eq!(all.len(), all.iter().count());
    assert!(all.len() > 20);

    let mut opt = Sgd::new(0.1);
    opt.step(&mut net, &grads).unwrap();
    assert_eq!(net.layer_0, before.layer_0);
    assert_eq!(net.layer_5_body_0, before.layer_5_body_0);
    assert_ne!(net.to_safetensors(), before.to_safetensors());
    net.unfreeze_all();
    assert!(net.frozen_layers().is_empty());
    assert!(matches!(
        net.freeze([top]),
        Err(Error::Mismatch { what: "layer", .. })
    ));
}

#[test]
fn dropout_masks_come_from_the_networks_generator() {
    let x = batch(6, 3, 12, 2);
    let run = |seed: Option<u64>| {
        let mut net = Everything::seeded(3);
        if let Some(s) = seed {
            net.set_dropout_seed(s);
        }
        let (a, _) = net.forward_train(x.view(), true).unwrap();
        let (b, _) = net.forward_train(x.view(), true).unwrap();
        (a, b)
    };
    let (a, b) = run(None);
    assert_ne!(a, b, "a new mask each forward pass");
    assert_eq!(
        run(None),
        (a.clone(), b),
        "the same masks from the same seed"
    );
    assert_ne!(run(Some(99)).0, a, "another seed, other masks");
    // Without dropout the train-mode pass is deterministic.
    let mut net = Everything::seeded(3);
    let (c, _) = net.forward_train(x.view(), false).unwrap();
    let (d, _) = net.forward_train(x.view(), false).unwrap();
    assert_ne!(c, a);
    // Running statistics moved between the two, so the batch statistics are what count.
    assert_eq!(c, d);
}

#[test]
fn other_losses_train_too() {
    let mut probs = Probs::seeded(0);
    let x = batch(5, 1, 4, 0);
    let y = Array1::from(vec![0, 1, 2, 0, 1]);
    let mut opt = Sgd::new(0.5);
    let first = probs
        .train_step(x.view(), y.view(), Loss::NllOfProbs, &mut opt)
        .unwrap();
    for _ in 0..30 {
        probs
            .train_step(x.view(), y.view(), Loss::NllOfProbs, &mut opt)
            .unwrap();
    }
    let last = probs
        .train_step(x.view(), y.view(), Loss::NllOfProbs, &mut opt)
        .unwrap();
    assert!(last < first, "{first} → {last}");

    let mut maps = Maps::seeded(0);
    let x = batch(3, 2, 6, 1);
    let target = cnn::ndarray::Array4::<f32>::zeros((3, 2, 12, 12));
    let mut opt = Sgd::new(0.1);
    let mut losses = Vec::new();
    for _ in 0..10 {
        let (out, cache) = maps.forward_train(x.view(), false).unwrap();
        let (loss, d) = cnn::mse(out.view(), target.view()).unwrap();
        losses.push(loss);
        let grads = maps.backward(&cache, d.view()).unwrap();
        opt.step(&mut maps, &grads).unwrap();
    }
    assert!(losses[9] < losses[0], "{losses:?}");
    // A feature-map network has no class targets.
    assert!(matches!(
        maps.train_step(
            x.view(),
            Array1::from(vec![0, 0, 0]).view(),
            Loss::CrossEntropy,
            &mut opt
        ),
        Err(Error::Targets { .. })
    ));
}

#[test]
fn bad_inputs_are_errors() {
    let mut net = Everything::seeded(4);
    let mut opt = Sgd::new(0.1);
    let x = batch(4, 3, 12, 0);
    let good = Array1::from(vec![0, 1, 2, 3]);
    // Input shape.
    let wrong = batch(4, 3, 11, 0);
    assert!(matches!(
        net.train_step(wrong.view(), good.view(), Loss::CrossEntropy, &mut opt),
        Err(Error::InputShape { .. })
    ));
    assert!(matches!(
        net.forward_train(wrong.view(), false),
        Err(Error::InputShape { .. })
    ));
    // Targets: count, range, weights, smoothing.
    let e = net
        .train_step(
            x.view(),
            Array1::from(vec![0, 1]).view(),
            Loss::CrossEntropy,
            &mut opt,
        )
        .unwrap_err();
    assert!(e.to_string().contains("4 class indices"), "{e}");
    let e = net
        .train_step(
            x.view(),
            Array1::from(vec![0, 1, 5, 0]).view(),
            Loss::CrossEntropy,
            &mut opt,
        )
        .unwrap_err();
    assert!(e.to_string().contains("target 5 for sample 2"), "{e}");
    let weight = [1.0f32; 4];
    let loss = Loss::CrossEntropyWith {
        weight: Some(&weight),
        label_smoothing: 0.0,
    };
    assert!(matches!(
        net.train_step(x.view(), good.view(), loss, &mut opt),
        Err(Error::Targets { .. })
    ));
    let loss = Loss::CrossEntropyWith {
        weight: None,
        label_smoothing: 1.5,
    };
    assert!(matches!(
        net.train_step(x.view(), good.view(), loss, &mut opt),
        Err(Error::Targets { .. })
    ));
    // Hyper-parameters PyTorch rejects.
    assert!(matches!(
        net.train_step(
            x.view(),
            good.view(),
            Loss::CrossEntropy,
            &mut Sgd::new(-1.0)
        ),
        Err(Error::Hyperparameter { .. })
    ));
    // A batch of one still has 36 values per channel in every batch norm here.
    let one = batch(1, 3, 12, 0);
    let (out, cache) = net.forward_train(x.view(), false).unwrap();
    let loss = net.train_step(
        one.view(),
        Array1::from(vec![0]).view(),
        Loss::CrossEntropy,
        &mut opt,
    );
    assert!(loss.unwrap().is_finite());
    // A cache from another network, an output gradient of the wrong shape.
    let maps = Maps::seeded(0);
    let (_, map_cache) = Maps::seeded(0)
        .forward_train(batch(2, 2, 6, 0).view(), false)
        .unwrap();
    let e = net.backward(&map_cache, out.view()).unwrap_err();
    assert!(e.to_string().contains("`Maps`"), "{e}");
    let e = net
        .backward(&cache, Array2::zeros((3, 5)).view())
        .unwrap_err();
    assert!(matches!(e, Error::Mismatch { what: "d_out", .. }), "{e}");
    // Gradients of another network.
    let (mo, mc) = Maps::seeded(0)
        .forward_train(batch(2, 2, 6, 0).view(), false)
        .unwrap();
    let map_grads = maps.backward(&mc, mo.view()).unwrap();
    assert!(matches!(
        opt.step(&mut net, &map_grads),
        Err(Error::Mismatch { what: "grads", .. })
    ));
}

#[test]
fn a_one_pixel_batch_norm_needs_more_than_one_sample() {
    cnn! {
        struct Flat {
            input(2, 1, 1)
            conv(2 -> 3, k1) bn relu fc(2)
        }
    }
    let mut net = Flat::seeded(0);
    let x = Array4::from_elem((1, 2, 1, 1), 0.5f32);
    let e = net.forward_train(x.view(), false).unwrap_err();
    assert!(
        matches!(e, Error::BatchStatistics { layer: "1", .. }),
        "{e}"
    );
    let x = Array4::from_elem((2, 2, 1, 1), 0.5f32);
    assert!(net.forward_train(x.view(), false).is_ok());
}
