//! The weight recipe of the fixtures whose weights are not committed (`resnet18`,
//! `mobilenetv2`; see `tests/data/README.md`): the Rust implementation in `tests/fixtures/mod.rs`
//! must produce exactly the float32 values `tools/make_fixtures.py` computed with numpy and ran
//! PyTorch on. The script printed into each json the first values of a few tensors (`probe`)
//! and the CRC-32 of every tensor's bytes; both are compared bit for bit here.

#[allow(dead_code)] // the parity checks of the module are not used here
mod fixtures;

use fixtures::{crc32, fnv1a64, recipe_entry, recipe_tensor, splitmix64, Fixture};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

const RECIPE_FIXTURES: [&str; 2] = ["resnet18", "mobilenetv2"];

fn meta(name: &str) -> Value {
    let path = fixtures::dir().join(format!("{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).expect("fixture json")).expect("json")
}

#[test]
fn hashes_match_their_reference_values() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    // The first output of SplitMix64 seeded with 0.
    assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn recipe_values_are_float32_in_range() {
    let v = recipe_tensor("0.weight", 10_000, -0.25, 0.75);
    assert!(v.iter().all(|&x| (-0.25..0.75).contains(&x)));
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    assert!((mean - 0.25).abs() < 0.01, "mean {mean}");
}

#[test]
fn probe_values_match_python() {
    for name in RECIPE_FIXTURES {
        let meta = meta(name);
        let tensors = &meta["weights_recipe"]["tensors"];
        let probe = meta["probe"].as_object().expect("probe");
        assert!(probe.len() >= 3, "{name}: probe");
        for (key, expected) in probe {
            let spec = &tensors[key];
            let (lo, hi) = (
                spec["lo"].as_f64().unwrap() as f32,
                spec["hi"].as_f64().unwrap() as f32,
            );
            let got = recipe_tensor(key, 4, lo, hi);
            let expected: Vec<f32> = expected
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(got.len(), expected.len());
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(
                    g.to_bits(),
                    e.to_bits(),
                    "{name}: {key}: {got:?} vs numpy {expected:?}"
                );
            }
        }
    }
}

#[test]
fn every_recipe_tensor_matches_python_bit_for_bit() {
    for name in RECIPE_FIXTURES {
        let meta = meta(name);
        let tensors = meta["weights_recipe"]["tensors"].as_object().unwrap();
        let mut floats = 0usize;
        for (key, spec) in tensors {
            let (dtype, _, bytes) = recipe_entry(key, spec);
            if dtype == Dtype::F32 {
                let crc = spec["crc32"].as_u64().expect("crc32") as u32;
                assert_eq!(
                    crc32(&bytes),
                    crc,
                    "{name}: {key}: CRC-32 of the recipe values"
                );
                floats += bytes.len() / 4;
            }
        }
        println!(
            "{name}: {} tensors, {floats} float32 values identical to numpy's",
            tensors.len()
        );
    }
}

#[test]
fn recipe_fixtures_load_as_safetensors() {
    for name in RECIPE_FIXTURES {
        assert!(
            !fixtures::dir().join(format!("{name}.safetensors")).exists(),
            "{name}: a recipe fixture has no weights file"
        );
        let fixture = Fixture::load_from(&fixtures::dir(), name);
        let file = SafeTensors::deserialize(&fixture.weights).expect("in-memory safetensors");
        let state = fixture.meta["state_dict"].as_object().unwrap();
        let mut keys: Vec<&str> = file.names();
        keys.sort();
        let mut expected: Vec<&str> = state.keys().map(|s| s.as_str()).collect();
        expected.sort();
        assert_eq!(keys, expected, "{name}: state_dict keys");
        for (key, info) in state {
            let view = file.tensor(key).unwrap();
            assert_eq!(
                view.shape(),
                Fixture::usizes(&info["shape"]).as_slice(),
                "{key}"
            );
            let dtype = match info["dtype"].as_str().unwrap() {
                "float32" => Dtype::F32,
                "int64" => Dtype::I64,
                other => panic!("{key}: dtype {other}"),
            };
            assert_eq!(view.dtype(), dtype, "{key}");
            if dtype == Dtype::I64 {
                assert_eq!(
                    view.data(),
                    3i64.to_le_bytes(),
                    "{key}: num_batches_tracked"
                );
            }
        }
        // Running variances must be positive, as BatchNorm needs.
        for key in state.keys().filter(|k| k.ends_with("running_var")) {
            let v = fixtures::f32_tensor(&file, key);
            assert!(v.iter().all(|&x| x > 0.0), "{name}: {key}");
        }
        let io = SafeTensors::deserialize(&fixture.io).unwrap();
        let mut io_keys: Vec<&str> = io.names();
        io_keys.sort();
        assert_eq!(
            io_keys,
            ["input", "output"],
            "{name}: the io file of a recipe fixture"
        );
    }
}
