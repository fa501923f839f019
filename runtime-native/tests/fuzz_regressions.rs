//! Inputs the fuzzers once crashed on (fuzz/regressions/*): loading and
//! running them must return an error or a result, never panic.

use kiln_runtime_native::{Model, TensorValue};

#[test]
fn fuzz_regressions_do_not_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut n = 0;
    for dir in std::fs::read_dir(&root).expect("fuzz/regressions exists") {
        for f in std::fs::read_dir(dir.expect("entry").path()).expect("target dir") {
            let path = f.expect("entry").path();
            let bytes = std::fs::read(&path).expect("readable");
            n += 1;
            // Raw fuzzer inputs lack a valid checksum; run the engine on them directly too.
            let mut buf = vec![0u128; bytes.len().div_ceil(16)];
            let aligned: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
            aligned[..bytes.len()].copy_from_slice(&bytes);
            if let Ok(view) = kiln_format::View::parse(&aligned[..bytes.len()])
                && let Ok(plan) = kiln_engine::Plan::new(view)
                && plan.arena_size() <= 1 << 20
            {
                let mut arena = vec![0u128; plan.arena_size().div_ceil(16) + 1];
                let _ = plan.run(bytemuck::cast_slice_mut(&mut arena));
            }
            if let Ok(model) = Model::load(&bytes) {
                let inputs: Vec<TensorValue> = model
                    .inputs()
                    .iter()
                    .map(|s| {
                        let shape = s.shape(1);
                        let len = shape.iter().product::<usize>() * s.dtype.size();
                        TensorValue {
                            dtype: s.dtype,
                            shape,
                            data: vec![0; len],
                        }
                    })
                    .collect();
                let refs: Vec<&TensorValue> = inputs.iter().collect();
                let _ = model.session().run(&refs);
            }
        }
    }
    assert!(n > 0, "no regression inputs found under {}", root.display());
}
