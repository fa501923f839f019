use kiln_format::FormatError;

/// Why a plan cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("node {index} ({op}): {detail}")]
    Node {
        index: usize,
        op: &'static str,
        detail: &'static str,
    },
    /// An op-level failure before the node is known (filled in by the executor).
    #[error("{0}")]
    Op(&'static str),
    #[error("arena: {0}")]
    Arena(&'static str),
}

impl EngineError {
    pub(crate) fn node(index: usize, op: &'static str, detail: &'static str) -> EngineError {
        EngineError::Node { index, op, detail }
    }

    pub(crate) fn at_node(self, index: usize, op: &'static str) -> EngineError {
        match self {
            EngineError::Op(detail) => EngineError::Node { index, op, detail },
            other => other,
        }
    }
}

/// Shorthand for op-level errors.
pub(crate) fn bad(detail: &'static str) -> EngineError {
    EngineError::Op(detail)
}
