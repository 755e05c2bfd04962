//! tether_core: the process logic of Tether, in plain Rust with no BEAM types.
//!
//! - [`command`]: what to run, as data.
//! - [`spawn`]: clone + exec with a clean child (signals, descriptors, process group).
//! - [`reactor`]: the one event-loop thread that owns every child and reports to [`Listener`]s.
//! - [`registry`]: the live children, for signalling and status queries from other threads.
//! - [`guard`]: the one guarded place that sends signals (never init, every process, the VM).
//! - [`cgroup`]: a cgroup v2 per child, so nothing a child starts escapes.
//! - `watchdog`: keeps the helper program that kills every child group when the VM dies.
//! - [`signal`], [`status`]: names ↔ numbers, wait-status decoding.
//!
//! The NIF crate only translates between Erlang terms and these types.

pub mod cgroup;
pub mod command;
pub mod guard;
pub mod reactor;
pub mod registry;
pub mod signal;
pub mod spawn;
pub mod spawner;
pub mod status;
mod sys;
mod watchdog;

pub use command::{Command, EnvChange, Group, Input, Output, Pty, Rlimit, StopAction, StopStep};
pub use nix::errno::Errno;
pub use reactor::{
    Bytes, Counters, Flushed, Listener, Options, Reactor, Stream, Usage, WriteError,
};
pub use registry::{KillError, NoProcess, State};
pub use spawn::SpawnError;
pub use status::ExitStatus;
