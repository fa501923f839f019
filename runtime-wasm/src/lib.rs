//! Kiln in the browser and in Node: the native runtime's [`Model`] (same
//! engine, same input validation) behind a wasm-bindgen API. `cargo xtask
//! wasm` packages it as the npm package `kiln-runtime`, whose `kiln.js`
//! adds asynchronous loading, the `KilnError` class and a
//! `FinalizationRegistry` safety net around the raw class exported here.
//!
//! Owns: converting JavaScript values (typed arrays, feed objects) to
//! tensors and back, and reporting every failure as a JavaScript `Error`
//! named `KilnError` with a `code` from [`ErrorCategory`].
//!
//! Architecture invariant: depends on `kiln-runtime-native` (without its
//! `onnx` feature), `wasm-bindgen` and `js-sys` only; never on the compiler.

use js_sys::{Array, ArrayBuffer, Object, Reflect};
use kiln_runtime_native::{DType, ErrorCategory, IoSchema, RunError, Session, TensorValue};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};

/// A JavaScript `Error` named `KilnError` carrying `code`.
fn kiln_error(category: ErrorCategory, message: &str) -> JsValue {
    let e = js_sys::Error::new(message);
    e.set_name("KilnError");
    // Setting a property on a fresh Error object cannot fail.
    let _ = Reflect::set(&e, &"code".into(), &category.code().into());
    e.into()
}

fn run_error(e: &RunError) -> JsValue {
    kiln_error(e.category(), &e.to_string())
}

fn usage(message: &str) -> JsValue {
    kiln_error(ErrorCategory::Usage, message)
}

fn rejected(input: &str, message: &str) -> JsValue {
    kiln_error(
        ErrorCategory::InputRejected,
        &format!("input '{input}' rejected: {message}"),
    )
}

/// Whether this build uses WebAssembly SIMD128 kernels.
#[wasm_bindgen(js_name = simdEnabled)]
pub fn simd_enabled() -> bool {
    cfg!(target_feature = "simd128")
}

/// The runtime's version (the Kiln release it was built from).
#[wasm_bindgen(js_name = runtimeVersion)]
pub fn runtime_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

self_cell::self_cell!(
    /// A model and its one session (arena, decoded nodes), which borrows it.
    struct Loaded {
        owner: kiln_runtime_native::Model,
        #[covariant]
        dependent: Session,
    }
    impl {Debug}
);

/// A loaded model and the session it runs in (one run at a time:
/// JavaScript is single-threaded, and a worker loads its own model).
#[wasm_bindgen(js_name = Model)]
#[derive(Debug)]
pub struct WasmModel {
    loaded: Loaded,
    allow_non_finite: bool,
}

#[wasm_bindgen(js_class = Model)]
impl WasmModel {
    /// Parses and checks artifact bytes (magic, version, checksum, every
    /// node's shapes). Throws `KilnError` (`INVALID_MODEL`) otherwise.
    pub fn load(bytes: &[u8]) -> Result<WasmModel, JsValue> {
        let model = kiln_runtime_native::Model::load(bytes).map_err(|e| run_error(&e))?;
        Ok(WasmModel {
            loaded: Loaded::new(model, |m| m.session()),
            allow_non_finite: false,
        })
    }

