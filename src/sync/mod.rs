//! (to be written)

pub mod clock;
pub mod invariants;
pub mod merge;
