//! The one error type of wattle.

use crate::DType;

/// Everything that can go wrong in a wattle call. Match on the variant, not the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Tensor shapes do not fit the operation (or a buffer length does not fit the shape).
    #[error("shape mismatch in {op}: {detail}")]
    ShapeMismatch {
        /// The operation that refused the shapes.
        op: &'static str,
        /// What was expected and what was given.
        detail: String,
    },
    /// The operation does not accept this dtype (here, or on this device).
    #[error("{op} does not support dtype {dtype}")]
    UnsupportedDType {
        /// The operation.
        op: &'static str,
        /// The refused dtype.
        dtype: DType,
    },
    /// A row length is not a multiple of the format's block size.
    #[error("row length {len} is not a multiple of the {dtype} block size {block}")]
    BadBlockAlignment {
        /// The block format.
        dtype: DType,
        /// The row length given.
        len: usize,
        /// The block size it must divide.
        block: usize,
    },
    /// A value to quantize is NaN or infinite.
    #[error("cannot quantize a non-finite value (element {index})")]
    NonFinite {
        /// Flat index of the first offending element.
        index: usize,
    },
    /// Operands live on different devices.
    #[error("operands are on different devices: `{0}` and `{1}`")]
    DeviceMismatch(String, String),
    /// A tensor or dispatch exceeds what the device allows.
    #[error("{what} needs {needed} bytes but the device allows {limit}")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Bytes needed.
        needed: u64,
        /// The device's limit.
        limit: u64,
    },
    /// The GPU device was lost or a GPU call failed irrecoverably.
    #[error("device lost: {0}")]
    DeviceLost(String),
    /// A GPU pipeline or shader could not be built.
    #[error("GPU pipeline error: {0}")]
    Pipeline(String),
    /// A requested device, backend or CPU path is not available.
    #[error("not available: {0}")]
    NotAvailable(String),
    /// A bad argument that is not a shape or dtype (e.g. a malformed environment variable).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A malformed or unsupported GGUF file.
    #[error("GGUF: {0}")]
    Gguf(String),
    /// A profile (SPEC §9) that fails to parse, has an unknown version or misses a field; or a
    /// plan no device of the profile can run. The message names what is wrong.
    #[error("profile: {0}")]
    Profile(String),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<wattle_kernels::IsaError> for Error {
    fn from(e: wattle_kernels::IsaError) -> Self {
        Error::NotAvailable(e.to_string())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