    fn model(&self) -> &kiln_runtime_native::Model {
        self.loaded.borrow_owner()
    }

    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.model().name().to_string()
    }

    #[wasm_bindgen(getter)]
    pub fn version(&self) -> String {
        self.model().version().to_string()
    }

    /// `[{name, dtype, shape, labels}]`; a batch dimension is its name
    /// (a string, e.g. `"N"`), as onnxruntime-web reports symbolic dims.
    #[wasm_bindgen(getter)]
    pub fn inputs(&self) -> Array {
        self.model().inputs().iter().map(describe).collect()
    }

    #[wasm_bindgen(getter)]
    pub fn outputs(&self) -> Array {
        self.model().outputs().iter().map(describe).collect()
    }

    /// The drift baseline the artifact carries (`kiln compile --reference`),
    /// as stored: base64 postcard, which the JavaScript layer decodes
    /// (kept out of the .wasm for size); `undefined` without one.
    #[wasm_bindgen(getter, js_name = driftBaseline)]
    pub fn drift_baseline(&self) -> Option<String> {
        let view = self.model().view();
        view.meta()
            .property(kiln_runtime_native::BASELINE_PROPERTY)
            .map(Into::into)
    }

    /// Bytes of working memory one run uses (per sample for batched models).
    #[wasm_bindgen(getter, js_name = arenaBytes)]
    pub fn arena_bytes(&self) -> usize {
        self.model().arena_size()
    }

    /// Accept NaN and infinite inputs (rejected by default).
    #[wasm_bindgen(setter, js_name = allowNonFinite)]
    pub fn set_allow_non_finite(&mut self, allow: bool) {
        self.allow_non_finite = allow;
    }

    #[wasm_bindgen(getter, js_name = allowNonFinite)]
    pub fn allow_non_finite(&self) -> bool {
        self.allow_non_finite
    }

    /// Runs on `feeds`, an object mapping each input name to a typed array
    /// of the input's dtype (the batch size follows from its length) or to
    /// `{data, shape}`. Returns an object mapping each output name to a new
    /// typed array. Throws `KilnError` for anything the schema rejects.
    pub fn run(&mut self, feeds: &JsValue) -> Result<Object, JsValue> {
        if !feeds.is_object() {
            return Err(usage(
                "run() takes an object mapping input names to typed arrays",
            ));
        }
        let inputs = self
            .model()
            .inputs()
            .iter()
            .map(|spec| tensor_from_js(spec, feeds))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&TensorValue> = inputs.iter().collect();
        let allow = self.allow_non_finite;
        let outputs = self
            .loaded
            .with_dependent_mut(|_, session| session.allow_non_finite(allow).run(&refs))
            .map_err(|e| run_error(&e))?;
        let out = Object::new();
        for (spec, t) in self.model().outputs().iter().zip(&outputs) {
            Reflect::set(&out, &spec.name.as_str().into(), &typed_array(t))?;
        }
        Ok(out)
    }
}

fn describe(s: &IoSchema) -> JsValue {
    let o = Object::new();
    let shape: Array = s
        .dims
        .iter()
        .map(|d| match d {
            Some(n) => JsValue::from(*n as f64),
            None => JsValue::from(s.batch_name.as_deref().unwrap_or("N")),
        })
        .collect();
    let labels: Array = s.labels.iter().map(|l| JsValue::from(l.as_str())).collect();
    for (k, v) in [
        ("name", JsValue::from(s.name.as_str())),
        ("dtype", JsValue::from(s.dtype.name())),
        ("shape", shape.into()),
        ("labels", labels.into()),
    ] {
        // Defining a property on a plain new object cannot fail.
        let _ = Reflect::set(&o, &k.into(), &v);
    }
    o.into()
}

/// The typed-array class that carries `dtype` (float16 travels as its raw
/// bits in a `Uint16Array`, bool as bytes in a `Uint8Array`).
fn array_class(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "Float32Array",
        DType::F64 => "Float64Array",
        DType::I8 => "Int8Array",
        DType::U8 | DType::Bool => "Uint8Array",
        DType::I16 => "Int16Array",
        DType::U16 | DType::F16 => "Uint16Array",
        DType::I32 => "Int32Array",
        DType::U32 => "Uint32Array",
        DType::I64 => "BigInt64Array",
        DType::U64 => "BigUint64Array",
    }
}

fn class_name(v: &JsValue) -> String {
    Reflect::get(v, &"constructor".into())
        .and_then(|c| Reflect::get(&c, &"name".into()))
        .ok()
        .and_then(|n| n.as_string())
        .unwrap_or_else(|| {
            if v.is_undefined() {
                "undefined".into()
            } else {
                "a non-typed-array value".into()
            }
        })
}

/// Reads `feeds[spec.name]` into a tensor, checking the array class and
/// working out the batch size from the length.
fn tensor_from_js(spec: &IoSchema, feeds: &JsValue) -> Result<TensorValue, JsValue> {
    let name = spec.name.as_str();
    let mut value = Reflect::get(feeds, &name.into())?;
    if value.is_undefined() {
        return Err(rejected(name, "missing from the feeds"));
    }
    let mut shape: Option<Vec<usize>> = None;
    if !ArrayBuffer::is_view(&value) && value.is_object() {
        // {data, shape}
        let s = Reflect::get(&value, &"shape".into())?;
        if let Some(arr) = s.dyn_ref::<Array>() {
            let mut dims = Vec::with_capacity(arr.length() as usize);
            for d in arr.iter() {
                match d.as_f64() {
                    Some(x) if x >= 0.0 && x.fract() == 0.0 && x <= u32::MAX as f64 => {
                        dims.push(x as usize)
                    }
                    _ => return Err(rejected(name, "shape must be an array of whole numbers")),
                }
            }
            shape = Some(dims);
        }
        value = Reflect::get(&value, &"data".into())?;
    }
    let want = array_class(spec.dtype);
    let got = class_name(&value);
    if !ArrayBuffer::is_view(&value) || got != want {
        return Err(rejected(
            name,
            &format!("expected a {want} ({}), got {got}", spec.dtype.name()),
        ));
    }
    let view: js_sys::Uint8Array = {
        let buffer = Reflect::get(&value, &"buffer".into())?;
        let offset = Reflect::get(&value, &"byteOffset".into())?
            .as_f64()
            .unwrap_or(0.0) as u32;
        let len = Reflect::get(&value, &"byteLength".into())?
            .as_f64()
            .unwrap_or(0.0) as u32;
        js_sys::Uint8Array::new_with_byte_offset_and_length(&buffer, offset, len)
    };
    let data = view.to_vec();
    let numel = data.len() / spec.dtype.size();
    let shape = match shape {
        Some(s) => s,
        None => infer_shape(spec, numel).map_err(|m| rejected(name, &m))?,
    };
    Ok(TensorValue {
        dtype: spec.dtype,
        shape,
        data,
    })
}

