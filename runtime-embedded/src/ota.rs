//! A/B model slots in flash for over-the-air updates, without a heap
//! (feature `ota`): the update is written into the slot not running,
//! checked (the manifest's signature, expiry and serial; the artifact's
//! sha256, length and release signature) and only then made the one to
//! boot, on trial: a firmware that does not [`Slots::confirm`] it within
//! [`TRIAL_BOOTS`] boots goes back to the previous slot by itself.
//!
//! The choice of slot lives in a small record written alternately into
//! two erase blocks with a sequence number and its sha256: a power cut
//! while one is written leaves the other, so the device always boots a
//! whole, verified model. Everything here is pure logic over
//! `embedded_storage`'s `NorFlash`, tested on the host with a RAM flash.

use embedded_storage::nor_flash::NorFlash;
use kiln_format::FormatError;
use kiln_protocol::ota::SignedManifest;
use sha2::{Digest, Sha256};

/// Boots a new model gets before it must be confirmed.
pub const TRIAL_BOOTS: u8 = 3;

/// The record's size in flash (a multiple of any write size up to 64).
const RECORD: usize = 192;
const MAGIC: [u8; 4] = *b"KAB1";

/// Where the slots and the two record blocks are: flash offsets, each
/// on an erase-block boundary, and `slot_len` a whole number of erase
/// blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub slots: [u32; 2],
    pub slot_len: u32,
    pub records: [u32; 2],
}

/// Why an update step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotError {
    /// The flash driver failed.
    Flash,
    /// The manifest was refused.
    Manifest(kiln_protocol::ota::OtaError),
    /// The artifact does not fit a slot.
    TooLarge { len: u64, slot: u32 },
    /// More bytes were written than the manifest announced.
    Overrun,
    /// The written artifact's sha256 or length is not the manifest's.
    Tampered,
    /// The written artifact is not one a trusted key signed.
    Signature(FormatError),
    /// No update is in progress (or it is not finished).
    NotReady,
    /// No other slot holds a model to go back to.
    NoPrevious,
    /// The manifest names the artifact that failed here last.
    Refused,
}

/// The boot record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Record {
    seq: u32,
    active: u8,
    /// Boots left on trial (0: confirmed).
    trial: u8,
    serial: u64,
    len: [u32; 2],
    sha: [[u8; 32]; 2],
    /// The last artifact that failed here (not installed again).
    refused: [u8; 32],
}

impl Record {
    fn encode(&self) -> [u8; RECORD] {
        let mut b = [0xffu8; RECORD];
        b[..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8] = self.active;
        b[9] = self.trial;
        b[10..18].copy_from_slice(&self.serial.to_le_bytes());
        b[18..22].copy_from_slice(&self.len[0].to_le_bytes());
        b[22..26].copy_from_slice(&self.len[1].to_le_bytes());
        b[26..58].copy_from_slice(&self.sha[0]);
        b[58..90].copy_from_slice(&self.sha[1]);
        b[90..122].copy_from_slice(&self.refused);
        let d = Sha256::digest(&b[..122]);
        b[122..154].copy_from_slice(&d);
        b
    }

    fn decode(b: &[u8; RECORD]) -> Option<Record> {
        if b[..4] != MAGIC || Sha256::digest(&b[..122])[..] != b[122..154] || b[8] > 1 {
            return None;
        }
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let mut serial = [0u8; 8];
        serial.copy_from_slice(&b[10..18]);
        let mut sha = [[0u8; 32]; 2];
        sha[0].copy_from_slice(&b[26..58]);
        sha[1].copy_from_slice(&b[58..90]);
        let mut refused = [0u8; 32];
        refused.copy_from_slice(&b[90..122]);
        Some(Record {
            seq: u32_at(4),
            active: b[8],
            trial: b[9],
            serial: u64::from_le_bytes(serial),
            len: [u32_at(18), u32_at(22)],
            sha,
            refused,
        })
    }
}

/// An update being written: what the manifest promised.
#[derive(Debug, Clone)]
struct Incoming {
    slot: u8,
    len: u32,
    sha: [u8; 32],
    serial: u64,
    written: u32,
    hasher: Sha256,
    /// Bytes not yet a whole write unit.
    stage: [u8; 64],
    staged: usize,
    /// [`Slots::finish`] checked it: only then may it be committed.
    verified: bool,
}

/// The two model slots of a device.
#[derive(Debug)]
pub struct Slots<F> {
    flash: F,
    layout: Layout,
    record: Record,
    incoming: Option<Incoming>,
}

fn flash_err<E>(_: E) -> SlotError {
    SlotError::Flash
}

