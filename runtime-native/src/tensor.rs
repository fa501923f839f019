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
            DType::F64 | DType::F16 => self.to_f64().iter().position(|v| !v.is_finite()),
            _ => None,
        }
    }
}
