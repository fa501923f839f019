//! Helpers shared by the CLI's integration tests.

/// A `.npy` file of `data` (the CLI's writer).
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn npy(dtype: kiln_format::DType, shape: &[usize], data: &[u8]) -> Vec<u8> {
    kiln_cli::npy_bytes(&kiln_runtime_native::TensorValue {
        dtype,
        shape: shape.to_vec(),
        data: data.to_vec(),
    })
}

/// `kiln compile` of the corpus's `sklearn/STEM.onnx` to `out`, with its
/// training rows (`STEM_train.csv`, label column `target`) as the drift
/// reference.
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn compile_sklearn_with_reference(stem: &str, out: &std::path::Path) {
    let sk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/sklearn");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("compile")
        .arg(sk.join(format!("{stem}.onnx")))
        .arg("-o")
        .arg(out)
        .arg("--reference")
        .arg(sk.join(format!("{stem}_train.csv")))
        .args(["--labels", "target"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}
