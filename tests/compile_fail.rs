//! Compile-time shape errors: every case in tests/ui must fail to compile with the
//! message in its .stderr snapshot (regenerate with TRYBUILD=overwrite after an
//! intended change of wording, and review the diff).

#[test]
fn model_macro_shape_errors_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui/*.rs"));
}
