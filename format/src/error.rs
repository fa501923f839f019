/// Why a byte string is not a valid artifact. Every variant says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("not a kiln artifact: the file does not start with the magic bytes \"KILNART\\0\"")]
    BadMagic,
    #[error(
        "artifact format {major}.{minor} is not supported by this runtime (it reads {}.x); recompile the model with a matching kiln",
        crate::FORMAT_MAJOR
    )]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error("artifact is truncated: {what} needs bytes {start}..{end} but the file has {len}")]
    Truncated {
        what: &'static str,
        start: u64,
        end: u64,
        len: usize,
    },
    #[error("artifact bytes must start at a 16-byte aligned address (weights are read in place)")]
    Misaligned,
    #[error("invalid {what}: {detail}")]
    Invalid {
        what: &'static str,
        detail: &'static str,
    },
    #[error("invalid {what} at index {index}: {detail}")]
    InvalidAt {
        what: &'static str,
        index: u32,
        detail: &'static str,
    },
    #[error("could not decode {what}: {detail}")]
    Decode {
        what: &'static str,
        detail: &'static str,
    },
    #[error(
        "content checksum mismatch: the artifact was modified or corrupted after it was written"
    )]
    Checksum,
    #[error(
        "the artifact is not signed, and this runtime only runs signed ones: sign it with `kiln sign ARTIFACT --key KEY`"
    )]
    Unsigned,
    #[error(
        "the artifact is signed by key {0}, which this runtime does not trust: sign it with a trusted release key, or add that key's public half"
    )]
    UntrustedKey(crate::KeyId),
    #[error(
        "the artifact's signature does not verify: it was tampered with or signed over other content; do not run it"
    )]
    BadSignature,
}
