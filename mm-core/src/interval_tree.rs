//! The augmented interval tree behind each file's `i_mmap` (work in progress).
