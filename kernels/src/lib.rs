//! Op math for Kiln (internal crate: use `kiln-runtime-native` or the CLI).
//!
//! Every op has a scalar reference kernel; hot ops (GEMM, convolution) also
//! have optimised paths that are property-tested against the reference.
//! Kernels work on plain slices of `f32` (or bytes for data movement, `i8`
//! for the TFLite-spec integer kernels in `quant`, whose bytes must equal
//! LiteRT's) in row-major NCHW layout, take their shapes as arguments, and
//! take scratch memory from the caller.
//!
//! Architecture invariant: `#![no_std]` and no dependency on anything else
//! in the workspace (it knows nothing of the artifact format). Without the
//! `std` feature kernels do not allocate (large GEMMs pack B into a stack
//! buffer); with it, large GEMMs on CPUs without the AVX2 path call
//! `matrixmultiply`, which allocates its packing buffer.
//! Callers check shapes against slice lengths before calling; a kernel may
//! panic on inconsistent lengths, so the engine validates first.
#![no_std]

#[cfg(any(feature = "std", test))]
extern crate std;

pub mod compact;
pub mod conv;
pub mod copy;
pub mod fixed;
pub mod gemm;
pub mod math;
pub mod norm;
pub mod pool;
mod qconv;
mod qfc;
pub mod qlstm;
pub mod quant;
pub mod rnn;
#[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
mod simd_vnni;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd_wasm;
#[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
mod simd_x86;
pub mod tree;
