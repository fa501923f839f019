//! The engine half of a standalone Kiln wasm module (`kiln compile M
//! --target wasm-module -o m.wasm`): a `no_std`, allocation-free program
//! with a C-like ABI for hosts without JavaScript (wasmtime, wasmer,
//! serverless and edge runtimes).
//!
//! The build leaves this module's memory layout open; the CLI's linker
//! (`kiln_cli::wasm_module`) appends the artifact, the arena and an error
//! buffer past the module's own memory and writes their places into the
//! exported static [`KILN_LOCATOR`]. A host then:
//!
//! 1. writes each input (little-endian, one sample) at `kiln_input_ptr(i)`,
//!    `kiln_input_size(i)` bytes;
//! 2. calls `kiln_run()`: 0 on success, else the `kiln` CLI's exit code for
//!    the failure (3 invalid model, 4 input rejected), with a message of
//!    `kiln_error_len()` bytes at `kiln_error_ptr()`;
//! 3. reads each output at `kiln_output_ptr(i)`, `kiln_output_size(i)`.
//!
//! Inputs are checked like every Kiln runtime does: float NaN/Inf and the
//! schema's declared ranges are rejected before anything runs.
//!
//! Architecture invariant: depends on `format` and `engine` only; no
//! `#[global_allocator]` (so nothing it links can allocate: the build would
//! fail), no std on wasm32. The only `unsafe` is reading the layout and
//! the memory regions the linker reserved.
#![cfg_attr(target_arch = "wasm32", no_std)]

use core::fmt::Write;
use kiln_engine::{InputFault, Plan};
use kiln_format::{DType, View};

/// Where the linker put things: artifact offset and length, arena offset and
/// length, error buffer offset and length (bytes of linear memory). All zero
/// in the template, which then reports that no model was linked.
#[unsafe(no_mangle)]
pub static KILN_LOCATOR: [u32; 6] = [0; 6];

/// Error codes, as the `kiln` CLI's exit codes.
const OK: i32 = 0;
const INVALID_MODEL: i32 = 3;
const INPUT_REJECTED: i32 = 4;

#[derive(Debug, Clone, Copy)]
struct Layout {
    model: (usize, usize),
    arena: (usize, usize),
    error: (usize, usize),
}

fn layout() -> Layout {
    // SAFETY: KILN_LOCATOR is a valid, aligned static; the read is volatile
    // because the linker rewrites its bytes after compilation, so the
    // compiler must not fold its zero initializer into the code.
    let l = unsafe { core::ptr::read_volatile(&raw const KILN_LOCATOR) };
    let r = |k: usize| (l[k] as usize, l[k + 1] as usize);
    Layout {
        model: r(0),
        arena: r(2),
        error: r(4),
    }
}

#[cfg(target_arch = "wasm32")]
fn region(at: (usize, usize)) -> &'static mut [u8] {
    if at.1 == 0 {
        return &mut [];
    }
    // SAFETY: the linker reserved [at.0, at.0 + at.1) of linear memory for
    // this region (it grew the memory's minimum size to cover it), nothing
    // else in the module uses it, and the host is single-threaded and only
    // touches it between calls, so the slice is valid and unaliased while
    // an exported function runs.
    unsafe { core::slice::from_raw_parts_mut(at.0 as *mut u8, at.1) }
}

#[cfg(not(target_arch = "wasm32"))]
fn region(_: (usize, usize)) -> &'static mut [u8] {
    // Host builds (clippy, docs) have no linked memory layout.
    &mut []
}

/// A `core::fmt::Write` into the error buffer that truncates.
struct ErrorBuf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for ErrorBuf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

static mut ERROR_LEN: u32 = 0;

fn set_error(code: i32, msg: core::fmt::Arguments<'_>) -> i32 {
    let mut w = ErrorBuf {
        buf: region(layout().error),
        len: 0,
    };
    let _ = w.write_fmt(msg);
    // SAFETY: wasm modules here are single-threaded; ERROR_LEN is only
    // accessed by exported functions, never concurrently.
    unsafe { ERROR_LEN = w.len as u32 };
    code
}

fn view() -> Result<View<'static>, i32> {
    let l = layout();
    if l.model.1 == 0 {
        return Err(set_error(
            INVALID_MODEL,
            format_args!(
                "no model linked: make this module with `kiln compile M --target wasm-module`"
            ),
        ));
    }
    View::parse(region(l.model)).map_err(|e| set_error(INVALID_MODEL, format_args!("{e}")))
}

