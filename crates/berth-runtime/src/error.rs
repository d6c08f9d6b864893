/// Why a runtime call failed, classified for the agent's decisions.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum RuntimeError {
    /// The runtime could not be reached or did not answer; retry later.
    #[error("cannot reach the container runtime: {0}")]
    Unavailable(String),
    /// Pulling an image failed. The message reads like the ECS agent's, so
    /// the agent can report `CannotPullContainerError: {message}`.
    #[error("{0}")]
    ImagePull(String),
    /// The container does not exist.
    #[error("no such container: {0}")]
    NotFound(String),
    /// The request clashes with existing state, e.g. a name already in use.
    #[error("{0}")]
    Conflict(String),
    /// The runtime rejected the container spec.
    #[error("{0}")]
    InvalidSpec(String),
    /// Anything else the runtime reported.
    #[error("{0}")]
    Other(String),
}
