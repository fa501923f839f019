//! `libkiln`: Kiln's native runtime behind a C ABI, for apps that call one
//! engine from C, C++, Swift, Kotlin (JNI) or anything with an FFI. The
//! header `include/kiln.h` is generated from this file by cbindgen and
//! checked in; `demos/c/example.c` is the worked example.
//!
//! Ownership: every object the library hands out (`KilnModel`,
//! `KilnSession`) is freed by its `*_free` function, and only by it;
//! passing NULL to a `*_free` function does nothing. Strings and output
//! buffers the library returns are borrowed: valid until the object they
//! came from is freed (or, for outputs, until its next run; for
//! `kiln_last_error`, until the thread's next failing call).
//!
//! Threads: a `KilnModel` is immutable and may be shared by any number of
//! threads; a `KilnSession` (the arena and outputs of one run) belongs to
//! one thread at a time. A session keeps its model alive, so the model may
//! be freed before its sessions.
//!
//! Errors: every fallible function returns a `KilnStatus` (the `kiln` CLI's
//! exit codes: 0 ok, 1 other, 2 usage, 3 invalid model, 4 input rejected)
//! and leaves a message for `kiln_last_error()` on the calling thread.
//! Nothing panics across the boundary: a Rust panic would be a bug, and is
//! reported as `KILN_STATUS_OTHER` rather than unwinding into C.
//!
//! Architecture invariant: depends on `runtime-native` only (no compiler:
//! it loads `.kiln` artifacts).

use kiln_runtime_native::{DType, ErrorCategory, IoSchema, Model, RunError, TensorValue};
use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// Most dimensions a tensor description carries.
pub const KILN_MAX_RANK: usize = 8;

/// Outcome of a call: the `kiln` CLI's exit codes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KilnStatus {
    Ok = 0,
    /// Anything else (a buffer of the wrong size, an internal error).
    Other = 1,
    /// The API was misused (a NULL pointer, an index out of range).
    Usage = 2,
    /// The artifact is malformed, truncated, or cannot run.
    InvalidModel = 3,
    /// An input broke the model's schema (dtype, shape, NaN, range).
    InputRejected = 4,
}

/// Element types, numbered as in the artifact (and ONNX).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KilnDType {
    F32 = 1,
    U8 = 2,
    I8 = 3,
    U16 = 4,
    I16 = 5,
    I32 = 6,
    I64 = 7,
    Bool = 9,
    F16 = 10,
    F64 = 11,
    U32 = 12,
    U64 = 13,
}

impl KilnDType {
    fn of(d: DType) -> KilnDType {
        match d {
            DType::F32 => KilnDType::F32,
            DType::U8 => KilnDType::U8,
            DType::I8 => KilnDType::I8,
            DType::U16 => KilnDType::U16,
            DType::I16 => KilnDType::I16,
            DType::I32 => KilnDType::I32,
            DType::I64 => KilnDType::I64,
            DType::Bool => KilnDType::Bool,
            DType::F16 => KilnDType::F16,
            DType::F64 => KilnDType::F64,
            DType::U32 => KilnDType::U32,
            DType::U64 => KilnDType::U64,
        }
    }
}

/// A loaded model (opaque).
#[derive(Debug)]
pub struct KilnModel {
    model: Arc<Model>,
    /// NUL-terminated input names, then output names, for `KilnTensorInfo`.
    names: Vec<CString>,
}

/// The arena and outputs of one run at a time (opaque).
#[derive(Debug)]
pub struct KilnSession {
    /// Borrows `*model` (see [`session_of`]); declared first, so it is
    /// dropped before the `Arc` that keeps the model alive.
    session: kiln_runtime_native::Session<'static>,
    outputs: Vec<TensorValue>,
    /// Keeps the model alive for `session`; never read.
    _model: Arc<Model>,
}