impl<F: NorFlash> Slots<F> {
    /// Reads the newest intact boot record (none: slot 0, nothing
    /// installed).
    pub fn open(mut flash: F, layout: Layout) -> Result<Self, SlotError> {
        let mut best: Option<Record> = None;
        for &at in &layout.records {
            let mut b = [0u8; RECORD];
            flash.read(at, &mut b).map_err(flash_err)?;
            if let Some(r) = Record::decode(&b)
                && best.is_none_or(|x| r.seq > x.seq)
            {
                best = Some(r);
            }
        }
        Ok(Slots {
            flash,
            layout,
            record: best.unwrap_or_default(),
            incoming: None,
        })
    }

    /// The flash, back.
    pub fn release(self) -> F {
        self.flash
    }

    /// The slot to boot and its artifact's length (0: nothing installed).
    /// Call once per boot: a model on trial uses up one of its
    /// [`TRIAL_BOOTS`] here, and the boot after its last, still not
    /// [`Slots::confirm`]ed, goes back to the previous model (and refuses
    /// the failed one from then on).
    pub fn boot(&mut self) -> Result<(usize, u32), SlotError> {
        let mut r = self.record;
        if r.trial > 0 {
            r.trial -= 1;
            if r.trial == 0 {
                // Never confirmed: the previous model comes back.
                r.refused = r.sha[usize::from(r.active)];
                r.active ^= 1;
            }
            self.write_record(r)?;
        }
        let a = usize::from(self.record.active);
        Ok((a, self.record.len[a]))
    }

    /// Whether the running model is still on trial.
    pub fn on_trial(&self) -> bool {
        self.record.trial > 0
    }

    /// The highest manifest serial accepted.
    pub fn serial(&self) -> u64 {
        self.record.serial
    }

    /// Flash offset and length of `slot`'s artifact.
    pub fn slot(&self, slot: usize) -> (u32, u32) {
        (self.layout.slots[slot & 1], self.record.len[slot & 1])
    }

    /// Starts writing the manifest's artifact into the slot not running:
    /// the manifest must verify (`keys`, `target`, `now`, the serial seen)
    /// and the artifact fit; the slot is erased.
    pub fn begin(
        &mut self,
        manifest: &SignedManifest<'_>,
        keys: &[[u8; 32]],
        target: (&str, &str),
        now: u64,
    ) -> Result<(), SlotError> {
        manifest
            .verify(keys, target, now, self.record.serial)
            .map_err(SlotError::Manifest)?;
        let b = &manifest.signed;
        if b.length > u64::from(self.layout.slot_len) {
            return Err(SlotError::TooLarge {
                len: b.length,
                slot: self.layout.slot_len,
            });
        }
        let sha = b.digest().map_err(SlotError::Manifest)?;
        if sha == self.record.refused {
            return Err(SlotError::Refused);
        }
        let slot = self.record.active ^ 1;
        let at = self.layout.slots[usize::from(slot)];
        self.flash
            .erase(at, at + self.layout.slot_len)
            .map_err(flash_err)?;
        self.incoming = Some(Incoming {
            slot,
            len: b.length as u32,
            sha,
            serial: b.serial,
            written: 0,
            hasher: Sha256::new(),
            stage: [0xff; 64],
            staged: 0,
            verified: false,
        });
        Ok(())
    }

