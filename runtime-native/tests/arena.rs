//! An arena handed from one session to the next gives the same results as a
//! fresh session, and one too small for the model is replaced.

use kiln_runtime_native::{ErrorCategory, Model, RunError, TensorValue};

fn corpus(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(rel)
}

fn load(rel: &str) -> Model {
    let bytes = std::fs::read(corpus(rel)).expect("corpus model");
    let compiled = kiln_compiler::compile_onnx(&bytes, rel, &Default::default()).expect("compiles");
    Model::load(&compiled.bytes).expect("loads")
}

#[test]
fn arena_round_trips_between_sessions() {
    let mnist = load("onnx-real/mnist-8_cntk.onnx");
    let x: Vec<f32> = (0..784).map(|i| ((i * 37) % 255) as f32).collect();
    let input = TensorValue::from_f32(vec![1, 1, 28, 28], &x);
    let want = mnist.session().run(&[&input]).expect("fresh session");

    let mut arena = mnist.arena();
    assert_eq!(arena.len(), mnist.arena_size());
    for _ in 0..3 {
        let mut s = mnist.session_in(arena);
        assert_eq!(s.run(&[&input]).expect("reused arena"), want);
        arena = s.into_arena();
    }

    // An arena from a model with a smaller one is swapped for a fitting one.
    let sine = load("onnx-real/burn_pico_sine.onnx");
    assert!(sine.arena_size() < mnist.arena_size());
    let mut s = mnist.session_in(sine.arena());
    assert_eq!(s.run(&[&input]).expect("replaced arena"), want);
    assert!(s.into_arena().len() >= mnist.arena_size());
}

#[test]
fn errors_fall_into_the_cli_categories() {
    let mnist = load("onnx-real/mnist-8_cntk.onnx");
    let wrong = TensorValue::from_f32(vec![1, 784], &[0.0; 784]);
    let e = mnist.session().run(&[&wrong]).expect_err("wrong shape");
    assert_eq!(e.category(), ErrorCategory::InputRejected);
    assert_eq!(
        (e.category().code(), e.category().exit_code()),
        ("INPUT_REJECTED", 4)
    );
    let e = Model::load(b"KILN truncated").expect_err("not an artifact");
    assert_eq!(e.category(), ErrorCategory::InvalidModel);
    assert_eq!(e.category().exit_code(), 3);
    let e = RunError::OutputBuffer { output: "y".into() };
    assert_eq!(e.category(), ErrorCategory::Other);
}

#[test]
fn decoded_graphs_must_match_the_artifact() {
    let mnist = load("onnx-real/mnist-8_cntk.onnx");
    let view = mnist.view();
    let plan = kiln_engine::Plan::new(view).expect("plans");
    let nodes: Vec<_> = (0..view.node_count())
        .map(|i| view.node(i).unwrap())
        .collect();
    let tensors: Vec<_> = (0..view.tensor_count())
        .map(|i| view.tensor(i).unwrap())
        .collect();
    let mut arena = vec![0u128; mnist.arena_size().div_ceil(16)];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut arena);
    plan.run_decoded(bytes, &nodes, &tensors, |_| {})
        .expect("full decode runs");
    plan.run_decoded(bytes, &nodes, &[], |_| {})
        .expect("tensors decoded as needed");
    assert!(
        plan.run_decoded(bytes, &nodes[1..], &tensors, |_| {})
            .is_err()
    );
    assert!(
        plan.run_decoded(bytes, &nodes, &tensors[1..], |_| {})
            .is_err()
    );
}
