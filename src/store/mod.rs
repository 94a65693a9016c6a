//! The storage engine: one RocksDB per node.

pub mod cell;

pub use cell::Cell;
