//! EnergyPolicy controller: finds energy-starved nodes and Flotta devices and moves work away.
//!
//! Decisions are pure functions of their inputs and `now` from an injected [`clock`]: the
//! [`planner`] (what to move where) and the [`migration`] state machine (the next step of one
//! move); [`snapshot`] and [`view`] turn Kubernetes objects and Prometheus readings ([`signals`])
//! into planner inputs. The runtime around them, bottom up: [`context`] (settings, clients,
//! caches, clock), [`runtime`] (one policy's memory, the only code that changes it), [`cycle`]
//! (one policy's read → snapshot → plan → execute → status, as one value whose steps
//! [`execute`] (the writes) and [`lifecycle`] (loading, finalizer, cleanup) add to),
//! [`reconciler`] (the run loop). Thin I/O: [`mover`] (EdgeWorkload moves), [`actuator`]
//! (taints, evictions, Events), [`status`], [`metrics`], [`leader`] (Lease election and the fence
//! every write checks), [`stores`] (caches and their health). [`cli`]: the command line.

pub mod actuator;
pub mod cli;
pub mod clock;
pub mod context;
pub mod continuity;
pub mod cycle;
pub mod degrader;
pub mod diagnostics;
pub mod execute;
pub mod forecast;
pub mod ladder;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod migration;
pub mod mover;
pub mod planner;
pub mod power_models;
pub mod reconciler;
pub mod runtime;
pub mod signals;
pub mod sim;
pub mod snapshot;
pub mod status;
pub mod stores;
pub mod view;

pub use cycle::{cycle, cycle_with};
