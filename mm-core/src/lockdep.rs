//! A lockdep-style lock-order checker (work in progress).
