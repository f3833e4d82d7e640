//! Hostile guest memory.
