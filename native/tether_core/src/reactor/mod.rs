//! The event loop ("reactor"): one thread that spawns, watches, feeds and stops every child.
//!
//! Why one thread, and why this order of operations:
//! - One epoll set over every child's pidfd and pipes keeps the number of threads flat whatever
//!   the number of children.
//! - Children are cloned on this long-lived thread because `PR_SET_PDEATHSIG` fires when the
//!   *thread* that spawned a child exits: the children then die with the VM, not with a worker.
//! - An exit is seen on the pidfd, never inferred from pipe EOF: a grandchild may hold the pipes
//!   open for as long as it likes. When the pidfd turns readable we reap under the registry lock
//!   (so no caller can signal a recycled pid), then read exactly what the pipes held at that
//!   moment (`FIONREAD`), and only then report the exit. Every byte the child wrote therefore
//!   reaches the listener before the exit does.
//! - A stop runs the child's stop sequence (by default SIGTERM, then SIGKILL after the kill
//!   timeout), one step per deadline. A stopping child whose leader exits early has the rest of
//!   its group killed while the leader is still an unreaped zombie, which keeps the group id from
//!   being reused.
//! - Writes to a child's stdin never block: what the pipe does not take waits in a queue, and
//!   the loop waits for the pipe to become writable. A small write with nothing queued before
//!   it is made by the caller itself, straight to the (non-blocking) pipe, under the registry
//!   lock: an echo round trip then crosses one thread less.
//! - Output is read in chunks of exactly what the pipe holds (`FIONREAD`), into memory the
//!   listener provides ([`Listener::read_output`]): the NIF reads straight into the binary it
//!   sends.
//! - Every request and every event is handled inside `catch_unwind`: a panic is logged and the
//!   loop goes on; the child it concerned is killed and reported as ended, never forgotten.

mod child;
mod companions;
mod event_loop;
mod exit;
mod handle;
mod listener;
mod output;
mod start;
mod stdin;
mod stop;
mod token;

use crate::cgroup::{self, Fresh, Root};
use crate::command::{Command, Group, StopAction, StopStep};
use crate::guard::{self, Reach, Spare, Targets};
use crate::registry::{Entry, KillError, NoProcess, Registry, Tag};
use crate::spawn::{self, ChildStack, SpawnError};
use crate::spawner;
use crate::status::ExitStatus;
use crate::sys;
use crate::watchdog::{Interest, Watchdog};
use crossbeam_channel::{Receiver, Sender};
use nix::errno::Errno;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::registry::WriteError;
pub use child::Flushed;
pub use handle::Reactor;
pub use listener::{Bytes, Counters, Listener, Stream, Usage};

use child::{spared, Child, Pipe, Stdin, Timer, DRAIN_CHECK_FIRST, DRAIN_CHECK_MAX};
use event_loop::{epoll_remove, EventLoop, Silent, DIRECT_WRITE_MAX, READ_CHUNK};
use token::{Source, Token};

pub(super) type Callback = Box<dyn FnOnce() + Send>;

pub(super) enum Request {
    Spawn {
        id: u64,
        command: Box<Command>,
        listener: Box<dyn Listener>,
        tag: Tag,
    },
    Adopt {
        id: u64,
        pid: libc::pid_t,
        command: Box<Command>,
        listener: Box<dyn Listener>,
        tag: Tag,
    },
    Stop {
        id: u64,
        /// The caller took the first step of the stop sequence itself.
        first_step_done: bool,
        /// Also what a child left behind that is kept while its owner lives.
        force: bool,
    },
    StopAll {
        done: Callback,
    },
    Write {
        id: u64,
        data: Bytes,
        /// Bytes of `data` already written (directly, by the caller).
        written: usize,
    },
    CloseStdin {
        id: u64,
    },
    StdinFlushed {
        id: u64,
        flushed: Flushed,
    },
    Counters {
        id: u64,
        reply: Box<dyn FnOnce(Option<Counters>) + Send>,
    },
    SetWatchdog {
        program: Vec<u8>,
    },
    SetSpawner {
        program: Option<Vec<u8>>,
    },
    SetCgroups {
        root: Option<Root>,
    },
    Activate {
        id: u64,
        stream: Option<Stream>,
        credit: Option<u64>,
    },
}

pub(super) struct Shared {
    requests: Sender<Request>,
    wake: OwnedFd,
    registry: Registry,
    next_id: AtomicU64,
    watchdog_pid: AtomicI32,
    spawner_pid: AtomicI32,
    /// Children beyond this are refused (`SpawnError::MaxChildren`).
    max_children: AtomicUsize,
    /// Largest single read from a pipe.
    read_chunk: AtomicUsize,
    /// After pipe traffic, keep polling (without sleeping) this many µs before blocking.
    busy_poll_us: AtomicU64,
    /// Where child cgroups are made, or why there are none.
    cgroups: Mutex<Result<PathBuf, String>>,
    /// The cgroup tree this VM made last, reused when cgroups are configured again.
    cgroup_tree: Mutex<Option<PathBuf>>,
    /// os_pids of exited children whose leftovers are still alive.
    /// os_pid → ids (a number may be reused while an old tree still drains).
    draining: Mutex<BTreeMap<u32, Vec<u64>>>,
}

/// Defaults of the runtime limits (`Reactor::configure`).
pub const DEFAULT_MAX_CHILDREN: usize = 10_000;

/// How the reactor runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Path of the `tether_watchdog` program; `None` runs without one (children then die with
    /// the VM only through `PR_SET_PDEATHSIG`, which does not reach grandchildren).
    pub watchdog: Option<Vec<u8>>,
}
