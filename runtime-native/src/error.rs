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

impl RunError {
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
