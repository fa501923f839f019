//! The firmware's A/B model slots (`kiln_runtime_embedded::ota`) on a RAM
//! NOR flash: install, trial and confirm, automatic fallback after
//! unconfirmed boots, refusal of tampered, unsigned, replayed and
//! oversized updates, and a power cut while the boot record is written.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use kiln_protocol::ota::{ManifestBody, SignedManifest};
use kiln_runtime_embedded::Model;
use kiln_runtime_embedded::ota::{Layout, SlotError, Slots, TRIAL_BOOTS};

const ERASE: usize = 4096;
const SLOT: u32 = 64 * 1024;

/// NOR flash in RAM (16-byte aligned, as memory-mapped flash is): erase
/// sets 0xFF, a write can only clear bits; the `cut`-th write (counted in
/// `writes`) lands half-way and fails: a power cut.
#[derive(Debug)]
struct Ram {
    mem: Vec<u128>,
    writes: std::rc::Rc<std::cell::Cell<usize>>,
    cut: std::rc::Rc<std::cell::Cell<Option<usize>>>,
}

#[derive(Debug)]
struct Cut;

impl NorFlashError for Cut {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::Other
    }
}

impl Ram {
    fn new(len: usize) -> Ram {
        Ram {
            mem: vec![u128::MAX; len / 16],
            writes: Default::default(),
            cut: Default::default(),
        }
    }
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.mem)
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.mem)
    }
}

impl ErrorType for Ram {
    type Error = Cut;
}

impl ReadNorFlash for Ram {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Cut> {
        let at = offset as usize;
        bytes.copy_from_slice(&self.bytes()[at..at + bytes.len()]);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.mem.len() * 16
    }
}

