//! Locks of the memory manager (work in progress).
