/// Why a model could not be compiled. Each message says what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    #[error("could not parse the ONNX model: {0}")]
    Parse(String),
    #[error(
        "unsupported operator {domain}{op} (opset {opset}) in node '{node}'; kiln supports: see `kiln ops` or ARCHITECTURE.md"
    )]
    UnsupportedOp {
        op: String,
        domain: String,
        opset: i64,
        node: String,
    },
    #[error("node '{node}' ({op}): {detail}")]
    Node {
        node: String,
        op: String,
        detail: String,
    },
    #[error("input '{input}': {detail}")]
    Input { input: String, detail: String },
    #[error("{0}")]
    Invalid(String),
    #[error("could not write the artifact: {0}")]
    Write(#[from] kiln_format::write::WriteError),
    #[error("constant folding failed in '{node}': {source}")]
    Fold {
        node: String,
        #[source]
        source: kiln_engine::EngineError,
    },
}

pub type Result<T, E = CompileError> = std::result::Result<T, E>;
