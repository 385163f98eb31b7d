//! What the operator's commands (`tollgate inspect`, `tollgate reset`) share: the Redis they
//! reach, and why they can fail.

use std::time::Duration;

use crate::config::Settings;
use crate::store::redis::Connections;
use crate::store::{RedisStore, StoreError};

/// The least time a command gives Redis to answer: run by hand, it may cross a network that the
/// service's own timeout was not sized for.
const LEAST_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The memory store's counts live inside each running tollgate.
    #[error(
        "the memory store keeps its counts inside each running tollgate, where no other process \
         can reach them; this command needs a store that outlives the process: set redis.url \
         (TOLLGATE_REDIS__URL)"
    )]
    MemoryStore,
    /// `--policy` named no configured policy.
    #[error("--policy {0:?}: no policy has that name; the policies are: {1}")]
    NoSuchPolicy(String, String),
    /// No policy asked for could be keyed for this caller.
    #[error("nothing was reset: {0}")]
    NothingKeyed(String),
    /// Redis did not answer, or answered an error.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CommandError {
    /// The process's exit code: 2 for what the configuration or the command line must change,
    /// as for a configuration mistake; 1 for Redis.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Store(_) => 1,
            _ => 2,
        }
    }
}

/// How long a command waits for each of its calls.
pub fn timeout(settings: &Settings) -> Duration {
    settings.timeout.max(LEAST_TIMEOUT)
}

/// The store a command reads and writes: `settings`' Redis, over one connection, each call on
/// its own, within [`timeout`].
pub async fn store(settings: &Settings) -> Result<RedisStore, CommandError> {
    let redis = settings.redis.as_ref().ok_or(CommandError::MemoryStore)?;
    let connections = Connections {
        count: 1,
        max_batch: 1,
    };
    Ok(RedisStore::connect_with(redis.client_config(), timeout(settings), connections).await?)
}
