use kiln_format::DType;

/// An owned tensor: dtype, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorValue {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl TensorValue {
    pub fn from_f32(shape: Vec<usize>, v: &[f32]) -> Self {
        TensorValue {
            dtype: DType::F32,
            shape,
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    pub fn from_i64(shape: Vec<usize>, v: &[i64]) -> Self {
        TensorValue {
            dtype: DType::I64,
            shape,
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Values as f32 (F32 only; empty otherwise).
    pub fn f32_values(&self) -> impl Iterator<Item = f32> + '_ {
        let ok = self.dtype == DType::F32;
        self.data
            .chunks_exact(4)
            .filter(move |_| ok)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// Every element converted to f64 (for printing and comparisons).
    pub fn to_f64(&self) -> Vec<f64> {
        let s = self.dtype.size();
        self.data
            .chunks_exact(s)
            .map(|c| match self.dtype {
                DType::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                DType::F64 => f64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
                DType::F16 => half::f16::from_le_bytes([c[0], c[1]]).to_f64(),
                DType::I64 => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64,
                DType::U64 => u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64,
                DType::I32 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                DType::U32 => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                DType::I16 => i16::from_le_bytes([c[0], c[1]]) as f64,
                DType::U16 => u16::from_le_bytes([c[0], c[1]]) as f64,
                DType::I8 => c[0] as i8 as f64,
                DType::U8 | DType::Bool => c[0] as f64,
            })
            .collect()
    }

    /// Index of the first NaN or infinite element of a float tensor.
    pub fn first_non_finite(&self) -> Option<usize> {
        match self.dtype {
            DType::F32 => kiln_engine::first_non_finite_f32(&self.data),
            // By the exponent bits: all ones is NaN or infinity.
            DType::F64 => self.data.chunks_exact(8).position(|c| {
                u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) & 0x7ff0_0000_0000_0000
                    == 0x7ff0_0000_0000_0000
            }),
            DType::F16 => self
                .data
                .chunks_exact(2)
                .position(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TensorValue;
    use kiln_format::DType;

    #[test]
    fn non_finite_elements_are_found_in_every_float_type() {
        let t = |dtype, data: Vec<u8>| TensorValue {
            dtype,
            shape: vec![data.len() / dtype.size()],
            data,
        };
        let f64s = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let f16s = |v: &[f32]| {
            v.iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect::<Vec<u8>>()
        };
        assert_eq!(
            t(DType::F64, f64s(&[1.0, -2.0, 1e300])).first_non_finite(),
            None
        );
        assert_eq!(
            t(DType::F64, f64s(&[1.0, f64::NAN])).first_non_finite(),
            Some(1)
        );
        assert_eq!(
            t(DType::F64, f64s(&[f64::NEG_INFINITY])).first_non_finite(),
            Some(0)
        );
        assert_eq!(
            t(DType::F16, f16s(&[1.0, 65504.0, -0.5])).first_non_finite(),
            None
        );
        assert_eq!(
            t(DType::F16, f16s(&[1.0, 2.0, f32::INFINITY])).first_non_finite(),
            Some(2)
        );
        assert_eq!(t(DType::F16, f16s(&[f32::NAN])).first_non_finite(), Some(0));
        let f32s: Vec<u8> = [0.0f32, f32::NAN]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(t(DType::F32, f32s).first_non_finite(), Some(1));
        assert_eq!(t(DType::I32, vec![0xff; 8]).first_non_finite(), None);
    }
}
