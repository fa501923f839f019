//! Typed views of a node's inputs and outputs.

use crate::error::{EngineError, bad};
use kiln_format::{DType, MAX_RANK, TensorInfo};

/// A shared input tensor: its table entry and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'x> {
    pub info: TensorInfo,
    pub data: &'x [u8],
}

/// A mutable output tensor.
#[derive(Debug)]
pub struct TensorMut<'x> {
    pub info: TensorInfo,
    pub data: &'x mut [u8],
}

/// Shape as `usize`s (rank ≤ 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub dims: [usize; MAX_RANK],
    pub rank: usize,
}

impl Shape {
    pub fn of(info: &TensorInfo) -> Shape {
        let mut dims = [0usize; MAX_RANK];
        for (d, &s) in dims.iter_mut().zip(info.shape()) {
            *d = s as usize;
        }
        Shape {
            dims,
            rank: info.rank as usize,
        }
    }

    pub fn as_slice(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    pub fn numel(&self) -> usize {
        self.as_slice().iter().product()
    }

    /// Product of dims in `a..b`.
    pub fn prod(&self, a: usize, b: usize) -> usize {
        self.dims[a.min(self.rank)..b.min(self.rank)]
            .iter()
            .product()
    }
}

macro_rules! typed {
    ($get:ident, $get_mut:ident, $t:ty, $($dt:ident)|+) => {
        impl<'x> Tensor<'x> {
            pub fn $get(&self) -> Result<&'x [$t], EngineError> {
                if !matches!(self.info.dtype, $(DType::$dt)|+) {
                    return Err(bad(concat!("expected a ", stringify!($t), " tensor")));
                }
                bytemuck::try_cast_slice(self.data).map_err(|_| bad("misaligned tensor"))
            }
        }
        impl<'x> TensorMut<'x> {
            pub fn $get_mut(&mut self) -> Result<&mut [$t], EngineError> {
                if !matches!(self.info.dtype, $(DType::$dt)|+) {
                    return Err(bad(concat!("expected a ", stringify!($t), " output")));
                }
                bytemuck::try_cast_slice_mut(self.data).map_err(|_| bad("misaligned tensor"))
            }
        }
    };
}

typed!(f32, f32_mut, f32, F32);
typed!(i64, i64_mut, i64, I64);
typed!(i32, i32_mut, i32, I32);
typed!(i8, i8_mut, i8, I8);

impl<'x> Tensor<'x> {
    pub fn shape(&self) -> Shape {
        Shape::of(&self.info)
    }

    pub fn dtype(&self) -> DType {
        self.info.dtype
    }

    /// Reads an integer tensor (any integer dtype) element `i` as i64.
    pub fn int_at(&self, i: usize) -> Result<i64, EngineError> {
        let s = self.info.dtype.size();
        let b = self
            .data
            .get(i * s..i * s + s)
            .ok_or(bad("index past the end of a tensor"))?;
        Ok(match self.info.dtype {
            DType::I64 => i64::from_le_bytes(b.try_into().map_err(|_| bad("bad int64"))?),
            DType::I32 => i32::from_le_bytes(b.try_into().map_err(|_| bad("bad int32"))?) as i64,
            DType::I16 => i16::from_le_bytes(b.try_into().map_err(|_| bad("bad int16"))?) as i64,
            DType::I8 => b[0] as i8 as i64,
            DType::U8 | DType::Bool => b[0] as i64,
            DType::U16 => u16::from_le_bytes(b.try_into().map_err(|_| bad("bad uint16"))?) as i64,
            DType::U32 => u32::from_le_bytes(b.try_into().map_err(|_| bad("bad uint32"))?) as i64,
            DType::U64 => u64::from_le_bytes(b.try_into().map_err(|_| bad("bad uint64"))?) as i64,
            _ => return Err(bad("expected an integer tensor")),
        })
    }

    /// Reads element 0 of a numeric tensor as f32 (scalars such as scales).
    pub fn scalar_f32(&self, i: usize) -> Result<f32, EngineError> {
        match self.info.dtype {
            DType::F32 => self
                .f32()?
                .get(i)
                .copied()
                .ok_or(bad("index past the end of a tensor")),
            _ => Ok(self.int_at(i)? as f32),
        }
    }
}

impl<'x> TensorMut<'x> {
    pub fn shape(&self) -> Shape {
        Shape::of(&self.info)
    }
}
