//! `kiln compile --target wasm-module` output under wasmtime: the module
//! gives the native runtime's outputs (int8 identical, float within 1e-5 of
//! the output's magnitude), rejects NaN input with the CLI's exit code and a
//! message, and an unlinked engine says so.

use kiln_cli::GoldenCase;
use kiln_cli::wasm_module::{TEMPLATE, link};
use kiln_runtime_native::{Model, TensorValue};
use std::path::{Path, PathBuf};
use wasmtime::{Engine, Instance, Memory, Module, Store, TypedFunc};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
}

struct Wasm {
    store: Store<()>,
    instance: Instance,
    memory: Memory,
}

impl Wasm {
    fn new(engine: &Engine, bytes: &[u8]) -> Wasm {
        let module = Module::new(engine, bytes).expect("valid module");
        assert_eq!(module.imports().len(), 0, "the module must import nothing");
        let mut store = Store::new(engine, ());
        let instance = Instance::new(&mut store, &module, &[]).expect("instantiates");
        let memory = instance
            .get_memory(&mut store, "memory")
            .expect("exports memory");
        Wasm {
            store,
            instance,
            memory,
        }
    }

    fn func<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
    ) -> TypedFunc<P, R> {
        self.instance
            .get_typed_func(&mut self.store, name)
            .unwrap_or_else(|e| panic!("export {name}: {e}"))
    }

    fn call(&mut self, name: &str, i: u32) -> u32 {
        let f = self.func::<u32, u32>(name);
        f.call(&mut self.store, i).expect("call")
    }

    fn run(&mut self) -> i32 {
        let f = self.func::<(), i32>("kiln_run");
        f.call(&mut self.store, ()).expect("kiln_run does not trap")
    }

    fn error(&mut self) -> String {
        let p = self
            .func::<(), u32>("kiln_error_ptr")
            .call(&mut self.store, ())
            .unwrap() as usize;
        let n = self
            .func::<(), u32>("kiln_error_len")
            .call(&mut self.store, ())
            .unwrap() as usize;
        String::from_utf8_lossy(&self.memory.data(&self.store)[p..p + n]).into_owned()
    }

    fn write_input(&mut self, i: u32, bytes: &[u8]) {
        let (p, n) = (
            self.call("kiln_input_ptr", i),
            self.call("kiln_input_size", i),
        );
        assert_eq!(n as usize, bytes.len(), "input {i} size");
        self.memory.data_mut(&mut self.store)[p as usize..p as usize + bytes.len()]
            .copy_from_slice(bytes);
    }

    fn output(&mut self, i: u32) -> Vec<u8> {
        let (p, n) = (
            self.call("kiln_output_ptr", i),
            self.call("kiln_output_size", i),
        );
        self.memory.data(&self.store)[p as usize..(p + n) as usize].to_vec()
    }
}

/// Integers identical; floats within 1e-5 of max(1, max |want|).
fn assert_close(stem: &str, got: &TensorValue, want: &TensorValue) {
    assert_eq!(got.data.len(), want.data.len(), "{stem}: output size");
    if !want.dtype.is_float() {
        assert_eq!(
            got.data, want.data,
            "{stem}: integer outputs must be identical"
        );
        return;
    }
    let (g, w) = (got.to_f64(), want.to_f64());
    let scale = w.iter().fold(1f64, |m, v| m.max(v.abs()));
    let worst = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f64, f64::max);
    assert!(
        worst <= 1e-5 * scale,
        "{stem}: max abs diff {worst} (scale {scale})"
    );
}

