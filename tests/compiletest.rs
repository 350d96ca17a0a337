//! Compile-fail and compile-pass cases for `cnn!`, in one test binary.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test --test compiletest` and
//! review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/**/*.rs");
    t.pass("tests/pass/*.rs");
}
