use kiln_format::FormatError;

/// Why a plan cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Format(#[from] FormatError),
    /// `op` is the op's name, or empty from a runtime built with an op set
    /// (firmware leaves the names out: `kiln inspect --layers` lists them).
    #[error("node {index}{}: {detail}", OpName(.op))]
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

/// ` (Name)`, or nothing for an empty name.
struct OpName<'a>(&'a str);

impl core::fmt::Display for OpName<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, " ({})", self.0)
        }
    }
}

/// The name of `op` for errors: empty in a build with an op set (see
/// `Plan::run_ops`), whose firmware would otherwise carry every op's name.
pub(crate) fn op_name<const OPS: u128>(op: &kiln_format::Op) -> &'static str {
    if OPS == crate::ALL_OPS { op.name() } else { "" }
}

/// Shorthand for op-level errors.
pub(crate) fn bad(detail: &'static str) -> EngineError {
    EngineError::Op(detail)
}