    /// Appends the next bytes of the artifact (any chunk sizes).
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), SlotError> {
        let unit = F::WRITE_SIZE.max(1);
        let inc = self.incoming.as_mut().ok_or(SlotError::NotReady)?;
        let total = inc.written as usize + inc.staged + data.len();
        if total > inc.len as usize || unit > inc.stage.len() {
            return Err(SlotError::Overrun);
        }
        inc.hasher.update(data);
        let base = self.layout.slots[usize::from(inc.slot)];
        while !data.is_empty() {
            let take = (unit - inc.staged).min(data.len());
            inc.stage[inc.staged..inc.staged + take].copy_from_slice(&data[..take]);
            inc.staged += take;
            data = &data[take..];
            if inc.staged == unit {
                self.flash
                    .write(base + inc.written, &inc.stage[..unit])
                    .map_err(flash_err)?;
                inc.written += unit as u32;
                inc.staged = 0;
            }
        }
        Ok(())
    }

    /// Bytes of the artifact received so far.
    pub fn received(&self) -> u32 {
        self.incoming
            .as_ref()
            .map_or(0, |i| i.written + i.staged as u32)
    }

    /// Ends the download: the bytes must be the manifest's (sha256 and
    /// length) and the artifact signed by one of `release_keys` (checked
    /// from flash, without a heap). The slot written; map it, health-check
    /// the model, then [`Slots::commit`].
    pub fn finish(&mut self, release_keys: &[[u8; 32]]) -> Result<usize, SlotError> {
        let unit = F::WRITE_SIZE.max(1);
        let inc = self.incoming.as_mut().ok_or(SlotError::NotReady)?;
        if inc.staged > 0 {
            // The tail, padded with erased bytes to a whole unit.
            inc.stage[inc.staged..unit].fill(0xff);
            let base = self.layout.slots[usize::from(inc.slot)];
            self.flash
                .write(base + inc.written, &inc.stage[..unit])
                .map_err(flash_err)?;
            inc.written += inc.staged as u32;
            inc.staged = 0;
        }
        let digest: [u8; 32] = inc.hasher.clone().finalize().into();
        if inc.written != inc.len || digest != inc.sha {
            self.incoming = None;
            return Err(SlotError::Tampered);
        }
        let (slot, len) = (inc.slot, inc.len);
        let at = self.layout.slots[usize::from(slot)];
        verify_in_flash(&mut self.flash, at, len, release_keys)?;
        if let Some(inc) = self.incoming.as_mut() {
            inc.verified = true;
        }
        Ok(usize::from(slot))
    }

    /// Makes the finished slot the one to boot, on trial for
    /// [`TRIAL_BOOTS`] boots (its manifest's serial accepted).
    pub fn commit(&mut self) -> Result<(), SlotError> {
        let inc = self.incoming.take().ok_or(SlotError::NotReady)?;
        if !inc.verified {
            return Err(SlotError::NotReady);
        }
        let mut r = self.record;
        let s = usize::from(inc.slot);
        r.len[s] = inc.len;
        r.sha[s] = inc.sha;
        r.active = inc.slot;
        // The boot that runs it first takes one.
        r.trial = TRIAL_BOOTS + 1;
        r.serial = r.serial.max(inc.serial);
        self.write_record(r)
    }

    /// The running model works: it stays.
    pub fn confirm(&mut self) -> Result<(), SlotError> {
        if self.record.trial == 0 {
            return Ok(());
        }
        let mut r = self.record;
        r.trial = 0;
        self.write_record(r)
    }

    /// Goes back to the other slot's model now (its first inferences
    /// failed, say), refusing this one from then on.
    pub fn revert(&mut self) -> Result<(), SlotError> {
        let mut r = self.record;
        let other = usize::from(r.active ^ 1);
        if r.len[other] == 0 {
            return Err(SlotError::NoPrevious);
        }
        r.refused = r.sha[usize::from(r.active)];
        r.active ^= 1;
        r.trial = 0;
        self.write_record(r)
    }

    /// Writes `r` (next sequence number) into the record block not
    /// holding the current one; only then is it the current record.
    fn write_record(&mut self, mut r: Record) -> Result<(), SlotError> {
        r.seq = self.record.seq.wrapping_add(1);
        let at = self.layout.records[(r.seq & 1) as usize];
        self.flash
            .erase(at, at + F::ERASE_SIZE as u32)
            .map_err(flash_err)?;
        self.flash.write(at, &r.encode()).map_err(flash_err)?;
        self.record = r;
        Ok(())
    }
}

/// Checks the artifact at flash offset `at` (`len` bytes): its content
/// sha256 recomputed and its signature by one of `keys`, reading through
/// a small buffer.
fn verify_in_flash<F: NorFlash>(
    flash: &mut F,
    at: u32,
    len: u32,
    keys: &[[u8; 32]],
) -> Result<(), SlotError> {
    let mut header = [0u8; kiln_format::HEADER_LEN];
    if (len as usize) < header.len() {
        return Err(SlotError::Signature(FormatError::BadMagic));
    }
    flash.read(at, &mut header).map_err(flash_err)?;
    let content = u64::from_le_bytes([
        header[16], header[17], header[18], header[19], header[20], header[21], header[22],
        header[23],
    ]);
    let sig_at = u32::from_le_bytes([header[48], header[49], header[50], header[51]]);
    let sig_len = u32::from_le_bytes([header[52], header[53], header[54], header[55]]) as usize;
    if content > u64::from(len)
        || content < header.len() as u64
        || sig_len != kiln_format::SIGNATURE_LEN
        || u64::from(sig_at) != content
        || u64::from(sig_at) + sig_len as u64 > u64::from(len)
    {
        return Err(SlotError::Signature(FormatError::Unsigned));
    }
    let mut h = Sha256::new();
    h.update(&header[..48]);
    let mut buf = [0u8; 256];
    let mut pos = header.len() as u32;
    while u64::from(pos) < content {
        let n = (content - u64::from(pos)).min(buf.len() as u64) as usize;
        flash.read(at + pos, &mut buf[..n]).map_err(flash_err)?;
        h.update(&buf[..n]);
        pos += n as u32;
    }
    let digest: [u8; 32] = h.finalize().into();
    let mut stored = [0u8; 32];
    stored.copy_from_slice(&header[64..96]);
    if digest != stored {
        return Err(SlotError::Signature(FormatError::Checksum));
    }
    let mut section = [0u8; kiln_format::SIGNATURE_LEN];
    flash.read(at + sig_at, &mut section).map_err(flash_err)?;
    kiln_format::verify_section(&digest, &section, keys).map_err(SlotError::Signature)?;
    Ok(())
}
