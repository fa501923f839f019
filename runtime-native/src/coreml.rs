//! Core ML backend (feature `coreml`): hands a `kiln compile --target
//! coreml` package to the system's Core ML (CPU, GPU and Neural Engine), for
//! iOS and macOS apps that want Apple's scheduler rather than Kiln's
//! engine, behind the same input checks as [`crate::Session::run`]: each
//! input present once, float32, the package's exact shape, finite values.
//!
//! The binding is `coreml-native` (objc2 over `CoreML.framework`, no Swift
//! toolchain), which builds on every platform and is a stub off Apple's:
//! there [`CoreMlModel::load`] checks the package and then fails with
//! [`CoreMlError::Unavailable`]. CI (Linux) compiles and tests that path
//! only; predictions need a Mac or an iPhone.
//!
//! Outputs: the package's multi-array (float32) outputs. A classifier's
//! label and probability dictionary are not read through this binding.

use crate::TensorValue;
use kiln_format::DType;
use std::path::{Path, PathBuf};

/// Why a Core ML package could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreMlError {
    #[error(
        "{path} is not a Core ML package (no Manifest.json): write one with `kiln compile MODEL --target coreml -o NAME.mlpackage`"
    )]
    NotAPackage { path: PathBuf },
    #[error("Core ML is not available here ({0}); it runs on macOS and iOS only")]
    Unavailable(String),
    #[error("Core ML could not load {path}: {detail}")]
    Load { path: PathBuf, detail: String },
    #[error("input '{name}': {detail}")]
    Input { name: String, detail: String },
    #[error("Core ML prediction failed: {0}")]
    Predict(String),
}

impl CoreMlError {
    /// The runtime's error category (and so the CLI's exit code).
    pub fn category(&self) -> crate::ErrorCategory {
        match self {
            CoreMlError::NotAPackage { .. } | CoreMlError::Load { .. } => {
                crate::ErrorCategory::InvalidModel
            }
            CoreMlError::Input { .. } => crate::ErrorCategory::InputRejected,
            CoreMlError::Unavailable(_) | CoreMlError::Predict(_) => crate::ErrorCategory::Other,
        }
    }
}

