//! Writes the built-in layer reference (generated from kiln-spec's tables, the ones
//! `model!` binds against) for the `kiln::layers` docs.

fn main() {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("layer_reference.md"), kiln_spec::reference_markdown())
        .expect("OUT_DIR is writable");
    println!("cargo::rerun-if-changed=build.rs");
}
