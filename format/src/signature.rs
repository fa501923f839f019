//! The optional signature section: an ed25519 signature, by a release key
//! a device trusts, of the artifact's content sha256 (header bytes 64..96,
//! which cover every byte of the file but the signature fields: the name,
//! version, properties, graph and weights alike). Layout, 80 bytes:
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0..8   | magic `KILNSIG1` |
//! | 8..16  | key id: the first 8 bytes of sha256(public key) |
//! | 16..80 | ed25519 signature of `SIGNING_CONTEXT ‖ content sha256` |
//!
//! A signature only means something once the checksum is recomputed:
//! [`View::verify_signature`] does both, without a heap (a microcontroller
//! checks its model before the first run).

use crate::{FormatError, View};
use sha2::{Digest, Sha256};

/// The section's magic bytes.
pub const SIGNATURE_MAGIC: [u8; 8] = *b"KILNSIG1";
/// The section's length.
pub const SIGNATURE_LEN: usize = 80;
/// What is signed, before the content sha256: a signature of anything
/// else (a manifest, another format) can never pass for an artifact's.
pub const SIGNING_CONTEXT: &[u8; 17] = b"kiln artifact v1\0";

/// A public key's short name: the first 8 bytes of its sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of a 32-byte ed25519 public key.
    pub fn of(public_key: &[u8; 32]) -> KeyId {
        let d: [u8; 32] = Sha256::digest(public_key).into();
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        KeyId(id)
    }
}

impl core::fmt::Display for KeyId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A signature section, borrowed from the artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureRef<'a> {
    pub key_id: KeyId,
    pub signature: &'a [u8; 64],
}

/// The bytes a release key signs for an artifact of this content sha256.
pub fn signed_message(content_sha256: &[u8; 32]) -> [u8; 49] {
    let mut m = [0u8; 49];
    m[..17].copy_from_slice(SIGNING_CONTEXT);
    m[17..].copy_from_slice(content_sha256);
    m
}

impl<'a> View<'a> {
    /// The artifact's signature section, if it is signed (not verified:
    /// see [`View::verify_signature`]).
    pub fn signature(&self) -> Result<Option<SignatureRef<'a>>, FormatError> {
        let s = self.header().signature;
        if s.len == 0 {
            return Ok(None);
        }
        parse_section(&self.bytes()[s.range()]).map(Some)
    }

    /// Checks that the artifact is intact (its content sha256 recomputed)
    /// and signed by one of the `trusted` ed25519 public keys; the key id
    /// that signed it. An unsigned artifact, one signed by another key or
    /// a signature that does not verify is an error.
    #[cfg(feature = "signature")]
    pub fn verify_signature(&self, trusted: &[[u8; 32]]) -> Result<KeyId, FormatError> {
        self.verify_checksum()?;
        let s = self.header().signature;
        if s.len == 0 {
            return Err(FormatError::Unsigned);
        }
        verify_section(
            &self.header().content_sha256,
            &self.bytes()[s.range()],
            trusted,
        )
    }
}

/// Checks a signature section (`section`, its 80 bytes) against the
/// content sha256 the verifier computed itself (never the header's word
/// for it) and the `trusted` public keys; the signing key's id. For
/// firmware that reads an artifact from flash in pieces.
#[cfg(feature = "signature")]
pub fn verify_section(
    content_sha256: &[u8; 32],
    section: &[u8],
    trusted: &[[u8; 32]],
) -> Result<KeyId, FormatError> {
    let sig = parse_section(section)?;
    let key = trusted
        .iter()
        .find(|k| KeyId::of(k) == sig.key_id)
        .ok_or(FormatError::UntrustedKey(sig.key_id))?;
    let key =
        ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| FormatError::BadSignature)?;
    let signature = ed25519_dalek::Signature::from_bytes(sig.signature);
    key.verify_strict(&signed_message(content_sha256), &signature)
        .map_err(|_| FormatError::BadSignature)?;
    Ok(sig.key_id)
}

/// A signature section's fields.
fn parse_section(bytes: &[u8]) -> Result<SignatureRef<'_>, FormatError> {
    if bytes.len() != SIGNATURE_LEN || bytes[..8] != SIGNATURE_MAGIC {
        return Err(FormatError::Invalid {
            what: "signature section",
            detail: "not 80 bytes starting with KILNSIG1",
        });
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[8..16]);
    let signature = bytes[16..80].try_into().map_err(|_| FormatError::Invalid {
        what: "signature section",
        detail: "short signature",
    })?;
    Ok(SignatureRef {
        key_id: KeyId(id),
        signature,
    })
}

/// `artifact` signed with the ed25519 secret key `secret` (its 32-byte
/// seed): the content unchanged (a previous signature dropped), the
/// header's signature fields set, the 80-byte section appended. The
/// artifact must be intact (its checksum is checked first).
#[cfg(all(feature = "signature", feature = "alloc"))]
pub fn sign(artifact: &[u8], secret: &[u8; 32]) -> Result<alloc::vec::Vec<u8>, FormatError> {
    use ed25519_dalek::Signer;
    let header = crate::Header::parse(artifact)?;
    let content = header.content_len as usize;
    if crate::header::content_digest(artifact, content) != header.content_sha256 {
        return Err(FormatError::Checksum);
    }
    let offset = u32::try_from(content).map_err(|_| FormatError::Invalid {
        what: "artifact",
        detail: "too large to sign (4 GiB)",
    })?;
    let key = ed25519_dalek::SigningKey::from_bytes(secret);
    let public = key.verifying_key().to_bytes();
    let signature = key.sign(&signed_message(&header.content_sha256));
    let mut out = alloc::vec::Vec::with_capacity(content + SIGNATURE_LEN);
    out.extend_from_slice(&artifact[..content]);
    out[48..52].copy_from_slice(&offset.to_le_bytes());
    out[52..56].copy_from_slice(&(SIGNATURE_LEN as u32).to_le_bytes());
    out.extend_from_slice(&SIGNATURE_MAGIC);
    out.extend_from_slice(&KeyId::of(&public).0);
    out.extend_from_slice(&signature.to_bytes());
    Ok(out)
}

/// The ed25519 public key of a 32-byte secret seed.
#[cfg(feature = "signature")]
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(secret)
        .verifying_key()
        .to_bytes()
}