/// A session over the model `arc` owns, for a `KilnSession` that stores
/// both: the graph is decoded and the arena allocated once, not per run.
fn session_of(arc: &Arc<Model>) -> kiln_runtime_native::Session<'static> {
    // SAFETY: the model lives in the `Arc`'s heap allocation, which never
    // moves and is freed only when the last `Arc` goes; the `KilnSession`
    // holding this session also holds a clone of `arc` and drops the
    // session first (field order), so the borrow never outlives the model.
    let model: &'static Model = unsafe { &*Arc::as_ptr(arc) };
    model.session()
}

/// One input or output as the model declares it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KilnTensorInfo {
    /// Borrowed from the model.
    pub name: *const c_char,
    pub dtype: KilnDType,
    pub rank: usize,
    /// The first `rank` entries; -1 marks the batch dimension (any size).
    pub dims: [i64; KILN_MAX_RANK],
}

/// An input for `kiln_session_run`: little-endian element bytes in C
/// order, with the shape they have.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KilnTensor {
    pub dtype: KilnDType,
    pub rank: usize,
    /// `rank` entries.
    pub dims: *const usize,
    pub data: *const u8,
    pub byte_len: usize,
}

/// An output of the last run, borrowed from its session.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KilnOutput {
    pub dtype: KilnDType,
    pub rank: usize,
    pub dims: [usize; KILN_MAX_RANK],
    pub data: *const u8,
    pub byte_len: usize,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: &str) {
    // Interior NULs cannot appear in a C string: show them as spaces.
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

fn fail(status: KilnStatus, message: &str) -> KilnStatus {
    set_error(message);
    status
}

fn run_error(e: &RunError) -> KilnStatus {
    let status = match e.category() {
        ErrorCategory::InvalidModel => KilnStatus::InvalidModel,
        ErrorCategory::InputRejected => KilnStatus::InputRejected,
        ErrorCategory::Usage => KilnStatus::Usage,
        ErrorCategory::Other => KilnStatus::Other,
    };
    fail(status, &e.to_string())
}

/// Runs `body`, turning a panic (a bug) into `KILN_STATUS_OTHER`.
fn guard(body: impl FnOnce() -> KilnStatus) -> KilnStatus {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        fail(
            KilnStatus::Other,
            "internal error in libkiln (a bug: please report it)",
        )
    })
}

/// The message of the calling thread's last failing call ("" if none), as
/// a NUL-terminated UTF-8 string valid until that thread's next failure.
#[unsafe(no_mangle)]
pub extern "C" fn kiln_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The library's version, e.g. "0.1.0" (static).
#[unsafe(no_mangle)]
pub extern "C" fn kiln_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Loads a `.kiln` artifact from `len` bytes at `bytes` (copied: the
/// caller's buffer may be freed afterwards) and checks it once. On success
/// `*out_model` owns a model for `kiln_model_free`.
///
/// # Safety
/// `bytes` points to `len` readable bytes; `out_model` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_model_load(
    bytes: *const u8,
    len: usize,
    out_model: *mut *mut KilnModel,
) -> KilnStatus {
    guard(|| {
        if bytes.is_null() || out_model.is_null() {
            return fail(KilnStatus::Usage, "kiln_model_load: a NULL pointer");
        }
        // SAFETY: the caller guarantees `len` readable bytes at `bytes`.
        let artifact = unsafe { std::slice::from_raw_parts(bytes, len) };
        let model = match Model::load(artifact) {
            Ok(m) => m,
            Err(e) => return run_error(&e),
        };
        let names = model
            .inputs()
            .iter()
            .chain(model.outputs())
            .map(|io| CString::new(io.name.replace('\0', " ")).unwrap_or_default())
            .collect();
        let boxed = Box::new(KilnModel {
            model: Arc::new(model),
            names,
        });
        // SAFETY: `out_model` is non-null and writable (the caller's
        // contract).
        unsafe { out_model.write(Box::into_raw(boxed)) };
        KilnStatus::Ok
    })
}

