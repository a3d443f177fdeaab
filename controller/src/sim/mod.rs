//! Inputs of `edgewatt-controller simulate`: the weather a simulated edge node sees and what its
//! solar panel makes of it. Pure and file-format-level only; the simulator drives them.

pub mod pv;
pub mod weather;