fn from_binding(e: coreml_native::Error, path: &Path) -> CoreMlError {
    match e.kind() {
        coreml_native::ErrorKind::UnsupportedPlatform => {
            CoreMlError::Unavailable(e.message().to_string())
        }
        _ => CoreMlError::Load {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
    }
}

/// A Core ML package compiled and loaded by the system.
pub struct CoreMlModel {
    model: coreml_native::Model,
    /// Multi-array inputs: name and shape.
    inputs: Vec<(String, Vec<usize>)>,
    /// Multi-array outputs.
    outputs: Vec<String>,
}

impl std::fmt::Debug for CoreMlModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreMlModel")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl CoreMlModel {
    /// Compiles the package at `package` (`.mlpackage` → `.mlmodelc`, as
    /// Xcode would) and loads it on every compute unit Core ML picks.
    pub fn load(package: impl AsRef<Path>) -> Result<Self, CoreMlError> {
        let path = package.as_ref();
        if !path.join("Manifest.json").is_file() {
            return Err(CoreMlError::NotAPackage {
                path: path.to_path_buf(),
            });
        }
        let compiled = coreml_native::compile_model(path).map_err(|e| from_binding(e, path))?;
        let model = coreml_native::Model::load(&compiled, coreml_native::ComputeUnits::All)
            .map_err(|e| from_binding(e, path))?;
        let multi = |f: &coreml_native::FeatureDescription| {
            *f.feature_type() == coreml_native::FeatureType::MultiArray
        };
        let inputs = model
            .inputs()
            .iter()
            .filter(|f| multi(f))
            .map(|f| (f.name().to_string(), f.shape().unwrap_or(&[]).to_vec()))
            .collect();
        let outputs = model
            .outputs()
            .iter()
            .filter(|f| multi(f))
            .map(|f| f.name().to_string())
            .collect();
        Ok(CoreMlModel {
            model,
            inputs,
            outputs,
        })
    }

    /// The package's multi-array inputs (name, shape).
    pub fn inputs(&self) -> &[(String, Vec<usize>)] {
        &self.inputs
    }

    /// Runs one prediction; returns the multi-array outputs by name.
    pub fn run(
        &self,
        feeds: &[(&str, &TensorValue)],
    ) -> Result<Vec<(String, TensorValue)>, CoreMlError> {
        let values = check_feeds(&self.inputs, feeds)?;
        let tensors = self
            .inputs
            .iter()
            .zip(&values)
            .map(|((name, shape), v)| {
                coreml_native::BorrowedTensor::from_f32(v, shape).map_err(|e| CoreMlError::Input {
                    name: name.clone(),
                    detail: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let named: Vec<(&str, &dyn coreml_native::AsMultiArray)> = self
            .inputs
            .iter()
            .zip(&tensors)
            .map(|((name, _), t)| (name.as_str(), t as &dyn coreml_native::AsMultiArray))
            .collect();
        let prediction = self
            .model
            .predict(&named)
            .map_err(|e| CoreMlError::Predict(e.to_string()))?;
        self.outputs
            .iter()
            .map(|name| {
                let (v, shape) = prediction
                    .get_f32(name)
                    .map_err(|e| CoreMlError::Predict(format!("output '{name}': {e}")))?;
                Ok((name.clone(), TensorValue::from_f32(shape, &v)))
            })
            .collect()
    }
}

/// Each of `inputs` fed once by `feeds`, as float32 of its exact shape
/// with finite values: the values in `inputs`' order.
fn check_feeds(
    inputs: &[(String, Vec<usize>)],
    feeds: &[(&str, &TensorValue)],
) -> Result<Vec<Vec<f32>>, CoreMlError> {
    let bad = |name: &str, detail: String| CoreMlError::Input {
        name: name.to_string(),
        detail,
    };
    if let Some((extra, _)) = feeds
        .iter()
        .find(|(n, _)| !inputs.iter().any(|(i, _)| i == n))
    {
        let known: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
        return Err(bad(
            extra,
            format!("the package has no such input (it takes {known:?})"),
        ));
    }
    inputs
        .iter()
        .map(|(name, shape)| {
            let mut given = feeds.iter().filter(|(n, _)| n == name);
            let (Some((_, t)), None) = (given.next(), given.next()) else {
                return Err(bad(name, "must be given exactly once".into()));
            };
            if t.dtype != DType::F32 {
                return Err(bad(
                    name,
                    format!("is {:?}; Core ML packages from Kiln take float32", t.dtype),
                ));
            }
            if &t.shape != shape {
                return Err(bad(
                    name,
                    format!("has shape {:?}; the package takes {shape:?}", t.shape),
                ));
            }
            let v: Vec<f32> = t.f32_values().collect();
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(bad(name, format!("element {i} is {}", v[i])));
            }
            Ok(v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Vec<(String, Vec<usize>)> {
        vec![("x".into(), vec![1, 3])]
    }

    #[test]
    fn feeds_are_checked_against_the_package() {
        let ok = TensorValue::from_f32(vec![1, 3], &[1.0, 2.0, 3.0]);
        assert_eq!(
            check_feeds(&inputs(), &[("x", &ok)]).unwrap(),
            vec![vec![1.0, 2.0, 3.0]]
        );
        let cases: Vec<(Vec<(&str, &TensorValue)>, &str)> = vec![
            (vec![], "exactly once"),
            (vec![("x", &ok), ("x", &ok)], "exactly once"),
            (vec![("y", &ok)], "no such input"),
        ];
        for (feeds, says) in cases {
            let e = check_feeds(&inputs(), &feeds).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
            assert_eq!(e.category(), crate::ErrorCategory::InputRejected);
        }
        let wide = TensorValue::from_f32(vec![1, 4], &[0.0; 4]);
        let nan = TensorValue::from_f32(vec![1, 3], &[0.0, f32::NAN, 0.0]);
        let ints = TensorValue {
            dtype: DType::I32,
            shape: vec![1, 3],
            data: vec![0; 12],
        };
        for (t, says) in [
            (&wide, "has shape [1, 4]"),
            (&nan, "element 1 is NaN"),
            (&ints, "is I32"),
        ] {
            let e = check_feeds(&inputs(), &[("x", t)]).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn a_directory_without_a_manifest_is_not_a_package() {
        let dir = std::env::temp_dir().join(format!("kiln-not-a-package-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = CoreMlModel::load(&dir).err().unwrap();
        assert!(matches!(e, CoreMlError::NotAPackage { .. }), "{e}");
        assert_eq!(e.category(), crate::ErrorCategory::InvalidModel);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Off Apple platforms a real package is checked, then refused as
    /// unavailable (the binding is a stub there).
    #[cfg(not(target_vendor = "apple"))]
    #[test]
    fn a_package_off_apple_platforms_is_unavailable() {
        let dir =
            std::env::temp_dir().join(format!("kiln-package-{}.mlpackage", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Manifest.json"), "{}").unwrap();
        let e = CoreMlModel::load(&dir).err().unwrap();
        assert!(matches!(e, CoreMlError::Unavailable(_)), "{e}");
        assert!(e.to_string().contains("macOS and iOS only"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
