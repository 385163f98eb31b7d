//! Running one behavioural test on both stores: the [`Backend`] a test's service counts in,
//! and the macros that run a test against each backend, and each algorithm.

use super::{RedisServer, TestApp};

/// Where a behavioural test's service counts: in process, or in a `redis-server` of its own.
pub enum Backend {
    /// The memory store.
    Memory,
    /// A Redis started for this test.
    Redis(RedisServer),
}

impl Backend {
    /// A fresh Redis.
    pub async fn redis() -> Self {
        Backend::Redis(RedisServer::start().await)
    }

    /// The service for `toml` (limits, identity), counting in this backend.
    ///
    /// Under Redis, a failure answers 503 (`on_error = "deny"`), so it cannot pass for an
    /// admission, and the timeout is generous: a burst queues in a debug build on two cores.
    pub async fn app(&self, toml: &str) -> TestApp {
        let redis = match self {
            Backend::Memory => String::new(),
            Backend::Redis(server) => format!(
                "[redis]\nurl = \"{}\"\non_error = \"deny\"\ntimeout = \"10s\"\n",
                server.url()
            ),
        };
        TestApp::with_toml(&format!("{toml}\n{redis}")).await
    }

    /// The Redis server, when the backend is Redis.
    pub fn server(&self) -> Option<&RedisServer> {
        match self {
            Backend::Memory => None,
            Backend::Redis(server) => Some(server),
        }
    }

    /// The Redis keys, sorted, when the backend is Redis.
    pub async fn keys(&self) -> Option<std::collections::BTreeSet<String>> {
        match self {
            Backend::Memory => None,
            Backend::Redis(server) => Some(server.keys().await.into_iter().collect()),
        }
    }

    /// On Redis, asserts that the keys are exactly `expected`; the memory store has none to see.
    pub async fn assert_keys(&self, expected: &[String]) {
        if let Backend::Redis(server) = self {
            let keys: std::collections::BTreeSet<String> =
                server.keys().await.into_iter().collect();
            assert_eq!(keys, expected.iter().cloned().collect());
        }
    }

    /// After each Redis test: nothing is left without a TTL.
    pub async fn finish(self) {
        if let Backend::Redis(server) = self {
            server.assert_every_key_has_ttl().await;
        }
    }
}

/// Runs one behavioural test, `async fn test(backend: &Backend)`, against the memory store and
/// against Redis.
#[allow(unused_macros)]
macro_rules! on_both_stores {
    ($test:ident) => {
        mod $test {
            #[doc = concat!("`", stringify!($test), "` against the memory store.")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let backend = crate::support::Backend::Memory;
                super::$test(&backend).await;
                backend.finish().await;
            }

            #[doc = concat!("`", stringify!($test), "` against Redis.")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let backend = crate::support::Backend::redis().await;
                super::$test(&backend).await;
                backend.finish().await;
            }
        }
    };
}

/// Runs one scenario, `async fn test(backend: &Backend, algorithm: &str)`, for each algorithm,
/// against the memory store and against Redis.
#[allow(unused_macros)]
macro_rules! for_each_algorithm {
    ($test:ident) => {
        mod $test {
            for_each_algorithm!(@one $test, fixed_window);
            for_each_algorithm!(@one $test, sliding_window);
            for_each_algorithm!(@one $test, token_bucket);
        }
    };
    (@one $test:ident, $algorithm:ident) => {
        mod $algorithm {
            #[doc = concat!("`", stringify!($test), "`: ", stringify!($algorithm), ", in memory.")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let store = crate::support::Backend::Memory;
                super::super::$test(&store, stringify!($algorithm)).await;
                store.finish().await;
            }

            #[doc = concat!("`", stringify!($test), "`: ", stringify!($algorithm), ", in Redis.")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let store = crate::support::Backend::redis().await;
                super::super::$test(&store, stringify!($algorithm)).await;
                store.finish().await;
            }
        }
    };
}