#[test]
fn wasm_modules_match_the_native_runtime() {
    let engine = Engine::default();
    for (stem, rel) in [
        ("zoo_mnist8_cntk", "onnx-real/mnist-8_cntk.onnx"),
        ("sklearn_mlp_digits", "sklearn/mlp_digits.onnx"),
        ("mlperf_kws_dscnn_int8", "mlperf-tiny/kws_ref_model.tflite"),
        (
            "mlperf_ic_resnet8_int8",
            "mlperf-tiny/pretrainedResnet_quant.tflite",
        ),
        (
            "tflm_mnist_lstm_int8",
            "tflite-micro/trained_lstm_int8.tflite",
        ),
    ] {
        let case = GoldenCase::compile(&corpus(), stem, rel).expect("compiles");
        let model = Model::load(&case.artifact).expect("loads");
        let inputs: Vec<&TensorValue> = case.inputs.iter().map(|(_, t)| t).collect();
        let native = model.session().run(&inputs).expect("native run");
        let wasm = link(TEMPLATE, &case.artifact, model.arena_size()).expect("links");
        let mut m = Wasm::new(&engine, &wasm);
        assert_eq!(
            m.func::<(), u32>("kiln_input_count")
                .call(&mut m.store, ())
                .unwrap(),
            inputs.len() as u32
        );
        for (i, t) in inputs.iter().enumerate() {
            m.write_input(i as u32, &t.data);
        }
        assert_eq!(m.run(), 0, "{stem}: {}", m.error());
        for (k, want) in native.iter().enumerate() {
            let got = TensorValue {
                data: m.output(k as u32),
                ..want.clone()
            };
            assert_close(stem, &got, want);
        }
        // A second run on the same memory gives the same bytes.
        let first = m.output(0);
        assert_eq!(m.run(), 0);
        assert_eq!(m.output(0), first, "{stem}: second run");
        println!("{stem:<28} ok  module {} bytes", wasm.len());
    }
}

#[test]
fn wasm_module_rejects_nan_and_reports_why() {
    let case = GoldenCase::compile(&corpus(), "zoo_mnist8_cntk", "onnx-real/mnist-8_cntk.onnx")
        .expect("compiles");
    let arena = Model::load(&case.artifact).unwrap().arena_size();
    let wasm = link(TEMPLATE, &case.artifact, arena).expect("links");
    let mut m = Wasm::new(&Engine::default(), &wasm);
    let mut x = case.inputs[0].1.data.clone();
    x[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
    m.write_input(0, &x);
    assert_eq!(m.run(), 4, "input rejected, as the CLI's exit code 4");
    let msg = m.error();
    assert!(
        msg.contains("Input3") && msg.contains("element 10 is NaN"),
        "{msg}"
    );
    // Good input afterwards runs.
    m.write_input(0, &case.inputs[0].1.data);
    assert_eq!(m.run(), 0, "{}", m.error());
    assert_eq!(m.error(), "");
}

#[test]
fn the_unlinked_engine_says_no_model_is_linked() {
    let mut m = Wasm::new(&Engine::default(), TEMPLATE);
    assert_eq!(m.run(), 3);
    // The template reserves no error buffer: the code is the message.
    assert_eq!(m.call("kiln_input_size", 0), 0);
}

#[test]
fn cli_writes_a_runnable_module() {
    let dir = std::env::temp_dir().join(format!("kiln-wasm-module-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("iris.wasm");
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "compile",
            "../demos/iris/logreg_iris.onnx",
            "--target",
            "wasm-module",
            "-o",
        ])
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("kiln runs");
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(stdout.contains("wasm module"), "{stdout}");
    let wasm = std::fs::read(&out).unwrap();
    let mut m = Wasm::new(&Engine::default(), &wasm);
    // One setosa flower: sepal 5.1 x 3.5, petal 1.4 x 0.2.
    let x: Vec<u8> = [5.1f32, 3.5, 1.4, 0.2]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    m.write_input(0, &x);
    assert_eq!(m.run(), 0, "{}", m.error());
    let label = i64::from_le_bytes(m.output(0)[..8].try_into().unwrap());
    assert_eq!(label, 0, "setosa");
    let _ = std::fs::remove_dir_all(&dir);
}