/// Frees a model from `kiln_model_load` (NULL: nothing). Its sessions stay
/// valid.
///
/// # Safety
/// `model` came from `kiln_model_load` and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_model_free(model: *mut KilnModel) {
    if !model.is_null() {
        // SAFETY: `model` came from `Box::into_raw` in `kiln_model_load`
        // and is freed once (the caller's contract).
        drop(unsafe { Box::from_raw(model) });
    }
}

/// The model behind a caller's pointer.
///
/// # Safety
/// `model` is NULL or a live pointer from `kiln_model_load`.
unsafe fn model_ref<'a>(model: *const KilnModel) -> Option<&'a KilnModel> {
    // SAFETY: the caller's contract.
    unsafe { model.as_ref() }
}

/// Number of inputs (0 for NULL).
///
/// # Safety
/// `model` is NULL or from `kiln_model_load`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_model_input_count(model: *const KilnModel) -> usize {
    // SAFETY: forwarded contract.
    unsafe { model_ref(model) }.map_or(0, |m| m.model.inputs().len())
}

/// Number of outputs (0 for NULL).
///
/// # Safety
/// `model` is NULL or from `kiln_model_load`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_model_output_count(model: *const KilnModel) -> usize {
    // SAFETY: forwarded contract.
    unsafe { model_ref(model) }.map_or(0, |m| m.model.outputs().len())
}

fn describe(io: &IoSchema, name: &CString) -> Option<KilnTensorInfo> {
    if io.dims.len() > KILN_MAX_RANK {
        return None;
    }
    let mut dims = [0i64; KILN_MAX_RANK];
    for (d, s) in dims.iter_mut().zip(&io.dims) {
        *d = s.map_or(-1, |n| n as i64);
    }
    Some(KilnTensorInfo {
        name: name.as_ptr(),
        dtype: KilnDType::of(io.dtype),
        rank: io.dims.len(),
        dims,
    })
}

/// Writes input or output `index`'s description.
///
/// # Safety
/// `model` is NULL or from `kiln_model_load`; `out` is NULL or writable.
unsafe fn io_info(
    model: *const KilnModel,
    output: bool,
    index: usize,
    out: *mut KilnTensorInfo,
) -> KilnStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let Some(m) = (unsafe { model_ref(model) }) else {
            return fail(KilnStatus::Usage, "a NULL model");
        };
        if out.is_null() {
            return fail(KilnStatus::Usage, "a NULL KilnTensorInfo pointer");
        }
        let (list, offset) = if output {
            (m.model.outputs(), m.model.inputs().len())
        } else {
            (m.model.inputs(), 0)
        };
        let what = if output { "output" } else { "input" };
        let Some(io) = list.get(index) else {
            let msg = format!(
                "{what} {index} does not exist (the model has {})",
                list.len()
            );
            return fail(KilnStatus::Usage, &msg);
        };
        let Some(info) = describe(io, &m.names[offset + index]) else {
            let msg = format!("{what} {index} has more than {KILN_MAX_RANK} dimensions");
            return fail(KilnStatus::Other, &msg);
        };
        // SAFETY: `out` is non-null and writable (the caller's contract).
        unsafe { out.write(info) };
        KilnStatus::Ok
    })
}

/// Describes input `index` (its name borrowed from the model).
///
/// # Safety
/// `model` is NULL or from `kiln_model_load`; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_model_input(
    model: *const KilnModel,
    index: usize,
    out: *mut KilnTensorInfo,
) -> KilnStatus {
    // SAFETY: forwarded contract.
    unsafe { io_info(model, false, index, out) }
}

/// Describes output `index` (its name borrowed from the model).
///
/// # Safety
/// `model` is NULL or from `kiln_model_load`; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_model_output(
    model: *const KilnModel,
    index: usize,
    out: *mut KilnTensorInfo,
) -> KilnStatus {
    // SAFETY: forwarded contract.
    unsafe { io_info(model, true, index, out) }
}

