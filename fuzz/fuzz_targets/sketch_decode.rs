//! `Sketch::from_bytes` on untrusted device bytes, then merging into a
//! window and the collector's drift verdict against a fixed baseline.
#![no_main]

use kiln_collector::drift::{DriftOptions, detect_sketch};
use kiln_protocol::{Baseline, FeatureBaseline, PredictionBaseline, Sketch};
use libfuzzer_sys::fuzz_target;

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

fuzz_target!(|data: &[u8]| {
    let Ok(s) = Sketch::from_bytes(data) else {
        return;
    };
    let b = baseline();
    let _ = detect_sketch(&b, &s, &DriftOptions::default());
    let mut w = Sketch::new(&b);
    if w.merge(&s).is_ok() {
        let _ = detect_sketch(&b, &w, &DriftOptions::default());
    }
});