impl NorFlash for Ram {
    const WRITE_SIZE: usize = 8;
    const ERASE_SIZE: usize = ERASE;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Cut> {
        assert!((from as usize).is_multiple_of(ERASE) && (to as usize).is_multiple_of(ERASE));
        self.bytes_mut()[from as usize..to as usize].fill(0xff);
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Cut> {
        assert!(
            (offset as usize).is_multiple_of(8) && bytes.len().is_multiple_of(8),
            "unaligned write"
        );
        self.writes.set(self.writes.get() + 1);
        let torn = self.cut.get() == Some(self.writes.get());
        let lands = if torn { bytes.len() / 2 } else { bytes.len() };
        for (m, b) in self.bytes_mut()[offset as usize..]
            .iter_mut()
            .zip(&bytes[..lands])
        {
            assert_eq!(*m, 0xff, "a write to flash that was not erased");
            *m = *b;
        }
        if torn { Err(Cut) } else { Ok(()) }
    }
}

const LAYOUT: Layout = Layout {
    slots: [0, SLOT],
    slot_len: SLOT,
    records: [2 * SLOT, 2 * SLOT + ERASE as u32],
};
const RELEASE: [u8; 32] = [1; 32];
const SERVICE: [u8; 32] = [2; 32];

fn public(secret: &[u8; 32]) -> [u8; 32] {
    kiln_format::public_key(secret)
}

fn artifact(version: &str) -> Vec<u8> {
    let onnx = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/corpus/sklearn/logreg_iris.onnx"),
    )
    .unwrap();
    let opts = kiln_compiler::Options {
        version: Some(version.into()),
        ..Default::default()
    };
    kiln_compiler::compile_model(&onnx, "iris", &opts)
        .unwrap()
        .bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A signed manifest for `bytes` at `serial` (its strings leaked: a
/// test's lifetime).
fn manifest(bytes: &[u8], version: &str, serial: u64) -> SignedManifest<'static> {
    use sha2::Digest;
    let sha: &'static str = Box::leak(hex(&sha2::Sha256::digest(bytes)).into_boxed_str());
    let version: &'static str = Box::leak(version.to_string().into_boxed_str());
    let body = ManifestBody {
        model: "iris",
        channel: "stable",
        serial,
        expires: 2_000,
        version,
        sha256: sha,
        length: bytes.len() as u64,
    };
    let (k, s) = (
        Box::leak(Box::new([0u8; 16])),
        Box::leak(Box::new([0u8; 128])),
    );
    let (key_id, signature) = kiln_protocol::ota::sign(&body, &SERVICE, k, s).unwrap();
    SignedManifest {
        signed: body,
        key_id,
        signature,
    }
}

const TARGET: (&str, &str) = ("iris", "stable");

/// Downloads `bytes` into the free slot in uneven chunks; the slot.
fn install(
    slots: &mut Slots<Ram>,
    m: &SignedManifest<'_>,
    bytes: &[u8],
) -> Result<usize, SlotError> {
    slots.begin(m, &[public(&SERVICE)], TARGET, 1_000)?;
    let mut rest = bytes;
    let mut k = 0;
    while !rest.is_empty() {
        let n = [7usize, 100, 4093, 1][k % 4].min(rest.len());
        slots.write(&rest[..n])?;
        rest = &rest[n..];
        k += 1;
    }
    assert_eq!(slots.received() as usize, bytes.len());
    slots.finish(&[public(&RELEASE)])
}

/// The model in `slot`, straight from (RAM) flash, checked against the
/// release key (and refused under another), runs.
fn runs(flash: &Ram, slot: usize, len: u32) -> bool {
    let at = LAYOUT.slots[slot] as usize;
    let bytes = &flash.bytes()[at..at + len as usize];
    assert!(matches!(
        Model::new_trusted(bytes, &[public(&[9; 32])]),
        Err(kiln_runtime_embedded::Error::InvalidModel(
            kiln_engine::EngineError::Format(kiln_format::FormatError::UntrustedKey(_))
        ))
    ));
    let model = Model::new_trusted(bytes, &[public(&RELEASE)]).unwrap();
    let mut arena = vec![0u128; model.arena_size().div_ceil(16)];
    let x: Vec<u8> = [5.1f32, 3.5, 1.4, 0.2]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    model
        .run(bytemuck::cast_slice_mut(&mut arena), &[&x])
        .is_ok()
}

#[test]
fn updates_go_to_the_free_slot_on_trial_and_fall_back_unconfirmed() {
    let v1 = kiln_format::sign(&artifact("1"), &RELEASE).unwrap();
    let v2 = kiln_format::sign(&artifact("2"), &RELEASE).unwrap();
    let mut slots = Slots::open(Ram::new(3 * SLOT as usize), LAYOUT).unwrap();
    assert_eq!(slots.boot().unwrap(), (0, 0), "nothing installed");

    // Version 1 into slot 1 (the free one), committed, confirmed.
    let m1 = manifest(&v1, "1", 1);
    assert_eq!(install(&mut slots, &m1, &v1), Ok(1));
    slots.commit().unwrap();
    let mut slots = Slots::open(slots.release(), LAYOUT).unwrap();
    let (slot, len) = slots.boot().unwrap();
    assert_eq!((slot, len as usize), (1, v1.len()));
    assert!(slots.on_trial());
    let flash = slots.release();
    assert!(runs(&flash, slot, len));
    let mut slots = Slots::open(flash, LAYOUT).unwrap();
    slots.confirm().unwrap();
    assert!(!slots.on_trial());

    // Version 2 into slot 0, never confirmed: TRIAL_BOOTS boots on it,
    // then back to version 1 by itself, and version 2 is refused.
    let m2 = manifest(&v2, "2", 2);
    assert_eq!(install(&mut slots, &m2, &v2), Ok(0));
    slots.commit().unwrap();
    let mut flash = slots.release();
    for boot in 0..TRIAL_BOOTS {
        let mut s = Slots::open(flash, LAYOUT).unwrap();
        assert_eq!(s.boot().unwrap().0, 0, "trial boot {boot}");
        flash = s.release();
    }
    let mut slots = Slots::open(flash, LAYOUT).unwrap();
    assert_eq!(slots.boot().unwrap(), (1, v1.len() as u32), "fell back");
    assert!(!slots.on_trial());
    assert_eq!(
        install(&mut slots, &manifest(&v2, "2", 3), &v2),
        Err(SlotError::Refused)
    );

    // A manual revert (first inferences failed) goes back at once.
    let v3 = kiln_format::sign(&artifact("3"), &RELEASE).unwrap();
    assert_eq!(install(&mut slots, &manifest(&v3, "3", 4), &v3), Ok(0));
    slots.commit().unwrap();
    assert_eq!(slots.boot().unwrap().0, 0);
    slots.revert().unwrap();
    assert_eq!(slots.boot().unwrap().0, 1);
    assert_eq!(slots.serial(), 4);
}

#[test]
fn bad_updates_are_refused_and_a_power_cut_keeps_the_last_record() {
    let v1 = kiln_format::sign(&artifact("1"), &RELEASE).unwrap();
    let mut slots = Slots::open(Ram::new(3 * SLOT as usize), LAYOUT).unwrap();
    assert_eq!(install(&mut slots, &manifest(&v1, "1", 5), &v1), Ok(1));
    slots.commit().unwrap();
    slots.confirm().unwrap();

    // A replayed manifest (serial below 5); one signed by another key.
    let v2 = kiln_format::sign(&artifact("2"), &RELEASE).unwrap();
    assert!(matches!(
        install(&mut slots, &manifest(&v2, "2", 4), &v2),
        Err(SlotError::Manifest(
            kiln_protocol::ota::OtaError::Replayed { .. }
        ))
    ));
    let mut forged = manifest(&v2, "2", 6);
    forged.signed.version = "9";
    assert!(matches!(
        install(&mut slots, &forged, &v2),
        Err(SlotError::Manifest(
            kiln_protocol::ota::OtaError::BadSignature
        ))
    ));
    // Other bytes than the manifest's; an unsigned artifact; one signed
    // by a key the device does not trust; too large.
    let mut tampered = v2.clone();
    tampered[500] ^= 1;
    let m = manifest(&v2, "2", 6);
    slots.begin(&m, &[public(&SERVICE)], TARGET, 1_000).unwrap();
    slots.write(&tampered).unwrap();
    assert_eq!(slots.finish(&[public(&RELEASE)]), Err(SlotError::Tampered));
    let unsigned = artifact("2");
    assert!(matches!(
        install(&mut slots, &manifest(&unsigned, "2", 6), &unsigned),
        Err(SlotError::Signature(kiln_format::FormatError::Unsigned))
    ));
    let stranger = kiln_format::sign(&artifact("2"), &[9; 32]).unwrap();
    assert!(matches!(
        install(&mut slots, &manifest(&stranger, "2", 6), &stranger),
        Err(SlotError::Signature(
            kiln_format::FormatError::UntrustedKey(_)
        ))
    ));
    let huge = vec![0u8; SLOT as usize + 1];
    assert!(matches!(
        install(&mut slots, &manifest(&huge, "2", 6), &huge),
        Err(SlotError::TooLarge { .. })
    ));
    // None of that moved the device off version 1.
    assert_eq!(slots.boot().unwrap(), (1, v1.len() as u32));

    // A good update whose commit is cut by a power loss half-way through
    // its boot record: after the restart the device boots version 1.
    assert_eq!(install(&mut slots, &manifest(&v2, "2", 6), &v2), Ok(0));
    let flash = slots.release();
    let (writes, cut) = (flash.writes.clone(), flash.cut.clone());
    let mut slots = Slots::open(flash, LAYOUT).unwrap();
    assert_eq!(install(&mut slots, &manifest(&v2, "2", 6), &v2), Ok(0));
    cut.set(Some(writes.get() + 1));
    assert_eq!(slots.commit(), Err(SlotError::Flash));
    cut.set(None);
    let mut slots = Slots::open(slots.release(), LAYOUT).unwrap();
    assert_eq!(slots.boot().unwrap(), (1, v1.len() as u32));
    // And the same commit, uncut, then moves it to version 2.
    assert_eq!(install(&mut slots, &manifest(&v2, "2", 6), &v2), Ok(0));
    slots.commit().unwrap();
    assert_eq!(slots.boot().unwrap(), (0, v2.len() as u32));
}