/// Place and size of graph input (`output == false`) or output `i`.
fn io(i: u32, output: bool) -> Option<(usize, usize)> {
    let v = view().ok()?;
    let ids = if output { v.outputs() } else { v.inputs() };
    let t = v.tensor(ids.get(i as usize)? as usize).ok()?;
    Some((layout().arena.0 + t.offset as usize, t.byte_len as usize))
}

#[unsafe(no_mangle)]
pub extern "C" fn kiln_input_count() -> u32 {
    view().map_or(0, |v| v.inputs().len() as u32)
}

#[unsafe(no_mangle)]
pub extern "C" fn kiln_output_count() -> u32 {
    view().map_or(0, |v| v.outputs().len() as u32)
}

/// Address of input `i` in linear memory (0 when out of range).
#[unsafe(no_mangle)]
pub extern "C" fn kiln_input_ptr(i: u32) -> u32 {
    io(i, false).map_or(0, |p| p.0 as u32)
}

/// Bytes of input `i` (one sample).
#[unsafe(no_mangle)]
pub extern "C" fn kiln_input_size(i: u32) -> u32 {
    io(i, false).map_or(0, |p| p.1 as u32)
}

#[unsafe(no_mangle)]
pub extern "C" fn kiln_output_ptr(i: u32) -> u32 {
    io(i, true).map_or(0, |p| p.0 as u32)
}

#[unsafe(no_mangle)]
pub extern "C" fn kiln_output_size(i: u32) -> u32 {
    io(i, true).map_or(0, |p| p.1 as u32)
}

#[unsafe(no_mangle)]
pub extern "C" fn kiln_error_ptr() -> u32 {
    layout().error.0 as u32
}

#[unsafe(no_mangle)]
pub extern "C" fn kiln_error_len() -> u32 {
    // SAFETY: see set_error.
    unsafe { ERROR_LEN }
}

/// Checks the artifact's checksum and plan; `kiln_run` does it on first
/// use. Returns 0 or 3 (invalid model).
#[unsafe(no_mangle)]
pub extern "C" fn kiln_check() -> i32 {
    match view().and_then(|v| {
        v.verify_checksum()
            .map_err(|e| set_error(INVALID_MODEL, format_args!("{e}")))?;
        Plan::new(v).map_err(|e| set_error(INVALID_MODEL, format_args!("{e}")))?;
        Ok(())
    }) {
        Ok(()) => OK,
        Err(code) => code,
    }
}

static mut CHECKED: bool = false;

/// Runs the model on the inputs in place; see the crate docs.
#[unsafe(no_mangle)]
pub extern "C" fn kiln_run() -> i32 {
    // SAFETY: see set_error (single-threaded module state).
    if !unsafe { CHECKED } {
        let code = kiln_check();
        if code != OK {
            return code;
        }
        // SAFETY: as above.
        unsafe { CHECKED = true };
    }
    match run() {
        Ok(()) => {
            // SAFETY: as above.
            unsafe { ERROR_LEN = 0 };
            OK
        }
        Err(code) => code,
    }
}

fn run() -> Result<(), i32> {
    let v = view()?;
    // `kiln_run` ran `kiln_check` (`Plan::new`) on these bytes first.
    let plan = Plan::trusted(v);
    let arena = region(layout().arena);
    check_inputs(&v, arena)?;
    plan.run(arena)
        .map_err(|e| set_error(INVALID_MODEL, format_args!("{e}")))
}

/// NaN/Inf and declared ranges, per float32 input, as the other runtimes.
fn check_inputs(v: &View<'_>, arena: &[u8]) -> Result<(), i32> {
    let bad = |e: kiln_format::FormatError| set_error(INVALID_MODEL, format_args!("{e}"));
    for spec in v.meta().inputs.iter() {
        let spec = spec.map_err(bad)?;
        if spec.dtype != DType::F32 {
            continue;
        }
        let t = v.tensor(spec.tensor as usize).map_err(bad)?;
        let start = t.offset as usize;
        let Some(bytes) = arena.get(start..start + t.byte_len as usize) else {
            return Err(set_error(
                INVALID_MODEL,
                format_args!("input outside the arena"),
            ));
        };
        let fault = kiln_engine::screen_f32_input(bytes, Some(spec.ranges))
            .map_err(|e| set_error(INVALID_MODEL, format_args!("{e}")))?;
        let why = match fault {
            None => continue,
            Some((i, InputFault::NonFinite)) => (i, "is NaN or infinite"),
            Some((i, InputFault::OutOfRange)) => (i, "is outside the declared range"),
        };
        return Err(set_error(
            INPUT_REJECTED,
            format_args!(
                "input '{}' rejected: element {} {}",
                spec.name, why.0, why.1
            ),
        ));
    }
    Ok(())
}

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