/// The shape of a flat array of `numel` elements: the schema's dims with
/// the batch dimension (if any) set from the length.
fn infer_shape(spec: &IoSchema, numel: usize) -> Result<Vec<usize>, String> {
    let fixed: usize = spec.dims.iter().flatten().product();
    let batch = if spec.dims.iter().any(Option::is_none) {
        if fixed == 0 || numel == 0 || !numel.is_multiple_of(fixed) {
            return Err(format!(
                "{numel} elements do not fill whole samples of shape {} ({fixed} per sample)",
                spec.shape_string()
            ));
        }
        numel / fixed
    } else {
        if numel != fixed {
            return Err(format!(
                "{numel} elements, shape {} takes {fixed}",
                spec.shape_string()
            ));
        }
        1
    };
    Ok(spec.shape(batch))
}

/// A new typed array of the tensor's dtype holding a copy of its data.
fn typed_array(t: &TensorValue) -> JsValue {
    let bytes = js_sys::Uint8Array::from(t.data.as_slice());
    let buffer = bytes.buffer();
    let n = t.numel() as u32;
    match t.dtype {
        DType::F32 => js_sys::Float32Array::new_with_byte_offset_and_length(&buffer, 0, n).into(),
        DType::F64 => js_sys::Float64Array::new_with_byte_offset_and_length(&buffer, 0, n).into(),
        DType::I8 => js_sys::Int8Array::new_with_byte_offset_and_length(&buffer, 0, n).into(),
        DType::U8 | DType::Bool => bytes.into(),
        DType::I16 => js_sys::Int16Array::new_with_byte_offset_and_length(&buffer, 0, n).into(),
        DType::U16 | DType::F16 => {
            js_sys::Uint16Array::new_with_byte_offset_and_length(&buffer, 0, n).into()
        }
        DType::I32 => js_sys::Int32Array::new_with_byte_offset_and_length(&buffer, 0, n).into(),
        DType::U32 => js_sys::Uint32Array::new_with_byte_offset_and_length(&buffer, 0, n).into(),
        DType::I64 => js_sys::BigInt64Array::new_with_byte_offset_and_length(&buffer, 0, n).into(),
        DType::U64 => js_sys::BigUint64Array::new_with_byte_offset_and_length(&buffer, 0, n).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dims: Vec<Option<usize>>) -> IoSchema {
        IoSchema {
            name: "x".into(),
            dtype: DType::F32,
            dims,
            batch_name: Some("N".into()),
            ranges: vec![],
            labels: vec![],
        }
    }

    #[test]
    fn batch_follows_from_the_length() {
        let s = spec(vec![None, Some(4)]);
        assert_eq!(infer_shape(&s, 12), Ok(vec![3, 4]));
        assert!(infer_shape(&s, 10).is_err_and(|m| m.contains("4 per sample")));
        assert!(infer_shape(&s, 0).is_err());
        let fixed = spec(vec![Some(1), Some(4)]);
        assert_eq!(infer_shape(&fixed, 4), Ok(vec![1, 4]));
        assert!(infer_shape(&fixed, 8).is_err_and(|m| m.contains("takes 4")));
    }

    #[test]
    fn every_dtype_has_a_typed_array() {
        for d in [
            DType::F32,
            DType::F64,
            DType::F16,
            DType::I8,
            DType::U8,
            DType::Bool,
            DType::I16,
            DType::U16,
            DType::I32,
            DType::U32,
            DType::I64,
            DType::U64,
        ] {
            assert!(array_class(d).ends_with("Array"));
        }
    }
}

/// The package's allocator (see Cargo.toml); `LockedAllocator` rather than
/// the unsafe single-threaded wrapper: the lock is one flag, uncontended.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOC: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());