/// A session for `model` (one per thread), for `kiln_session_free`.
///
/// # Safety
/// `model` is NULL or from `kiln_model_load`; `out_session` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_session_new(
    model: *const KilnModel,
    out_session: *mut *mut KilnSession,
) -> KilnStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let Some(m) = (unsafe { model_ref(model) }) else {
            return fail(KilnStatus::Usage, "kiln_session_new: a NULL model");
        };
        if out_session.is_null() {
            return fail(KilnStatus::Usage, "kiln_session_new: a NULL out pointer");
        }
        let session = Box::new(KilnSession {
            session: session_of(&m.model),
            outputs: vec![],
            _model: Arc::clone(&m.model),
        });
        // SAFETY: non-null and writable (the caller's contract).
        unsafe { out_session.write(Box::into_raw(session)) };
        KilnStatus::Ok
    })
}

/// Frees a session (NULL: nothing), and with it its outputs.
///
/// # Safety
/// `session` came from `kiln_session_new` and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_session_free(session: *mut KilnSession) {
    if !session.is_null() {
        // SAFETY: from `Box::into_raw` in `kiln_session_new`, freed once.
        drop(unsafe { Box::from_raw(session) });
    }
}

/// Copies the caller's input descriptions into owned tensors.
///
/// # Safety
/// `inputs` points to `n` descriptions whose `dims` and `data` pointers
/// are valid for `rank` and `byte_len` elements.
unsafe fn read_inputs(inputs: *const KilnTensor, n: usize) -> Result<Vec<TensorValue>, String> {
    if n > 0 && inputs.is_null() {
        return Err("a NULL inputs array".into());
    }
    let list = if n == 0 {
        &[][..]
    } else {
        // SAFETY: `n` readable descriptions (the caller's contract).
        unsafe { std::slice::from_raw_parts(inputs, n) }
    };
    let mut out = Vec::with_capacity(n);
    for (i, t) in list.iter().enumerate() {
        if t.rank > KILN_MAX_RANK || (t.rank > 0 && t.dims.is_null()) {
            return Err(format!("input {i}: rank {} without dims", t.rank));
        }
        if t.byte_len > 0 && t.data.is_null() {
            return Err(format!("input {i}: NULL data"));
        }
        let shape = if t.rank == 0 {
            vec![]
        } else {
            // SAFETY: `rank` readable dims (the caller's contract).
            unsafe { std::slice::from_raw_parts(t.dims, t.rank) }.to_vec()
        };
        let data = if t.byte_len == 0 {
            vec![]
        } else {
            // SAFETY: `byte_len` readable bytes (the caller's contract).
            unsafe { std::slice::from_raw_parts(t.data, t.byte_len) }.to_vec()
        };
        let dtype = DType::from_u8(t.dtype as u8).ok_or(format!("input {i}: unknown dtype"))?;
        out.push(TensorValue { dtype, shape, data });
    }
    Ok(out)
}

/// Runs the model on `n_inputs` inputs in the model's input order. Every
/// input is checked against the schema first (dtype, shape and byte size,
/// batch, NaN/Inf, declared ranges): a bad one gives
/// `KILN_STATUS_INPUT_REJECTED` and a message naming it. The outputs stay in
/// the session until its next run (`kiln_session_output`).
///
/// # Safety
/// `session` is NULL or from `kiln_session_new`; `inputs` points to
/// `n_inputs` descriptions whose `dims` and `data` are valid for `rank`
/// entries and `byte_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_session_run(
    session: *mut KilnSession,
    inputs: *const KilnTensor,
    n_inputs: usize,
) -> KilnStatus {
    guard(|| {
        // SAFETY: NULL or a live session (the caller's contract).
        let Some(s) = (unsafe { session.as_mut() }) else {
            return fail(KilnStatus::Usage, "kiln_session_run: a NULL session");
        };
        // SAFETY: forwarded contract.
        let values = match unsafe { read_inputs(inputs, n_inputs) } {
            Ok(v) => v,
            Err(e) => return fail(KilnStatus::Usage, &format!("kiln_session_run: {e}")),
        };
        s.outputs.clear();
        let refs: Vec<&TensorValue> = values.iter().collect();
        match s.session.run(&refs) {
            Ok(outputs) => {
                s.outputs = outputs;
                KilnStatus::Ok
            }
            Err(e) => run_error(&e),
        }
    })
}

