//! `kiln compile --target mcu`: the artifact and, beside it, a Rust module
//! that compiles and a C header, both with the arena size and op set the
//! artifact needs.

use std::process::Command;

#[test]
fn mcu_target_writes_a_module_that_compiles() {
    let dir = std::env::temp_dir().join(format!("kiln-mcu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus/tflite-micro/hello_world_int8.tflite");
    let out = dir.join("sine.kiln");
    let status = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["compile", "--target", "mcu", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("kiln runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let artifact = std::fs::read(&out).expect("artifact");
    let plan = kiln_runtime_native::Model::load(&artifact).expect("loads");
    let rs = std::fs::read_to_string(dir.join("sine.rs")).expect("sine.rs");
    let h = std::fs::read_to_string(dir.join("sine.h")).expect("sine.h");
    assert!(
        rs.contains(&format!(
            "pub const ARENA_SIZE: usize = {};",
            plan.arena_size()
        )),
        "{rs}"
    );
    assert!(
        rs.contains(&format!("pub const MODEL_LEN: usize = {};", artifact.len())),
        "{rs}"
    );
    assert!(
        h.contains(&format!("#define KILN_ARENA_SIZE {}u", plan.arena_size())),
        "{h}"
    );
    let view = kiln_format::View::parse(&artifact).expect("parses");
    let ops =
        (0..view.node_count()).fold(0u128, |s, i| s | 1 << view.node(i).expect("node").op.tag());
    assert!(
        rs.contains(&format!("pub const OPS: u128 = {ops:#x};")),
        "{rs}"
    );
    assert!(
        rs.contains("pub const INPUT_0_SHAPE: [usize; 2] = [1, 1];"),
        "{rs}"
    );

    // The module compiles as it is (include_bytes! finds the artifact beside it).
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let check = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "lib",
            "--emit",
            "metadata",
            "-o",
        ])
        .arg(dir.join("libsine.rmeta"))
        .arg(dir.join("sine.rs"))
        .output()
        .expect("rustc runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
