//! Runs the embedded artifact on the embedded input and prints one JSON
//! line over semihosting: `{"outputs": {name: [values]}, "arena": bytes,
//! "arena_touched": bytes, "stack": bytes}` (the arena the plan reserves,
//! the furthest byte of it a run writes, and the stack's high-water mark;
//! with the `dsp-check` feature also `"dsp_mismatches"`, the DSP kernels'
//! self-check against the portable ones);
//! a failure prints `{"error": "..."}` and exits with status 1.
//! There is no `#[global_allocator]`: nothing here allocates.
#![no_std]
#![no_main]

use core::fmt::Write;
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use kiln_runtime_embedded::{Arena, Error, Model};

include!(concat!(env!("OUT_DIR"), "/model.rs"));

/// 16-byte alignment for flash-resident data (the engine reads weights in
/// place as f32/i32).
#[repr(C, align(16))]
struct Aligned<T>(T);

static MODEL: Aligned<[u8; MODEL_LEN]> =
    Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.kiln")));
static INPUT: Aligned<[u8; INPUT_LEN]> =
    Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/input.bin")));

/// Marks the start of the measured window (instruction counting by a QEMU
/// plugin keys on this symbol's address).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn bench_begin() {
    cortex_m::asm::nop();
}

/// Marks the end of the measured window (a body that differs from
/// `bench_begin`'s, so the two are not folded into one address).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn bench_end() {
    cortex_m::asm::nop();
    cortex_m::asm::nop();
}

#[entry]
fn main() -> ! {
    let mut out = hio::hstdout().ok();
    let code = match run(&mut out) {
        Ok(()) => debug::EXIT_SUCCESS,
        Err(e) => {
            if let Some(o) = out.as_mut() {
                let _ = writeln!(o, "{{\"error\": \"{e}\"}}");
            }
            debug::EXIT_FAILURE
        }
    };
    debug::exit(code);
    loop {
        cortex_m::asm::bkpt();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if let Ok(mut o) = hio::hstdout() {
        let _ = writeln!(o, "{{\"error\": \"panic: {info}\"}}");
    }
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::bkpt();
    }
}

fn run(out: &mut Option<hio::HostStream>) -> Result<(), Error> {
    // `singleton!` hands out the static once; `run` is called once.
    let Some(arena) = cortex_m::singleton!(: Arena<ARENA_SIZE> = Arena::new()) else {
        return Ok(());
    };
    let model = Model::new_ops::<OPS>(&MODEL.0)?;
    // The arena actually touched: paint it with two patterns, run on each,
    // and take the furthest byte either run changed (a byte that happens
    // to be written with its paint value cannot hide under both).
    let mut touched = 0;
    for paint in [0xA5, 0x5A] {
        arena.0.fill(paint);
        model.run_ops::<OPS>(&mut arena.0, &[&INPUT.0])?;
        let last = arena
            .0
            .iter()
            .rposition(|&b| b != paint)
            .map_or(0, |i| i + 1);
        touched = touched.max(last);
    }
    // The stack's high-water mark of one run: paint the free RAM between
    // the statics and the stack pointer, run, find the deepest change.
    let stack = StackProbe::paint();
    // An empty window first, so the plugin's per-window cost can be
    // subtracted.
    bench_begin();
    bench_end();
    bench_begin();
    let outputs = model.run_ops::<OPS>(&mut arena.0, &[&INPUT.0])?;
    bench_end();
    let stack_used = stack.used();
    let Some(o) = out.as_mut() else {
        return Ok(());
    };
    let _ = write!(o, "{{\"outputs\": {{");
    for i in 0..model.output_count() {
        let info = model.output(i)?;
        let bytes = outputs.get(i)?;
        let _ = write!(
            o,
            "{}\"{}\": [",
            if i > 0 { ", " } else { "" },
            model.output_name(i)?
        );
        print_values(o, info.dtype, bytes);
        let _ = write!(o, "]");
    }
    let _ = write!(
        o,
        "}}, \"arena\": {ARENA_SIZE}, \"arena_touched\": {touched}, \"stack\": {stack_used}"
    );
    #[cfg(feature = "dsp-check")]
    let _ = write!(
        o,
        ", \"dsp_mismatches\": {}",
        kiln_kernels::compact::dsp_self_check()
    );
    let _ = writeln!(o, "}}");
    Ok(())
}

/// The stack's high-water mark (bytes below the initial stack pointer,
/// cortex-m-rt's `_stack_start`) from painting the RAM between the end of
/// the statics and the stack pointer of [`StackProbe::paint`].
struct StackProbe {
    /// First free byte after .bss (cortex-m-rt's `__sheap`).
    bottom: usize,
    /// Stack pointer at `paint`, minus a margin for `paint`'s own frame.
    top: usize,
    /// The initial stack pointer (the stack grows down from it).
    start: usize,
}

const STACK_PAINT: u8 = 0xC3;

impl StackProbe {
    #[inline(never)]
    fn paint() -> StackProbe {
        unsafe extern "C" {
            static __sheap: u8;
            static _stack_start: u8;
        }
        // Only the addresses are taken (cortex-m-rt's linker script
        // defines both symbols).
        let (bottom, start) = (
            core::ptr::addr_of!(__sheap) as usize,
            core::ptr::addr_of!(_stack_start) as usize,
        );
        let top = cortex_m::register::msp::read() as usize - 64;
        for a in bottom..top {
            // SAFETY: [__sheap, msp - 64) is RAM no one uses: above the
            // statics (there is no heap), below the live stack frames.
            unsafe { core::ptr::write_volatile(a as *mut u8, STACK_PAINT) };
        }
        StackProbe { bottom, top, start }
    }

    /// Deepest stack use since boot, in bytes (exact to the byte for what
    /// ran after `paint`).
    fn used(&self) -> usize {
        let mut a = self.bottom;
        // SAFETY: reads the range `paint` wrote; nothing else lives there.
        while a < self.top && unsafe { core::ptr::read_volatile(a as *const u8) } == STACK_PAINT {
            a += 1;
        }
        self.start - a
    }
}

/// The values of one output as JSON numbers.
fn print_values(o: &mut hio::HostStream, dtype: kiln_runtime_embedded::DType, bytes: &[u8]) {
    use kiln_runtime_embedded::DType;
    let size = dtype.size().max(1);
    for (k, c) in bytes.chunks_exact(size).enumerate() {
        let sep = if k > 0 { ", " } else { "" };
        let _ = match dtype {
            DType::I8 => write!(o, "{sep}{}", c[0] as i8),
            DType::U8 | DType::Bool => write!(o, "{sep}{}", c[0]),
            DType::I32 => write!(o, "{sep}{}", i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            DType::F32 => write!(o, "{sep}{:e}", f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            _ => write!(o, "{sep}null"),
        };
    }
}
