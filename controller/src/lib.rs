//! EnergyPolicy controller: finds energy-starved nodes and Flotta devices and moves work away.
//!
//! Decisions are pure functions: the [`planner`] (what to move where) and the [`migration`]
//! state machine (the next step of one move). [`snapshot`] turns Kubernetes objects and
//! Prometheus readings into planner inputs. The runtime around them: [`stores`] (caches and
//! their health), [`cycle`] (one policy's read → snapshot → plan → execute → status),
//! [`execute`] and [`mover`] (the writes), [`actuator`] (taints, evictions, Events), [`leader`]
//! (Lease election and the fence every write checks), [`lifecycle`] (loading, finalizer),
//! [`status`], [`metrics`], [`reconciler`] (the run loop).

pub mod actuator;
pub mod cycle;
pub mod diagnostics;
pub mod execute;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod migration;
pub mod mover;
pub mod planner;
pub mod power_models;
pub mod reconciler;
pub mod signals;
pub mod sim;
pub mod snapshot;
pub mod status;
pub mod stores;

pub use cycle::{cycle, cycle_with};
