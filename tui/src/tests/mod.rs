//! Screen snapshots and image-protocol tests.
