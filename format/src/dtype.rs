use serde::{Deserialize, Serialize};

/// Element type of a tensor. The discriminants are part of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum DType {
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

impl DType {
    /// Decodes the on-disk tag.
    pub fn from_u8(v: u8) -> Option<DType> {
        Some(match v {
            1 => DType::F32,
            2 => DType::U8,
            3 => DType::I8,
            4 => DType::U16,
            5 => DType::I16,
            6 => DType::I32,
            7 => DType::I64,
            9 => DType::Bool,
            10 => DType::F16,
            11 => DType::F64,
            12 => DType::U32,
            13 => DType::U64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 | DType::Bool => 1,
            DType::U16 | DType::I16 | DType::F16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::I64 | DType::F64 | DType::U64 => 8,
        }
    }

    /// The lowercase name used in schemas, errors and `kiln inspect`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::U16 => "uint16",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::Bool => "bool",
            DType::F16 => "float16",
            DType::F64 => "float64",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::F64)
    }

    /// Whether drift telemetry counts tensors of this type: float32, and
    /// the 8-bit integers as their stored codes (see [`DType::drift_value`]).
    pub fn drift_counted(self) -> bool {
        matches!(self, DType::F32 | DType::I8 | DType::U8)
    }

    /// Element `k` of little-endian `data` as telemetry counts it: a
    /// float32 widened, an 8-bit integer's code (not dequantized: drift
    /// tests do not change under the affine map to real values, and every
    /// runtime then counts the very same numbers). `None` for other types
    /// or past the end of `data`.
    pub fn drift_value(self, data: &[u8], k: usize) -> Option<f64> {
        match self {
            DType::F32 => {
                let b = data.get(4 * k..4 * k + 4)?;
                Some(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            DType::I8 => data.get(k).map(|&b| f64::from(b as i8)),
            DType::U8 => data.get(k).map(|&b| f64::from(b)),
            _ => None,
        }
    }
}

impl core::fmt::Display for DType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl crate::decode::Decode<'_> for DType {
    /// serde writes the variant's position, not its discriminant.
    fn decode(r: &mut crate::decode::Reader<'_>) -> Self {
        use DType::*;
        const ALL: [DType; 12] = [F32, U8, I8, U16, I16, I32, I64, Bool, F16, F64, U32, U64];
        ALL[r.tag(ALL.len() as u32) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::DType;

    #[test]
    fn drift_values_are_floats_and_8_bit_codes() {
        let f = 1.5f32.to_le_bytes();
        assert_eq!(DType::F32.drift_value(&f, 0), Some(1.5));
        assert_eq!(DType::F32.drift_value(&f[..3], 0), None);
        let b = [0x80u8, 0x7f, 0xff];
        assert_eq!(DType::I8.drift_value(&b, 0), Some(-128.0));
        assert_eq!(DType::I8.drift_value(&b, 2), Some(-1.0));
        assert_eq!(DType::U8.drift_value(&b, 2), Some(255.0));
        assert_eq!(DType::U8.drift_value(&b, 3), None);
        assert_eq!(DType::I32.drift_value(&[0; 4], 0), None);
        assert!(DType::I8.drift_counted() && !DType::I64.drift_counted());
    }
}
