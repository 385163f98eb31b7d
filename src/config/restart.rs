//! What a reload cannot change, and the digest that names a configuration, so that operators can
//! see every instance run the same one.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{RedisSettings, Settings};
use crate::rls::descriptor_files;

impl Settings {
    /// Puts back `running`'s value of every key a reload cannot change, and returns the keys
    /// that differed, for the reload to warn about: the listeners, the connections to Redis,
    /// what the breaker and the memory store were built with, and the log format. Each is held
    /// by something built once (a socket, a client, a shared breaker) that a reload keeps.
    pub fn keep_restart_only(&mut self, running: &Settings) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut keep = |key: &'static str, differs: bool| {
            if differs {
                changed.push(key);
            }
        };
        keep("listen", self.listen != running.listen);
        keep("rls.listen", self.rls.listen != running.rls.listen);
        match (&self.redis, &running.redis) {
            (Some(new), Some(old)) => {
                keep("redis.url", new.url.expose() != old.url.expose());
                keep("redis.password", !same_password(new, old));
            }
            (None, None) => {}
            // The memory store for Redis, or Redis for the memory store.
            _ => keep("redis.url", true),
        }
        keep("redis.connections", self.connections != running.connections);
        keep("redis.max_batch", self.max_batch != running.max_batch);
        keep("redis.timeout", self.timeout != running.timeout);
        keep(
            "redis.breaker_failures",
            self.breaker_failures != running.breaker_failures,
        );
        keep(
            "redis.breaker_cool_down",
            self.breaker_cool_down != running.breaker_cool_down,
        );
        keep(
            "memory.max_callers",
            self.max_callers != running.max_callers,
        );
        keep("log.format", self.log_format != running.log_format);
        keep("server", self.server != running.server);
        self.listen = running.listen;
        self.rls.listen = running.rls.listen;
        self.redis = running.redis.clone();
        self.connections = running.connections;
        self.max_batch = running.max_batch;
        self.timeout = running.timeout;
        self.breaker_failures = running.breaker_failures;
        self.breaker_cool_down = running.breaker_cool_down;
        self.max_callers = running.max_callers;
        self.log_format = running.log_format;
        self.server = running.server.clone();
        changed
    }

    /// A digest of what these settings were read from: the effective configuration (what
    /// `check-config` prints, secrets left out) and the descriptor files; the first 16 hex
    /// digits of their SHA-256. Two instances that read the same configuration have the same
    /// digest. It is shown on `/metrics`, so no secret goes into it: a weak password must not
    /// be open to guessing offline.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.effective_toml());
        hash_files(&mut hash, &self.rls.sources);
        base16ct::lower::encode_string(&hash.finalize()[..8])
    }

    /// A fingerprint of what these settings were read from, secrets included, so that a
    /// changed `identity.hash_key` alone is a change to apply: compared, never shown.
    pub fn fingerprint(&self) -> Vec<u8> {
        let mut hash = Sha256::new();
        hash.update(self.digest());
        for secret in self.secrets() {
            // A length before each, so that no two lists of secrets hash alike.
            let secret = secret.unwrap_or("");
            hash.update((secret.len() as u64).to_le_bytes());
            hash.update(secret);
        }
        hash.finalize().to_vec()
    }

    /// The secrets, as configured.
    fn secrets(&self) -> [Option<&str>; 3] {
        [
            self.redis.as_ref().map(|r| r.url.expose()),
            self.redis
                .as_ref()
                .and_then(|r| r.password.as_ref())
                .map(|p| p.expose()),
            self.hash_key.as_ref().map(|k| k.expose()),
        ]
    }

    /// The files a running service watches: the configuration file, and the descriptor files
    /// and directories of `rls.config`.
    pub fn watched(&self) -> Vec<PathBuf> {
        self.file
            .iter()
            .cloned()
            .chain(self.rls.sources.iter().cloned())
            .collect()
    }
}

fn same_password(new: &RedisSettings, old: &RedisSettings) -> bool {
    new.password.as_ref().map(|p| p.expose()) == old.password.as_ref().map(|p| p.expose())
}

/// Feeds `hash` each path's name and contents: a directory's descriptor files in name order
/// (those the loader reads, and no other), anything but a regular file as such, unread (a named
/// pipe would block the read), so that a file appearing, changing or going away changes it.
pub fn hash_files(hash: &mut Sha256, paths: &[PathBuf]) {
    for path in paths {
        if path.is_dir() {
            hash_name(hash, path);
            for file in descriptor_files(path).unwrap_or_default() {
                hash_file(hash, &file);
            }
        } else {
            hash_file(hash, path);
        }
    }
}

fn hash_name(hash: &mut Sha256, path: &Path) {
    hash.update(path.as_os_str().as_encoded_bytes());
    hash.update([0]);
}

fn hash_file(hash: &mut Sha256, path: &Path) {
    hash_name(hash, path);
    let bytes = if path.is_file() {
        std::fs::read(path).ok()
    } else {
        None
    };
    match bytes {
        Some(bytes) => {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
        None => hash.update(u64::MAX.to_le_bytes()),
    }
}
