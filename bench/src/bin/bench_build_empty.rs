//! The baseline for `bench_build_nets`: the same kind of program, linking the `cnn` crate, but
//! without a `cnn!` invocation. `docs/benchmarks.md` records both build times.
//!
//! `cargo run --release --bin bench_build_empty`

fn main() {
    let err = cnn::Error::InputShape {
        expected: vec![1, 3, 32, 32],
        found: vec![1, 1, 28, 28],
    };
    println!("no networks declared; a sample runtime error: {err}");
}
