use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("event {position} refused: {reason}")]
    BadEvent { position: usize, reason: String },
    #[error("submission of {bytes} bytes is over the {max}-byte limit")]
    SubmissionTooLarge { bytes: usize, max: usize },
    #[error("submission queue is full ({0} waiting)")]
    QueueFull(usize),
    #[error("engine refuses writes: {0}")]
    Failed(String),
    #[error("disk full: {0}")]
    DiskFull(String),
    #[error("engine is shutting down")]
    ShuttingDown,
    /// The writer's lease is not (or no longer) this node's: it does not extend the log.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A read replica takes no writes; the message names where writes go.
    #[error("{0}")]
    ReadOnly(String),
    /// `durability = "remote"`: the events were written locally but the object store did
    /// not confirm them (shutdown, failure, a lost lease): not acknowledged. A retry may
    /// store them twice.
    #[error("not acknowledged: durable locally, but not on the object store: {0}")]
    NotDurableRemotely(String),
    #[error("index {index} is not in the log (size {size})")]
    NotFound { index: u64, size: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: String,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Corrupt { path: PathBuf, what: String },
    /// A read needs a segment that was pruned locally and the object store that holds it
    /// did not answer (or none is configured): worth retrying later.
    #[error("{place}: object store unavailable: {reason}")]
    StoreUnavailable { place: String, reason: String },
    /// Fewer witnesses cosigned a checkpoint than the policy needs: it is not published.
    #[error("witness policy not met: {0}")]
    WitnessPolicy(String),
    /// Only from the `*_cached` calls: the answer needs disk reads; ask the waiting call.
    #[error("the answer needs reads from disk")]
    WouldBlock,
    #[error("configuration: {0}")]
    Config(String),
    #[error("signer: {0}")]
    Signer(String),
    #[error(transparent)]
    Pkcs11(crate::pkcs11::Pkcs11Error),
    #[error(transparent)]
    Kms(crate::kms::KmsError),
    /// A file that holds a secret is a link, open to others, or unreadable.
    #[error(transparent)]
    PrivateFile(#[from] crate::private::PrivateFileError),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// The `map_err` for an I/O error on `path`. Nothing is copied until there is an error:
/// it sits in per-entry loops (leaf-index runs), where building the path and text
/// eagerly was a quarter of the checkpointer's CPU in allocations.
pub(crate) fn io_err<P: AsRef<Path>, W: AsRef<str>>(
    path: P,
    what: W,
) -> impl FnOnce(std::io::Error) -> EngineError {
    move |source| {
        let (path, what) = (path.as_ref().to_path_buf(), what.as_ref().to_string());
        if source.raw_os_error() == Some(libc::ENOSPC) {
            EngineError::DiskFull(format!("{}: {what}", path.display()))
        } else {
            EngineError::Io { path, what, source }
        }
    }
}

pub(crate) fn corrupt(path: impl Into<PathBuf>, what: impl Into<String>) -> EngineError {
    EngineError::Corrupt {
        path: path.into(),
        what: what.into(),
    }
}
