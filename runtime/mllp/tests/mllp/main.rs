//! Integration tests for plexus-mllp, in one binary (one link instead of one per file).

mod codec;
mod listener;
mod sender;
mod support;
