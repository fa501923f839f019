//! Tree ensemble tables are checked once, when the model loads (not on
//! every run): a table with a child index out of range is rejected by
//! `Model::load` with an invalid-model error, before any input arrives.

use kiln_format::View;
use kiln_format::write::ArtifactDesc;
use kiln_runtime_native::{ErrorCategory, Model, TensorValue};

fn corpus(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(rel)
}

#[test]
fn a_corrupt_tree_table_is_rejected_at_load() {
    let rel = "sklearn/rf_breast_cancer.onnx";
    let bytes = std::fs::read(corpus(rel)).expect("corpus model");
    let compiled = kiln_compiler::compile_onnx(&bytes, rel, &Default::default()).expect("compiles");
    // The good artifact loads and runs.
    let model = Model::load(&compiled.bytes).expect("loads");
    let x = TensorValue::from_f32(vec![1, 30], &[1.0; 30]);
    model.session().run(&[&x]).expect("runs");

    let view = View::parse(&compiled.bytes).expect("parses");
    let mut desc = ArtifactDesc::from_view(&view).expect("desc");
    let tree = desc
        .nodes
        .iter()
        .find(|n| matches!(n.op, kiln_format::Op::TreeEnsemble { .. }))
        .expect("a tree ensemble node");
    let table = desc.tensors[tree.inputs[1] as usize];
    // Node 0 is a branch: point its true child far past the table.
    let at = table.offset as usize + 4;
    desc.weights[at..at + 4].copy_from_slice(&i32::MAX.to_le_bytes());
    let corrupt = desc.to_bytes().expect("re-sealed");
    let e = Model::load(&corrupt).expect_err("rejected at load");
    assert_eq!(e.category(), ErrorCategory::InvalidModel);
    assert!(
        e.to_string()
            .contains("tree ensemble tables are inconsistent"),
        "{e}"
    );
}
