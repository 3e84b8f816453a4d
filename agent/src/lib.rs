//! The xwan agent library. Data flows config → plan → [`datapath`] (maps and programs) →
//! counters → metrics; each step is one module.

pub mod datapath;
