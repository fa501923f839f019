//! Device bytes the `sketch_decode` fuzzer once stalled or crashed on
//! (fuzz/regressions/sketch_decode/): decoding and judging them against
//! the fuzzer's baseline returns quickly, with a report or an error.

use kiln_collector::drift::{DriftOptions, detect_sketch};
use kiln_protocol::{Baseline, FeatureBaseline, PredictionBaseline, Sketch};

/// The fuzz target's baseline (fuzz/fuzz_targets/sketch_decode.rs).
fn baseline() -> Baseline {
    let cont: Vec<f64> = (0..300).map(|i| f64::from(i) * 0.37 % 11.0).collect();
    let disc: Vec<f64> = (0..300).map(|i| f64::from(i % 4)).collect();
    Baseline {
        names: vec!["c".into(), "d".into()],
        features: vec![
            FeatureBaseline::from_reference(&cont, false, 32),
            FeatureBaseline::from_reference(&disc, true, 32),
        ],
        prediction: Some(PredictionBaseline {
            output: 0,
            argmax: true,
            feature: FeatureBaseline::from_reference(&disc, true, 32),
        }),
        channels: None,
    }
}

#[test]
fn sketch_regressions_are_judged_quickly() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/sketch_decode");
    let b = baseline();
    let mut n = 0;
    for f in std::fs::read_dir(&dir).expect("fuzz/regressions/sketch_decode exists") {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        let t = std::time::Instant::now();
        if let Ok(s) = Sketch::from_bytes(&bytes) {
            let _ = detect_sketch(&b, &s, &DriftOptions::default());
            let mut w = Sketch::new(&b);
            if w.merge(&s).is_ok() {
                let _ = detect_sketch(&b, &w, &DriftOptions::default());
            }
        }
        assert!(t.elapsed().as_secs() < 2, "took {:?}", t.elapsed());
        n += 1;
    }
    assert!(n >= 1);
}
