//! The Rust reference semantics of each algorithm, one module each.
//!
//! The memory store runs these functions; the Lua scripts in `lua/` implement the same rules and
//! are tested against them.

pub mod fixed_window;
