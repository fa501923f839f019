//! The telemetry section: what recording a drift sketch costs a native
//! `Session::run` on the sklearn models (compiled with their training rows
//! as the reference), against the same session without telemetry, in the
//! same process, alternating.

use anyhow::{Context, Result};
use kiln_compiler::{Options, Reference, compile_model, run::Samples};
use kiln_runtime_native::{DEFAULT_SAMPLE_EVERY, Model, TensorValue};
use std::path::Path;
use std::time::Instant;

const MODELS: [&str; 4] = ["mlp_digits", "logreg_iris", "gb_wine", "rf_breast_cancer"];

/// Median µs per call of `f` over `rounds` batches of `calls`, alternating
/// with `g`: (median of f, median of g).
fn alternate(
    rounds: usize,
    calls: usize,
    mut f: impl FnMut() -> Result<()>,
    mut g: impl FnMut() -> Result<()>,
) -> Result<(f64, f64)> {
    let (mut a, mut b) = (vec![], vec![]);
    for _ in 0..rounds {
        for (run, out) in [
            (&mut f as &mut dyn FnMut() -> Result<()>, &mut a),
            (&mut g, &mut b),
        ] {
            let t = Instant::now();
            for _ in 0..calls {
                run()?;
            }
            out.push(t.elapsed().as_secs_f64() * 1e6 / calls as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(&mut a), median(&mut b)))
}

pub fn section(corpus: &Path) -> Result<String> {
    let mut rows = vec![];
    for stem in MODELS {
        let dir = corpus.join("sklearn");
        let model_path = dir.join(format!("{stem}.onnx"));
        let train = kiln_cli::read_dataset(&dir.join(format!("{stem}_train.csv")), Some("target"))?;
        let test = kiln_cli::read_dataset(&dir.join(format!("{stem}_test.csv")), Some("target"))?;
        let opts = Options {
            reference: Some(Reference {
                samples: Samples::new(train.values.clone(), train.count),
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = std::fs::read(&model_path)?;
        let model = Model::load(&compile_model(&bytes, stem, &opts).context(stem)?.bytes)?;
        let features = test.values.len() / test.count;
        let rows_in: Vec<TensorValue> = test
            .values
            .chunks(features)
            .map(|r| TensorValue::from_f32(vec![1, features], r))
            .collect();
        let mut row = vec![stem.to_string(), features.to_string()];
        let mut sketch_bytes = 0;
        for every in [DEFAULT_SAMPLE_EVERY, 1] {
            let (mut plain, mut recording) = (model.session(), model.session());
            recording.record_telemetry(every)?;
            let (mut i, mut j) = (0, 0);
            let (p, r) = alternate(
                41,
                2000,
                || {
                    i = (i + 1) % rows_in.len();
                    plain.run(&[&rows_in[i]])?;
                    Ok(())
                },
                || {
                    j = (j + 1) % rows_in.len();
                    recording.run(&[&rows_in[j]])?;
                    Ok(())
                },
            )?;
            if every == 1 {
                let sketch = recording.take_sketch().unwrap_or_else(|| unreachable!());
                sketch_bytes = sketch.to_bytes().len();
            }
            row.push(format!("{p:.2}"));
            row.push(format!("{:.3}×", r / p));
        }
        row.push(sketch_bytes.to_string());
        rows.push(row);
    }
    Ok(format!(
        "\n## Telemetry overhead (native, µs per `Session::run`)\n\n\
         Each sklearn model compiled with its training rows as `--reference` (the artifact carries the drift \
         baseline), run on its test rows one at a time by two sessions of the same model in the same process, \
         one recording telemetry (`Session::record_telemetry`: the sampled calls' rows counted into the \
         baseline's bins and their latency bucketed), at the default sampling (one call in \
         `DEFAULT_SAMPLE_EVERY` = 64) and counting every call, each against its own plain session \
         (the machine's speed drifts between the two measurements, the ratio within one does not); 41 alternating rounds of 2,000 calls each, the median round shown. *Sketch* is the \
         postcard size of a window of the whole test set.\n\n{}",
        crate::table(
            &[
                "Model",
                "Features",
                "Plain",
                "1 in 64",
                "Plain",
                "Every call",
                "Sketch, B",
            ],
            &rows
        )
    ))
}
