//! `kiln compile M --target wasm-module`: one self-contained `.wasm` with
//! the engine and the model.
//!
//! The engine half is `runtime-wasm/module` built for wasm32 (by this
//! crate's build script, when the wasm32 target is installed) and embedded
//! in the `kiln` binary. [`link`] appends to it, past its own initial
//! memory, the artifact, the arena and an error buffer, grows the memory's
//! minimum to cover them, and writes their places into the module's
//! exported `KILN_LOCATOR` static, all with active data segments. The
//! module's code is not touched.

use anyhow::{Context, Result, bail};

/// The prebuilt engine module (empty when this `kiln` was built without
/// the wasm32 target).
pub const TEMPLATE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kiln_wasm_module.wasm"));

const PAGE: usize = 65536;
/// Bytes reserved for error messages.
const ERROR_BYTES: usize = 512;

fn leb_u32(b: &[u8], pos: &mut usize) -> Result<u32> {
    let mut out = 0u64;
    for shift in (0..35).step_by(7) {
        let byte = *b.get(*pos).context("truncated LEB128")?;
        *pos += 1;
        out |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(out).context("LEB128 overflows u32");
        }
    }
    bail!("LEB128 longer than 5 bytes")
}

fn leb_i32(b: &[u8], pos: &mut usize) -> Result<i32> {
    let mut out = 0i64;
    let mut shift = 0;
    loop {
        let byte = *b.get(*pos).context("truncated LEB128")?;
        *pos += 1;
        out |= i64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            if shift < 64 && byte & 0x40 != 0 {
                out |= -1i64 << shift;
            }
            return i32::try_from(out).context("LEB128 overflows i32");
        }
        if shift >= 35 {
            bail!("LEB128 longer than 5 bytes");
        }
    }
}

fn put_u32(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    let mut v = i64::from(v);
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
        out.push(if done { byte } else { byte | 0x80 });
        if done {
            return;
        }
    }
}

fn name<'a>(b: &'a [u8], pos: &mut usize) -> Result<&'a [u8]> {
    let n = leb_u32(b, pos)? as usize;
    let s = b.get(*pos..*pos + n).context("truncated name")?;
    *pos += n;
    Ok(s)
}

/// The module's sections, in order: (id, payload).
fn sections(wasm: &[u8]) -> Result<Vec<(u8, &[u8])>> {
    if wasm.get(..8) != Some(b"\0asm\x01\0\0\0") {
        bail!("not a wasm module (version 1)");
    }
    let mut pos = 8;
    let mut out = vec![];
    while pos < wasm.len() {
        let id = wasm[pos];
        pos += 1;
        let len = leb_u32(wasm, &mut pos)? as usize;
        let payload = wasm.get(pos..pos + len).context("truncated section")?;
        out.push((id, payload));
        pos += len;
    }
    Ok(out)
}

fn section<'a>(secs: &[(u8, &'a [u8])], id: u8) -> Option<&'a [u8]> {
    secs.iter().find(|s| s.0 == id).map(|s| s.1)
}

/// Address of the exported global `symbol` (a static's address).
fn exported_static(secs: &[(u8, &[u8])], symbol: &str) -> Result<u32> {
    if let Some(imports) = section(secs, 2) {
        let mut p = 0;
        let n = leb_u32(imports, &mut p)?;
        for _ in 0..n {
            name(imports, &mut p)?;
            name(imports, &mut p)?;
            let kind = *imports.get(p).context("truncated import")?;
            p += 1;
            match kind {
                0 => {
                    leb_u32(imports, &mut p)?;
                }
                3 => bail!("the engine module imports globals; it must import nothing"),
                _ => bail!("the engine module has imports; it must import nothing"),
            }
        }
    }
    let exports = section(secs, 7).context("the engine module has no exports")?;
    let mut p = 0;
    let mut index = None;
    for _ in 0..leb_u32(exports, &mut p)? {
        let n = name(exports, &mut p)?;
        let kind = *exports.get(p).context("truncated export")?;
        p += 1;
        let idx = leb_u32(exports, &mut p)?;
        if n == symbol.as_bytes() && kind == 3 {
            index = Some(idx);
        }
    }
    let index = index.with_context(|| format!("the engine module does not export {symbol}"))?;
    let globals = section(secs, 6).context("the engine module has no globals")?;
    let mut p = 0;
    let n = leb_u32(globals, &mut p)?;
    for g in 0..n {
        p += 2; // value type, mutability
        let op = *globals.get(p).context("truncated global")?;
        p += 1;
        if op != 0x41 {
            bail!("global {g}: initializer is not i32.const");
        }
        let v = leb_i32(globals, &mut p)?;
        if globals.get(p) != Some(&0x0b) {
            bail!("global {g}: initializer is not a single constant");
        }
        p += 1;
        if g == index {
            return u32::try_from(v).context("negative static address");
        }
    }
    bail!("global {index} not found")
}

