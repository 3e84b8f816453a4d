//! Shared by the privileged data-plane tests.
#![allow(dead_code)]

pub mod frames;
pub mod harness;
pub mod netns;
pub mod plans;
pub mod wan;
