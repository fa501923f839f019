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
    #[error("element {index} = {value} is outside the declared range [{min}, {max}]")]
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