/// The single memory's limits: (flags, min pages, max pages).
fn memory(secs: &[(u8, &[u8])]) -> Result<(u8, u32, Option<u32>)> {
    let m = section(secs, 5).context("the engine module has no memory")?;
    let mut p = 0;
    if leb_u32(m, &mut p)? != 1 {
        bail!("the engine module must have exactly one memory");
    }
    let flags = *m.get(p).context("truncated memory")?;
    p += 1;
    if flags & !1 != 0 {
        bail!("unsupported memory flags {flags:#x} (shared or 64-bit)");
    }
    let min = leb_u32(m, &mut p)?;
    let max = if flags & 1 == 1 {
        Some(leb_u32(m, &mut p)?)
    } else {
        None
    };
    Ok((flags, min, max))
}

fn segment(out: &mut Vec<u8>, at: u32, bytes: &[u8]) {
    out.push(0); // active, memory 0
    out.push(0x41); // i32.const
    put_i32(out, at as i32);
    out.push(0x0b);
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// Links `artifact` (checked `.kiln` bytes whose arena needs `arena`
/// bytes) into the engine module `template`.
pub fn link(template: &[u8], artifact: &[u8], arena: usize) -> Result<Vec<u8>> {
    if template.is_empty() {
        bail!(
            "this kiln was built without the wasm32 target, so it cannot emit wasm modules: \
             run `rustup target add wasm32-unknown-unknown` and rebuild kiln"
        );
    }
    let secs = sections(template).context("the embedded engine module")?;
    let locator = exported_static(&secs, "KILN_LOCATOR")?;
    let (flags, min, max) = memory(&secs)?;
    let align = |x: usize| x.div_ceil(16) * 16;
    let model_at = min as usize * PAGE;
    let arena_at = align(model_at + artifact.len());
    let error_at = align(arena_at + arena);
    let end = error_at + ERROR_BYTES;
    let pages = end.div_ceil(PAGE);
    if end > u32::MAX as usize || pages > 65536 {
        bail!("the model and its arena need {end} bytes: more than a wasm32 memory holds");
    }
    let mut locator_bytes = vec![];
    for v in [
        model_at,
        artifact.len(),
        arena_at,
        arena,
        error_at,
        ERROR_BYTES,
    ] {
        locator_bytes.extend_from_slice(&(v as u32).to_le_bytes());
    }

    let mut out = template[..8].to_vec();
    let emit = |out: &mut Vec<u8>, id: u8, payload: &[u8]| {
        out.push(id);
        put_u32(out, payload.len() as u32);
        out.extend_from_slice(payload);
    };
    let mut wrote_data = false;
    for &(id, payload) in &secs {
        match id {
            5 => {
                let mut m = vec![1, flags];
                put_u32(&mut m, pages as u32);
                if let Some(max) = max {
                    put_u32(&mut m, max.max(pages as u32));
                }
                emit(&mut out, 5, &m);
            }
            12 => {
                let mut p = 0;
                let n = leb_u32(payload, &mut p)?;
                let mut d = vec![];
                put_u32(&mut d, n + 2);
                emit(&mut out, 12, &d);
            }
            11 => {
                let mut p = 0;
                let n = leb_u32(payload, &mut p)?;
                let mut d = vec![];
                put_u32(&mut d, n + 2);
                d.extend_from_slice(&payload[p..]);
                // Later segments win: the locator's zeros are overwritten.
                segment(&mut d, model_at as u32, artifact);
                segment(&mut d, locator, &locator_bytes);
                emit(&mut out, 11, &d);
                wrote_data = true;
            }
            // Custom sections (names, producers, target features) are
            // for tools; the shipped module drops them.
            0 => {}
            _ => emit(&mut out, id, payload),
        }
    }
    if !wrote_data {
        // Every engine build has data (its constants and statics).
        bail!("the engine module has no data section");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_round_trips() {
        for v in [0u32, 1, 63, 64, 127, 128, 300, 65536, u32::MAX] {
            let mut b = vec![];
            put_u32(&mut b, v);
            let mut p = 0;
            assert_eq!(leb_u32(&b, &mut p).unwrap(), v);
            assert_eq!(p, b.len());
        }
        for v in [0i32, 1, -1, 63, 64, -64, -65, 1 << 20, i32::MIN, i32::MAX] {
            let mut b = vec![];
            put_i32(&mut b, v);
            let mut p = 0;
            assert_eq!(leb_i32(&b, &mut p).unwrap(), v);
        }
        assert!(leb_u32(&[0x80, 0x80], &mut 0).is_err());
        assert!(leb_u32(&[0xff; 6], &mut 0).is_err());
    }

    #[test]
    fn malformed_templates_are_errors() {
        assert!(link(b"", b"x", 16).is_err_and(|e| e.to_string().contains("wasm32 target")));
        assert!(link(b"not wasm at all", b"x", 16).is_err());
        // A valid, empty module has no memory or exports.
        assert!(link(b"\0asm\x01\0\0\0", b"x", 16).is_err());
        // A section that claims more bytes than there are.
        assert!(link(b"\0asm\x01\0\0\0\x05\x7f\x01", b"x", 16).is_err());
    }
}
