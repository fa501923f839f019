//! Over-the-air update manifests (TUF-inspired): the collector tells a
//! device which artifact its channel wants it to run in a manifest signed
//! with the update service's online key; the device checks the signature,
//! that the manifest has not expired (freeze attacks) and that its serial
//! is not below one it has already seen (replayed old manifests, rollback
//! attacks), then downloads the artifact, whose sha256 the manifest names
//! and whose own signature (a release key's, `kiln sign`) it checks too.
//!
//! One encoding for every device: the signed body is postcard (hex strings
//! for digests and signatures, so the same struct borrows from JSON on a
//! host and from postcard bytes on a microcontroller, without a heap).

use serde::{Deserialize, Serialize};

/// What a manifest signature covers, before the body's postcard bytes.
pub const MANIFEST_CONTEXT: &[u8; 17] = b"kiln manifest v1\0";

/// The longest encoded body a device verifies (names are short).
pub const MAX_BODY: usize = 512;

/// The signed part of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBody<'a> {
    pub model: &'a str,
    pub channel: &'a str,
    /// Increases with every change of the channel (publish, rollout step,
    /// pause, rollback); a device refuses one below the highest it has
    /// seen. A rollback is a *newer* manifest naming an older version.
    pub serial: u64,
    /// Unix seconds after which the manifest is refused.
    pub expires: u64,
    /// The model version to run, its artifact's sha256 (lowercase hex)
    /// and length in bytes.
    pub version: &'a str,
    pub sha256: &'a str,
    pub length: u64,
}

/// A manifest and its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest<'a> {
    #[serde(borrow)]
    pub signed: ManifestBody<'a>,
    /// The signing key's id (`kiln_format::KeyId` as hex: the first 8
    /// bytes of its public key's sha256).
    pub key_id: &'a str,
    /// ed25519 over `MANIFEST_CONTEXT ‖ postcard(signed)`, hex.
    pub signature: &'a str,
}

/// Why a device refuses a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtaError {
    /// Not a manifest (a field is malformed or too long).
    Malformed(&'static str),
    /// Signed by a key the device does not trust.
    UntrustedKey,
    /// The signature does not verify: tampered with.
    BadSignature,
    /// Past its expiry (`expires` < `now`).
    Expired { expires: u64, now: u64 },
    /// A serial below one already seen: a replayed old manifest.
    Replayed { serial: u64, seen: u64 },
    /// For another model or channel than the device asked for.
    WrongTarget,
}

impl core::fmt::Display for OtaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OtaError::Malformed(why) => write!(f, "malformed manifest: {why}"),
            OtaError::UntrustedKey => f.write_str(
                "the manifest is signed by a key this device does not trust (configure the update service's public key)",
            ),
            OtaError::BadSignature => {
                f.write_str("the manifest's signature does not verify: it was tampered with")
            }
            OtaError::Expired { expires, now } => write!(
                f,
                "the manifest expired at {expires} (now {now}): a stale or frozen update service; refusing it"
            ),
            OtaError::Replayed { serial, seen } => write!(
                f,
                "manifest serial {serial} is older than serial {seen} already seen: a replayed manifest; refusing it"
            ),
            OtaError::WrongTarget => {
                f.write_str("the manifest is for another model or channel than requested")
            }
        }
    }
}

/// Decodes lowercase or uppercase hex into `out` (exactly its length).
pub fn hex_decode(text: &str, out: &mut [u8]) -> Result<(), OtaError> {
    let b = text.as_bytes();
    if b.len() != 2 * out.len() {
        return Err(OtaError::Malformed("hex field of the wrong length"));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(OtaError::Malformed("not hex")),
    };
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Ok(())
}

/// Writes `bytes` as lowercase hex into `out` (twice its length); the text.
pub fn hex_encode<'o>(bytes: &[u8], out: &'o mut [u8]) -> &'o str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = (2 * bytes.len()).min(out.len()) / 2;
    for (o, &b) in out.chunks_exact_mut(2).zip(&bytes[..n]) {
        o[0] = DIGITS[usize::from(b >> 4)];
        o[1] = DIGITS[usize::from(b & 15)];
    }
    // Only ASCII hex digits were written.
    core::str::from_utf8(&out[..2 * n]).unwrap_or("")
}

/// `bytes` as lowercase hex (digests and keys as manifests and key files
/// spell them).
#[cfg(feature = "alloc")]
pub fn to_hex(bytes: &[u8]) -> alloc::string::String {
    let mut out = alloc::vec![0u8; 2 * bytes.len()];
    let n = hex_encode(bytes, &mut out).len();
    out.truncate(n);
    // hex_encode writes ASCII digits only.
    alloc::string::String::from_utf8(out).unwrap_or_default()
}

impl ManifestBody<'_> {
    /// The bytes a signature covers: `MANIFEST_CONTEXT ‖ postcard(self)`,
    /// written into `buf`; their length.
    pub fn signed_bytes(&self, buf: &mut [u8]) -> Result<usize, OtaError> {
        let n = MANIFEST_CONTEXT.len();
        if buf.len() < n {
            return Err(OtaError::Malformed("manifest body too long"));
        }
        buf[..n].copy_from_slice(MANIFEST_CONTEXT);
        let body = postcard::to_slice(self, &mut buf[n..])
            .map_err(|_| OtaError::Malformed("manifest body too long"))?;
        Ok(n + body.len())
    }

    /// The artifact's sha256 as bytes.
    pub fn digest(&self) -> Result<[u8; 32], OtaError> {
        let mut d = [0u8; 32];
        hex_decode(self.sha256, &mut d)?;
        Ok(d)
    }
}

