//! EnergyPolicy controller: finds energy-starved nodes and Flotta devices and moves work away.
//!
//! The decision logic is the pure [`planner`]; [`snapshot`] turns Kubernetes objects and
//! Prometheus readings into planner inputs; the rest is the runtime that gathers inputs, executes
//! plans and reports (status, Events, metrics), split so each part can be tested on its own.

pub mod actuator;
pub mod leader;
pub mod metrics;
pub mod planner;
pub mod reconciler;
pub mod signals;
pub mod snapshot;
pub mod status;
