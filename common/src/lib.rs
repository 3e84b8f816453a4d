//! Everything the xwan eBPF programs and user space must agree on: map names, sizes,
//! `#[repr(C)]` keys and values, verdict reasons, and the few pure functions both sides
//! must compute identically (flow hash, checksum update).
//!
//! With the `user` feature this crate also holds the *plan* (plain Rust description of what
//! the data plane must do, produced by the agent from its configuration) and the *reference
//! model* that executes a plan on a packet the way the kernel programs must.
//!
//! What a reader may change: sizes below can grow (the agent and the programs are rebuilt
//! together); a layout change must be made here only, never by copying a struct elsewhere.
//! The semantics the programs implement are specified in [`model`] (see its module docs);
//! a change of behaviour starts there.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod csum;
pub mod hash;
pub mod maps;

#[cfg(feature = "user")]
pub mod model;
#[cfg(feature = "user")]
pub mod plan;

pub use maps::*;
