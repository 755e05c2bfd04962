//! The resource that ties an OS process to the BEAM: kept by the `Tether.Process` that stands
//! for it, and monitoring the owner. Either end going away stops the OS process.

use rustler::{Env, LocalPid, Monitor, Resource};
use tether_core::Reactor;

pub struct Handle {
    pub id: u64,
    /// A detached process outlives its owner and its handle on purpose.
    pub detach: bool,
    pub reactor: Reactor,
}

#[rustler::resource_impl]
impl Resource for Handle {
    /// The owner died: stop its process (a no-op once it has exited).
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _monitor: Monitor) {
        self.reactor.stop(self.id);
    }
}

impl Drop for Handle {
    /// Nobody holds the handle any more: the process must not outlive it.
    fn drop(&mut self) {
        if !self.detach {
            self.reactor.stop(self.id);
        }
    }
}

/// Watches the owner of a child that has exited while its background jobs are kept
/// (`keep_background`): when the owner dies, they are stopped. Kept alive by the child's
/// listener inside the event loop until the jobs are gone; created on the reactor thread.
pub struct OwnerWatch {
    pub id: u64,
    pub reactor: Reactor,
}

#[rustler::resource_impl]
impl Resource for OwnerWatch {
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _monitor: Monitor) {
        self.reactor.stop_left_behind(self.id);
    }
}