/// Output `index` of the session's last successful run, borrowed from the
/// session until its next run or free.
///
/// # Safety
/// `session` is NULL or from `kiln_session_new`; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_session_output(
    session: *const KilnSession,
    index: usize,
    out: *mut KilnOutput,
) -> KilnStatus {
    guard(|| {
        // SAFETY: NULL or a live session (the caller's contract).
        let Some(s) = (unsafe { session.as_ref() }) else {
            return fail(KilnStatus::Usage, "kiln_session_output: a NULL session");
        };
        if out.is_null() {
            return fail(KilnStatus::Usage, "kiln_session_output: a NULL out pointer");
        }
        let Some(t) = s.outputs.get(index) else {
            let msg = format!(
                "output {index} does not exist (the last run produced {}; run first)",
                s.outputs.len()
            );
            return fail(KilnStatus::Usage, &msg);
        };
        if t.shape.len() > KILN_MAX_RANK {
            return fail(
                KilnStatus::Other,
                &format!("output {index} has more than {KILN_MAX_RANK} dimensions"),
            );
        }
        let mut dims = [0usize; KILN_MAX_RANK];
        dims[..t.shape.len()].copy_from_slice(&t.shape);
        let view = KilnOutput {
            dtype: KilnDType::of(t.dtype),
            rank: t.shape.len(),
            dims,
            data: t.data.as_ptr(),
            byte_len: t.data.len(),
        };
        // SAFETY: non-null and writable (the caller's contract).
        unsafe { out.write(view) };
        KilnStatus::Ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The float hello_world from the corpus, compiled.
    fn artifact() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/corpus/tflite-micro/hello_world_float.tflite"
        );
        let src = std::fs::read(path).expect("corpus model");
        kiln_compiler::compile_model(&src, "hello_world_float.tflite", &Default::default())
            .expect("compiles")
            .bytes
    }

    /// A session outlives a freed model (it holds the model alive) and
    /// reuses its decoded graph and arena across runs.
    #[test]
    fn a_session_runs_after_its_model_is_freed() {
        let bytes = artifact();
        let (mut model, mut session) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: valid pointers and lengths throughout; each object is
        // freed once, the session after the model on purpose.
        unsafe {
            assert_eq!(
                kiln_model_load(bytes.as_ptr(), bytes.len(), &mut model),
                KilnStatus::Ok
            );
            assert_eq!(kiln_session_new(model, &mut session), KilnStatus::Ok);
            kiln_model_free(model);
            let dims = [1usize, 1];
            let mut last = None;
            for x in [0.5f32, 1.0, 0.5] {
                let data = x.to_le_bytes();
                let input = KilnTensor {
                    dtype: KilnDType::F32,
                    rank: 2,
                    dims: dims.as_ptr(),
                    data: data.as_ptr(),
                    byte_len: 4,
                };
                assert_eq!(kiln_session_run(session, &input, 1), KilnStatus::Ok);
                let mut out = KilnOutput {
                    dtype: KilnDType::U8,
                    rank: 0,
                    dims: [0; KILN_MAX_RANK],
                    data: std::ptr::null(),
                    byte_len: 0,
                };
                assert_eq!(kiln_session_output(session, 0, &mut out), KilnStatus::Ok);
                let y =
                    f32::from_le_bytes(std::slice::from_raw_parts(out.data, 4).try_into().unwrap());
                if x == 0.5 {
                    // The same input gives the same output on a reused arena.
                    assert!(last.is_none_or(|l: f32| l == y), "{last:?} then {y}");
                    last = Some(y);
                }
            }
            kiln_session_free(session);
        }
    }
}
