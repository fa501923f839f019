use kiln_format::DType;

/// What is wrong with one input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InputProblem {
    #[error("expected dtype {expected}, got {got}")]
    DType { expected: DType, got: DType },
    #[error("expected shape {expected}, got {got:?}")]
    Shape { expected: String, got: Vec<usize> },
    #[error("batch size {got} on axis {axis} disagrees with {expected} in another input")]
    BatchMismatch {
        expected: usize,
        got: usize,
        axis: usize,
    },
    #[error("the batch is empty")]
    EmptyBatch,
    #[error("data length does not match the shape")]
    DataLength,
    #[error("element {index} is NaN or infinite")]
    NonFinite { index: usize },
    #[error(
        "element {index} = {} is outside the declared range [{}, {}]",
        Short(*value),
        Short(*min),
        Short(*max)
    )]
    OutOfRange {
        index: usize,
        value: f32,
        min: f32,
        max: f32,
    },
}

/// Why a model could not be loaded or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("invalid artifact: {0}")]
    Format(#[from] kiln_format::FormatError),
    #[error("the artifact cannot run: {0}")]
    Engine(#[from] kiln_engine::EngineError),
    #[error("could not compile the model: {0}")]
    Compile(String),
    #[error("input '{input}' rejected: {problem}")]
    Input {
        input: String,
        problem: InputProblem,
    },
    #[error("the model takes {expected} inputs, got {got}")]
    InputCount { expected: usize, got: usize },
    #[error("output buffer for '{output}' has the wrong size")]
    OutputBuffer { output: String },
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
}

/// The coarse kind of a [`RunError`], shared by every host: the CLI's exit
/// codes and the JavaScript `KilnError.code` both come from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCategory {
    /// The artifact is malformed, truncated, or cannot run.
    InvalidModel,
    /// An input broke the model's schema (dtype, shape, NaN, range).
    InputRejected,
    /// The host API was misused (a command-line flag, a JavaScript call
    /// with the wrong kind of argument, a freed model). Hosts raise it;
    /// a [`RunError`] never maps to it.
    Usage,
    /// Anything else (I/O, a caller's buffer of the wrong size).
    Other,
}

impl ErrorCategory {
    /// Stable machine-readable name (`INVALID_MODEL`, `INPUT_REJECTED`,
    /// `USAGE`, `OTHER`).
    pub fn code(self) -> &'static str {
        match self {
            ErrorCategory::InvalidModel => "INVALID_MODEL",
            ErrorCategory::InputRejected => "INPUT_REJECTED",
            ErrorCategory::Usage => "USAGE",
            ErrorCategory::Other => "OTHER",
        }
    }

    /// The `kiln` CLI's exit code for this category.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorCategory::InvalidModel => 3,
            ErrorCategory::InputRejected => 4,
            ErrorCategory::Usage => 2,
            ErrorCategory::Other => 1,
        }
    }
}

impl RunError {
    pub fn category(&self) -> ErrorCategory {
        if self.is_input_error() {
            ErrorCategory::InputRejected
        } else if self.is_model_error() {
            ErrorCategory::InvalidModel
        } else {
            ErrorCategory::Other
        }
    }

    /// Whether the error is about the model (as opposed to the inputs).
    pub fn is_model_error(&self) -> bool {
        matches!(
            self,
            RunError::Format(_) | RunError::Engine(_) | RunError::Compile(_)
        )
    }

    /// Whether the inputs were rejected by the schema.
    pub fn is_input_error(&self) -> bool {
        matches!(self, RunError::Input { .. } | RunError::InputCount { .. })
    }
}

/// Shows an `f32` to six significant digits (`2.5`, `-0.001`, `1.5e-7`,
/// `3.40282e38`) by integer arithmetic. The browser package is sized
/// against a budget, and core's exact float printing (shortest
/// round-trip, Grisu and Dragon) is about 8 KB of its WebAssembly; an
/// error message needs a readable number, not a round-trip one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Short(pub(crate) f32);

impl std::fmt::Display for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        if v.is_nan() {
            return f.write_str("NaN");
        }
        if v.is_infinite() {
            return f.write_str(if v > 0.0 { "inf" } else { "-inf" });
        }
        if v == 0.0 {
            return f.write_str("0");
        }
        if v < 0.0 {
            f.write_str("-")?;
        }
        // a = s · 10^e with 1 <= s < 10, in f64: exact enough for six of
        // an f32's digits after at most ~45 scalings.
        let (mut s, mut e) = (f64::from(v.abs()), 0i32);
        while s >= 10.0 {
            s /= 10.0;
            e += 1;
        }
        while s < 1.0 {
            s *= 10.0;
            e -= 1;
        }
        let mut digits = (s * 1e5 + 0.5) as u32;
        if digits >= 1_000_000 {
            digits /= 10;
            e += 1;
        }
        let mut digits6 = [b'0'; 6];
        for b in digits6.iter_mut().rev() {
            *b = b'0' + (digits % 10) as u8;
            digits /= 10;
        }
        let sig = digits6
            .iter()
            .rposition(|&b| b != b'0')
            .map_or(1, |i| i + 1);
        // At most "0.0000" + 6 digits, or 6 digits and a point.
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut put = |bytes: &[u8]| {
            out[n..n + bytes.len()].copy_from_slice(bytes);
            n += bytes.len();
        };
        let scientific = !(-5..6).contains(&e);
        if scientific || e >= 0 {
            let point = if scientific { 1 } else { e as usize + 1 };
            put(&digits6[..point]);
            if sig > point {
                put(b".");
                put(&digits6[point..sig]);
            }
        } else {
            put(b"0.");
            for _ in 0..(-e - 1) {
                put(b"0");
            }
            put(&digits6[..sig]);
        }
        f.write_str(core::str::from_utf8(&out[..n]).unwrap_or("?"))?;
        if scientific {
            write!(f, "e{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Short;

    #[test]
    fn short_floats_read_as_expected() {
        let cases: &[(f32, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (2.5, "2.5"),
            (-3.25, "-3.25"),
            (10.0, "10"),
            (123456.0, "123456"),
            (1234567.0, "1.23457e6"),
            (0.1, "0.1"),
            (0.001, "0.001"),
            (0.000015, "0.000015"),
            (1.5e-7, "1.5e-7"),
            (f32::MAX, "3.40282e38"),
            (f32::MIN_POSITIVE, "1.17549e-38"),
            (9.999999, "10"),
            (255.0, "255"),
            (f32::NAN, "NaN"),
            (f32::NEG_INFINITY, "-inf"),
        ];
        for &(v, want) in cases {
            assert_eq!(Short(v).to_string(), want, "{v}");
        }
    }

    #[test]
    fn short_floats_are_within_six_digits() {
        let mut x = 0x1234_5678u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = f32::from_bits(x);
            if !v.is_finite() {
                continue;
            }
            let back: f64 = Short(v).to_string().parse().unwrap();
            let v = f64::from(v);
            assert!(
                (back - v).abs() <= v.abs() * 6e-6,
                "{v:e} shown as {back:e}"
            );
        }
    }
}
