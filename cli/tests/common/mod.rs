//! Helpers shared by the CLI's integration tests.

/// A `.npy` file of `data` (the CLI's writer).
pub fn npy(dtype: kiln_format::DType, shape: &[usize], data: &[u8]) -> Vec<u8> {
    kiln_cli::npy_bytes(&kiln_runtime_native::TensorValue {
        dtype,
        shape: shape.to_vec(),
        data: data.to_vec(),
    })
}