/// The first 8 bytes of sha256(public key), as `kiln_format::KeyId`.
#[cfg(feature = "ota")]
pub fn key_id(public_key: &[u8; 32]) -> [u8; 8] {
    use sha2::Digest as _;
    let d: [u8; 32] = sha2::Sha256::digest(public_key).into();
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    id
}

#[cfg(feature = "ota")]
impl SignedManifest<'_> {
    /// Checks the manifest as a device must before acting on it: signed
    /// by one of `trusted` (ed25519 public keys), for `model`/`channel`,
    /// not expired at `now` (unix seconds) and with a serial no lower than
    /// `seen`, the highest this device has accepted. No heap.
    pub fn verify(
        &self,
        trusted: &[[u8; 32]],
        (model, channel): (&str, &str),
        now: u64,
        seen: u64,
    ) -> Result<(), OtaError> {
        let mut id = [0u8; 8];
        hex_decode(self.key_id, &mut id)?;
        let key = trusted
            .iter()
            .find(|k| key_id(k) == id)
            .ok_or(OtaError::UntrustedKey)?;
        let mut sig = [0u8; 64];
        hex_decode(self.signature, &mut sig)?;
        let mut buf = [0u8; MAX_BODY];
        let n = self.signed.signed_bytes(&mut buf)?;
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| OtaError::BadSignature)?;
        key.verify_strict(&buf[..n], &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| OtaError::BadSignature)?;
        // Only a verified body's fields mean anything.
        let b = &self.signed;
        if b.model != model || b.channel != channel {
            return Err(OtaError::WrongTarget);
        }
        if b.expires < now {
            return Err(OtaError::Expired {
                expires: b.expires,
                now,
            });
        }
        if b.serial < seen {
            return Err(OtaError::Replayed {
                serial: b.serial,
                seen,
            });
        }
        b.digest()?;
        Ok(())
    }
}

/// Signs `body` with the ed25519 secret seed `secret`: the manifest's
/// key id and signature as hex, in `key_hex` (16 bytes) and `sig_hex`
/// (128 bytes).
#[cfg(feature = "ota")]
pub fn sign<'h>(
    body: &ManifestBody<'_>,
    secret: &[u8; 32],
    key_hex: &'h mut [u8; 16],
    sig_hex: &'h mut [u8; 128],
) -> Result<(&'h str, &'h str), OtaError> {
    use ed25519_dalek::Signer as _;
    let key = ed25519_dalek::SigningKey::from_bytes(secret);
    let mut buf = [0u8; MAX_BODY];
    let n = body.signed_bytes(&mut buf)?;
    let sig = key.sign(&buf[..n]).to_bytes();
    let id = key_id(&key.verifying_key().to_bytes());
    Ok((hex_encode(&id, key_hex), hex_encode(&sig, sig_hex)))
}

#[cfg(all(test, feature = "ota"))]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7; 32];

    fn public() -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&SECRET)
            .verifying_key()
            .to_bytes()
    }

    fn body() -> ManifestBody<'static> {
        ManifestBody {
            model: "kws",
            channel: "stable",
            serial: 9,
            expires: 1_000,
            version: "3",
            sha256: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            length: 34_016,
        }
    }

    #[test]
    fn a_signed_manifest_verifies_and_every_tampering_is_refused() {
        let (mut k, mut s) = ([0u8; 16], [0u8; 128]);
        let b = body();
        let (key_id, signature) = sign(&b, &SECRET, &mut k, &mut s).unwrap();
        let m = SignedManifest {
            signed: b,
            key_id,
            signature,
        };
        let keys = [public()];
        let target = ("kws", "stable");
        assert_eq!(m.verify(&keys, target, 999, 9), Ok(()));
        // Through JSON and through postcard, unchanged.
        let json = serde_json::to_string(&m).unwrap();
        let back: SignedManifest<'_> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.verify(&keys, target, 999, 9), Ok(()));
        let mut wire = [0u8; 1024];
        let wire = postcard::to_slice(&m, &mut wire).unwrap();
        let back: SignedManifest<'_> = postcard::from_bytes(wire).unwrap();
        assert_eq!(back, m);

        let mut t = m;
        t.signed.version = "4";
        assert_eq!(t.verify(&keys, target, 999, 9), Err(OtaError::BadSignature));
        let mut t = m;
        t.signed.serial = 10;
        assert_eq!(t.verify(&keys, target, 999, 9), Err(OtaError::BadSignature));
        assert_eq!(
            m.verify(&keys, target, 1_001, 9),
            Err(OtaError::Expired {
                expires: 1_000,
                now: 1_001
            })
        );
        assert_eq!(
            m.verify(&keys, target, 999, 10),
            Err(OtaError::Replayed {
                serial: 9,
                seen: 10
            })
        );
        assert_eq!(
            m.verify(&keys, ("kws", "canary"), 999, 9),
            Err(OtaError::WrongTarget)
        );
        assert_eq!(
            m.verify(&[[1; 32]], target, 999, 9),
            Err(OtaError::UntrustedKey)
        );
        let mut t = m;
        t.signature = "zz";
        assert!(matches!(
            t.verify(&keys, target, 999, 9),
            Err(OtaError::Malformed(_))
        ));
        assert_eq!(b.digest().unwrap()[..3], [0x00, 0x11, 0x22]);
    }

    #[test]
    fn hex_round_trips() {
        let mut out = [0u8; 8];
        assert_eq!(hex_encode(&[0xde, 0xad, 0x01, 0xf0], &mut out), "dead01f0");
        let mut back = [0u8; 4];
        hex_decode("DEAD01f0", &mut back).unwrap();
        assert_eq!(back, [0xde, 0xad, 0x01, 0xf0]);
        assert!(hex_decode("dea", &mut back).is_err());
        assert_eq!(to_hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
