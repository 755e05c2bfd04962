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

use crate::cgroup::{self, Cgroup, Root};
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

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Where the events of one child go. Called on the reactor thread only, in this order:
/// `spawned` once; then any number of `output`; then `exited` once (only after `Ok`).
pub trait Listener: Send {
    fn spawned(&mut self, result: Result<u32, SpawnError>);
    fn output(&mut self, stream: Stream, os_pid: u32, data: &[u8]);
    /// Reads one chunk of at most `len` bytes (what the pipe holds) by calling `read` once, and
    /// delivers it like `output`; returns what `read` returned. Override it to read straight
    /// into memory the listener sends on (no copy); the default reads into `scratch`, which
    /// is at least `len` bytes long.
    fn read_output(
        &mut self,
        stream: Stream,
        os_pid: u32,
        len: usize,
        scratch: &mut [u8],
        read: &mut dyn FnMut(&mut [u8]) -> Result<usize, Errno>,
    ) -> Result<usize, Errno> {
        let buffer = &mut scratch[..len];
        let n = read(buffer)?;
        if n > 0 {
            self.output(stream, os_pid, &buffer[..n]);
        }
        Ok(n)
    }
    /// A flow-controlled stream used its last credit: nothing more is read until `activate`.
    fn passive(&mut self, _stream: Stream, _os_pid: u32) {}
    /// After `exited`: the child's background jobs are kept (`keep_background`) and live on.
    /// Arrange for `Reactor::stop_left_behind(id)` when the owner dies, and return true; false
    /// (the default) has them stopped now.
    fn keep_while_owner_lives(&mut self, _id: u64) -> bool {
        false
    }
    /// `None` when the status cannot be known (an adopted process, or the kernel reaped the
    /// child because SIGCHLD was ignored). `counters` are the child's final byte counts.
    fn exited(
        &mut self,
        os_pid: u32,
        status: Option<ExitStatus>,
        usage: Option<Usage>,
        counters: Counters,
    );
}

/// Resource usage of an exited child (`wait4`'s rusage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub user_time: Duration,
    pub system_time: Duration,
    /// Maximum resident set size, in bytes.
    pub max_rss: u64,
    /// CPU time of everything that ran in the child's cgroup (with cgroups).
    pub tree_cpu_usec: Option<u64>,
    /// Peak memory of the child's cgroup (where the memory controller is enabled).
    pub tree_memory_peak: Option<u64>,
}

/// Bytes to write to a child's stdin, owned by whoever produced them (the NIF keeps Erlang
/// binaries alive without copying them).
pub type Bytes = Box<dyn AsRef<[u8]> + Send>;

type Callback = Box<dyn FnOnce() + Send>;

/// Counters of one child, as `info` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdin_bytes: u64,
    /// The child wrote more than its `max_output`: the first `max_output` bytes were delivered,
    /// nothing after them.
    pub output_capped: bool,
}

/// How many bytes one read may take, at most `want`, so that a child with a `max_output` of
/// `max` never has more than `max` bytes delivered when `delivered` already were (0: the cap is
/// reached).
pub(crate) fn output_allowance(want: usize, max: Option<u64>, delivered: u64) -> usize {
    match max {
        None => want,
        Some(max) => {
            let left = max.saturating_sub(delivered);
            want.min(usize::try_from(left).unwrap_or(usize::MAX))
        }
    }
}

enum Request {
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

struct Shared {
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

/// Why a write to stdin was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    NoProcess,
    /// The child has no stdin pipe, or it was closed.
    Closed,
}

/// A handle to the event loop. Cheap to clone; every method returns without waiting.
#[derive(Clone)]
pub struct Reactor {
    shared: Arc<Shared>,
}

impl Reactor {
    /// Starts the event-loop thread (and the watchdog program, when one is given).
    pub fn start(options: Options) -> Result<Reactor, Errno> {
        let (requests, receiver) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            requests,
            wake: sys::eventfd()?,
            registry: Registry::default(),
            next_id: AtomicU64::new(1),
            watchdog_pid: AtomicI32::new(0),
            spawner_pid: AtomicI32::new(0),
            max_children: AtomicUsize::new(DEFAULT_MAX_CHILDREN),
            read_chunk: AtomicUsize::new(READ_CHUNK),
            busy_poll_us: AtomicU64::new(0),
            cgroups: Mutex::new(Err("not configured yet".into())),
            cgroup_tree: Mutex::new(None),
            draining: Mutex::new(BTreeMap::new()),
        });
        let mut event_loop = EventLoop::new(shared.clone(), receiver, options)?;
        event_loop.start_watchdog();
        std::thread::Builder::new()
            .name("tether-reactor".into())
            .spawn(move || event_loop.run())
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)))?;
        Ok(Reactor { shared })
    }

    fn send(&self, request: Request) {
        // The receiver lives as long as the loop thread, which never returns.
        let _ = self.shared.requests.send(request);
        sys::eventfd_signal(self.shared.wake.as_raw_fd());
    }

    fn next_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a spawn and returns the child's id at once. The listener hears the outcome.
    pub fn spawn(&self, command: Command, listener: Box<dyn Listener>, tag: Tag) -> u64 {
        let id = self.next_id();
        self.send(Request::Spawn {
            id,
            command: Box::new(command),
            listener,
            tag,
        });
        id
    }

    /// Watches a process this reactor did not start (its exit status cannot be known). The
    /// command supplies the stop sequence, the kill-group setting and the limits.
    pub fn adopt(
        &self,
        pid: libc::pid_t,
        command: Command,
        listener: Box<dyn Listener>,
        tag: Tag,
    ) -> u64 {
        let id = self.next_id();
        self.send(Request::Adopt {
            id,
            pid,
            command: Box::new(command),
            listener,
            tag,
        });
        id
    }

    /// Stops child `id` by running its stop sequence: the child while it runs, and after its
    /// exit what it left behind (unless that is kept while its owner lives: see
    /// [`Reactor::stop_left_behind`]).
    pub fn stop(&self, id: u64) {
        self.send(Request::Stop {
            id,
            first_step_done: false,
            force: false,
        });
    }

    /// Stops child `id` and everything it left behind, kept or not (its owner is gone).
    pub fn stop_left_behind(&self, id: u64) {
        self.send(Request::Stop {
            id,
            first_step_done: false,
            force: true,
        });
    }

    /// Like [`Reactor::stop`], by os_pid. A first step that is a signal is sent from the
    /// calling thread: stopping many children then does not queue up behind the loop. For a
    /// child that has exited while what it started is kept (`keep_background`), stops that.
    pub fn stop_os_pid(&self, os_pid: u32) -> Result<(), NoProcess> {
        let started = match self.shared.registry.begin_stop(os_pid) {
            Err(NoProcess) => {
                let draining = self
                    .shared
                    .draining
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let ids = draining.get(&os_pid).ok_or(NoProcess)?;
                for &id in ids {
                    self.stop_left_behind(id);
                }
                return Ok(());
            }
            started => started?,
        };
        if let Some((id, first_step_done)) = started {
            self.send(Request::Stop {
                id,
                first_step_done,
                force: false,
            });
        }
        Ok(())
    }

    /// Sends `signal` to a live child and, with `kill_group`, to its group.
    pub fn kill(&self, os_pid: u32, signal: i32) -> Result<(), KillError> {
        self.shared.registry.kill(os_pid, signal)
    }

    /// Chooses cgroup containment for the children started from now on: in `base` (default:
    /// the VM's own cgroup), as `mode` says. Returns the directory in use, `None` when off
    /// (with `Mode::Auto` the reason is kept for [`Reactor::cgroups`]), or why `Required`
    /// cannot be met.
    pub fn configure_cgroups(
        &self,
        mode: cgroup::Mode,
        base: Option<PathBuf>,
    ) -> Result<Option<PathBuf>, String> {
        let mut made = self
            .shared
            .cgroup_tree
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let root = match mode {
            cgroup::Mode::Off => Err("disabled by configuration".to_string()),
            _ => base
                .map(Ok)
                .unwrap_or_else(cgroup::default_base)
                .and_then(|base| match made.as_ref() {
                    // Configured again (the application restarted): this VM's tree stays.
                    Some(path) if path.parent() == Some(base.as_path()) => {
                        Ok(Root::at(path.clone()))
                    }
                    _ => Root::create(&base),
                }),
        };
        if let Ok(root) = &root {
            *made = Some(root.path.clone());
        }
        drop(made);
        let status = root.as_ref().map(|r| r.path.clone()).map_err(Clone::clone);
        if let (cgroup::Mode::Required, Err(reason)) = (&mode, &root) {
            return Err(reason.clone());
        }
        *self
            .shared
            .cgroups
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = status.clone();
        self.send(Request::SetCgroups { root: root.ok() });
        Ok(status.ok())
    }

    /// The directory child cgroups are made in, or why there is none.
    pub fn cgroups(&self) -> Result<PathBuf, String> {
        self.shared
            .cgroups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// os_pids of exited children whose background jobs (group members, cgroup processes) are
    /// still alive, ascending.
    pub fn draining(&self) -> Vec<u32> {
        let draining = self
            .shared
            .draining
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        draining.keys().copied().collect()
    }

    /// Writes `data` to the child's stdin, or queues what the pipe does not take at once.
    /// Never blocks. A small write with nothing queued before it goes straight to the pipe from
    /// the calling thread, which spares a round trip through the event loop.
    pub fn write(&self, os_pid: u32, data: Bytes) -> Result<(), WriteError> {
        let queued =
            self.shared
                .registry
                .write_or_queue(os_pid, (*data).as_ref(), DIRECT_WRITE_MAX)?;
        if let Some((id, written)) = queued {
            self.send(Request::Write { id, data, written });
        }
        Ok(())
    }

    /// Closes the child's stdin once everything queued before has been written.
    pub fn close_stdin(&self, os_pid: u32) -> Result<(), WriteError> {
        let id = self.shared.registry.stdin_id(os_pid, true)?;
        self.send(Request::CloseStdin { id });
        Ok(())
    }

    /// Calls `flushed(true)` on the loop thread once everything written to the child's stdin
    /// so far is in the pipe, or `flushed(false)` if the pipe closes (or the child exits) first.
    /// For a producer that must not run ahead of the child.
    pub fn when_stdin_flushed(&self, os_pid: u32, flushed: Flushed) -> Result<(), WriteError> {
        let id = self.shared.registry.stdin_id(os_pid, false)?;
        self.send(Request::StdinFlushed { id, flushed });
        Ok(())
    }

    /// Sets the size of the child's pseudo-terminal (no-op without one), before returning: a
    /// write that follows sees the new size.
    pub fn set_window_size(&self, os_pid: u32, rows: u16, cols: u16) -> Result<(), NoProcess> {
        self.shared.registry.set_window_size(os_pid, rows, cols)
    }

    /// Asks for the byte counters of a child; `reply` runs on the loop thread.
    pub fn counters(
        &self,
        os_pid: u32,
        reply: Box<dyn FnOnce(Option<Counters>) + Send>,
    ) -> Result<(), NoProcess> {
        let id = self.shared.registry.id(os_pid)?;
        self.send(Request::Counters { id, reply });
        Ok(())
    }

    /// Stops every child that is not detached; `done` runs on the loop thread once none is left.
    pub fn stop_all(&self, done: Callback) {
        self.send(Request::StopAll { done });
    }

    /// The live children.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Sets the runtime limits: the most children at once, the largest read from a pipe
    /// (1 KiB to 16 MiB), and how long the loop keeps polling after pipe traffic before it
    /// sleeps (at most 10 ms; 0: never). Applies from the loop's next wake-up.
    ///
    /// Busy polling trades CPU for latency: a thread woken from sleep costs 10–40 µs on a
    /// virtual machine, and the reply to what a child just wrote or read often comes back
    /// sooner than that.
    pub fn configure(&self, max_children: usize, read_chunk: usize, busy_poll: Duration) {
        self.shared
            .max_children
            .store(max_children, Ordering::Relaxed);
        let read_chunk = read_chunk.clamp(1024, 16 << 20);
        self.shared.read_chunk.store(read_chunk, Ordering::Relaxed);
        let busy_poll = busy_poll.as_micros().min(10_000) as u64;
        self.shared.busy_poll_us.store(busy_poll, Ordering::Relaxed);
        // The loop picks the new size up at its next wake-up.
        sys::eventfd_signal(self.shared.wake.as_raw_fd());
    }

    /// Grants read credit to a flow-controlled stream of the child (`None`: both): `Some(n)`
    /// more messages (`Some(1)` is gen_tcp's `:once`), `None` to read freely again.
    pub fn activate(
        &self,
        os_pid: u32,
        stream: Option<Stream>,
        credit: Option<u64>,
    ) -> Result<(), NoProcess> {
        let id = self.shared.registry.id(os_pid)?;
        self.send(Request::Activate { id, stream, credit });
        Ok(())
    }

    /// Starts the watchdog program at `program` if none was given yet. A program that is
    /// already running is kept (changing it needs a new VM).
    pub fn set_watchdog(&self, program: Vec<u8>) {
        self.send(Request::SetWatchdog { program });
    }

    /// Clones children from the spawner program at `program` (`None`: from the reactor thread).
    /// It starts with the next spawn.
    pub fn set_spawner(&self, program: Option<Vec<u8>>) {
        self.send(Request::SetSpawner { program });
    }

    /// The spawner program's pid while it runs.
    pub fn spawner_pid(&self) -> Option<u32> {
        match self.shared.spawner_pid.load(Ordering::Relaxed) {
            0 => None,
            pid => Some(pid as u32),
        }
    }

    /// The watchdog program's pid while it runs.
    pub fn watchdog_pid(&self) -> Option<u32> {
        match self.shared.watchdog_pid.load(Ordering::Relaxed) {
            0 => None,
            pid => Some(pid as u32),
        }
    }
}

/// Output of a child still being read.
struct Pipe {
    stream: Stream,
    fd: OwnedFd,
    /// Messages it may still send (flow control); `None`: no limit.
    credit: Option<u64>,
    /// Registered in the epoll set (not while out of credit).
    watching: bool,
    /// After the child's exit: the bytes still owed (what the pipe held at the exit).
    owed: Option<usize>,
}

/// What waits to be written to a child's stdin.
struct Stdin {
    fd: OwnedFd,
    queue: VecDeque<Bytes>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Close once the queue is empty.
    eof: bool,
    /// Registered for EPOLLOUT.
    watching: bool,
    /// Told once the queue is empty (true), or that it never will be (false).
    flushed: Vec<Flushed>,
}

/// Tells whether a child's stdin queue was written out (`Reactor::when_stdin_flushed`).
pub type Flushed = Box<dyn FnOnce(bool) + Send>;

impl Stdin {
    /// Tells the waiters once nothing is queued.
    fn notify_if_flushed(&mut self) {
        if self.queue.is_empty() {
            for flushed in self.flushed.drain(..) {
                let _ = catch_unwind(AssertUnwindSafe(|| flushed(true)));
            }
        }
    }
}

impl Drop for Stdin {
    /// Closed (or the child gone): what is still queued will never be written.
    fn drop(&mut self) {
        let written = self.queue.is_empty();
        for flushed in self.flushed.drain(..) {
            let _ = catch_unwind(AssertUnwindSafe(|| flushed(written)));
        }
    }
}

struct Child {
    os_pid: u32,
    pid: libc::pid_t,
    /// The child, its group and its cgroup (shared with the registry): where signals go.
    targets: Arc<Targets>,
    pipes: Vec<Pipe>,
    stdin: Option<Stdin>,
    /// With a pty: the master, for the window size (its number is in the registry, which
    /// forgets it before this closes).
    terminal: Option<OwnedFd>,
    listener: Box<dyn Listener>,
    stop: Vec<StopStep>,
    /// The step a stop runs next (after the one in progress).
    next_step: usize,
    stop_deadline: Option<Instant>,
    /// The child leads its own group, which the watchdog then guards.
    leads_group: bool,
    detach: bool,
    /// After the child's exit, what it started lives on until the owner dies (or a stop).
    keep_background: bool,
    /// Reported as exited; what it started is still alive and is being stopped (or kept).
    draining: bool,
    /// While draining with a cgroup: its `cgroup.events`, watched for `populated 0`.
    events: Option<OwnedFd>,
    drain_check: Option<(Instant, Duration)>,
    /// Kill commands started by its stop sequence: stopped when it is gone.
    helpers: Vec<u64>,
    /// Not our child: no reaping, no status.
    adopted: bool,
    stopping: bool,
    idle_timeout: Option<Duration>,
    idle_deadline: Option<Instant>,
    last_output: Instant,
    max_output: Option<u64>,
    /// Once the output went over `max_output`: its pipes, no longer read but kept open until
    /// it is reported (closing them would end it with SIGPIPE before its stop could).
    muted: Vec<OwnedFd>,
    counters: Counters,
    /// Reaped, with its status; reported once every owed byte is delivered.
    exit: Option<(Option<ExitStatus>, Option<Usage>)>,
}

/// The children of ours that joined the group `targets` leads, and what they started: a drain
/// spares them.
fn spared(registry: &Registry, targets: &Targets) -> Spare {
    if targets.has_joiners() {
        Spare::of(registry.joiners(targets.pid), targets.cgroup.is_some())
    } else {
        Spare::default()
    }
}

impl Child {
    /// A child with nothing watched yet, stopped as `command` says.
    fn new(targets: Targets, listener: Box<dyn Listener>, command: &Command) -> Child {
        Child {
            os_pid: targets.pid as u32,
            pid: targets.pid,
            targets: Arc::new(targets),
            pipes: Vec::new(),
            stdin: None,
            terminal: None,
            listener,
            stop: command.stop_sequence(),
            next_step: 0,
            stop_deadline: None,
            leads_group: false,
            detach: command.detach,
            keep_background: command.keep_background,
            draining: false,
            events: None,
            drain_check: None,
            helpers: Vec::new(),
            adopted: false,
            stopping: false,
            idle_timeout: None,
            idle_deadline: None,
            last_output: Instant::now(),
            max_output: None,
            muted: Vec::new(),
            counters: Counters::default(),
            exit: None,
        }
    }

    fn pidfd(&self) -> RawFd {
        self.targets.pidfd.as_raw_fd()
    }

    /// Where the steps of its stop sequence reach: after its exit, what it left behind.
    fn stop_reach(&self) -> Reach {
        if self.exit.is_some() {
            Reach::Drain
        } else {
            Reach::Stop
        }
    }

    /// Its counters, with the bytes callers wrote to its stdin directly.
    fn counters_now(&self, shared: &Shared) -> Counters {
        let mut counters = self.counters;
        counters.stdin_bytes += shared.registry.stdin_direct_bytes(self.os_pid);
        counters
    }

    /// Whether the watchdog guards this child's group.
    fn guarded(&self) -> bool {
        self.leads_group && !self.detach && !self.adopted
    }
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    StopStep,
    Idle,
    /// Whether a draining child's leftovers are gone yet.
    DrainCheck,
    /// A kill command's time is up.
    HelperLimit,
}

/// First and longest interval between two checks of a draining group.
const DRAIN_CHECK_FIRST: Duration = Duration::from_millis(20);
const DRAIN_CHECK_MAX: Duration = Duration::from_secs(1);

const WAKE_TOKEN: u64 = 0;
const WATCHDOG_EXIT_TOKEN: u64 = 1;
const WATCHDOG_STDIN_TOKEN: u64 = 2;
/// Below every child's token (ids start at 1) and of no pipe kind.
const SPAWNER_EXIT_TOKEN: u64 = 5;
// Child ids start at 1, so child tokens (`id << 3 | kind`) never collide with the above.
const KIND_EXIT: u64 = 0;
const KIND_STDOUT: u64 = 1;
const KIND_STDERR: u64 = 2;
const KIND_STDIN: u64 = 3;
const KIND_CGROUP: u64 = 4;
const KIND_BITS: u64 = 3;
const KIND_MASK: u64 = (1 << KIND_BITS) - 1;
/// Largest write a caller makes straight to a child's stdin (bigger ones go through the loop).
const DIRECT_WRITE_MAX: usize = 64 * 1024;
/// Requests handled per wake-up before the loop looks at its other events again.
const REQUEST_BATCH: usize = 32;
/// Largest single read: big reads make big off-heap binaries, cheap to send.
const READ_CHUNK: usize = 1 << 20;

fn token(id: u64, kind: u64) -> u64 {
    (id << KIND_BITS) | kind
}

struct EventLoop {
    shared: Arc<Shared>,
    receiver: Receiver<Request>,
    epoll: OwnedFd,
    children: HashMap<u64, Child>,
    timers: BTreeSet<(Instant, u64, Timer)>,
    stop_all_waiters: Vec<Callback>,
    stack: ChildStack,
    dev_null: OwnedFd,
    buffer: Vec<u8>,
    watchdog: Watchdog,
    /// The small process children are cloned from.
    spawner: spawner::Client,
    /// Where child cgroups are made (`None`: no cgroups).
    cgroups: Option<Root>,
}

/// A listener for the helpers the loop starts itself (kill commands): nobody hears them.
struct Silent;

impl Listener for Silent {
    fn spawned(&mut self, _: Result<u32, SpawnError>) {}
    fn output(&mut self, _: Stream, _: u32, _: &[u8]) {}
    fn exited(&mut self, _: u32, _: Option<ExitStatus>, _: Option<Usage>, _: Counters) {}
}

impl EventLoop {
    fn new(
        shared: Arc<Shared>,
        receiver: Receiver<Request>,
        options: Options,
    ) -> Result<EventLoop, Errno> {
        // SAFETY: epoll_create1 has no memory arguments; the fd is owned just below.
        let epoll = sys::cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: a fresh descriptor owned by nobody else.
        let epoll = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(epoll) };
        let event_loop = EventLoop {
            receiver,
            epoll,
            children: HashMap::new(),
            timers: BTreeSet::new(),
            stop_all_waiters: Vec::new(),
            stack: ChildStack::default(),
            dev_null: sys::open_dev_null()?,
            buffer: vec![0; READ_CHUNK],
            watchdog: Watchdog::new(options.watchdog),
            spawner: spawner::Client::new(),
            cgroups: None,
            shared,
        };
        event_loop.watch(
            event_loop.shared.wake.as_raw_fd(),
            WAKE_TOKEN,
            libc::EPOLLIN,
        )?;
        Ok(event_loop)
    }

    fn watch(&self, fd: RawFd, token: u64, events: i32) -> Result<(), Errno> {
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event; the fd is open.
        sys::cvt(unsafe {
            libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event)
        })
        .map(drop)
    }

    fn unwatch(&self, fd: RawFd) {
        epoll_remove(self.epoll.as_raw_fd(), fd);
    }

    fn run(&mut self) -> ! {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut last_event = Instant::now();
        loop {
            let busy_poll = self.shared.busy_poll_us.load(Ordering::Relaxed);
            let timeout = if (last_event.elapsed().as_micros() as u64) < busy_poll {
                0
            } else {
                self.poll_timeout()
            };
            // SAFETY: `events` has room for `events.len()` entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout,
                )
            };
            let ready = &events[..n.max(0) as usize];
            // A dead watchdog first: groups are unguarded until its successor runs.
            if ready.iter().any(|e| e.u64 == WATCHDOG_EXIT_TOKEN) {
                self.guarded(0, |this| this.dispatch(WATCHDOG_EXIT_TOKEN));
            }
            for event in ready.iter().filter(|e| e.u64 != WATCHDOG_EXIT_TOKEN) {
                // Only pipe traffic starts a busy poll: that is where replies come back fast
                // (not after a spawn or an exit, when it would only take a core from children).
                let kind = event.u64 & KIND_MASK;
                if event.u64 > WATCHDOG_STDIN_TOKEN && (KIND_STDOUT..=KIND_STDIN).contains(&kind) {
                    last_event = Instant::now();
                }
                let token = event.u64;
                self.guarded(token >> KIND_BITS, |this| this.dispatch(token));
            }
            self.guarded(0, Self::fire_timers);
            if self.watchdog.next_start().is_some() {
                self.guarded(0, Self::start_watchdog);
            }
        }
    }

    /// Runs `f`, and if it panics, logs it and ends child `id` (0: no child concerned).
    fn guarded(&mut self, id: u64, f: impl FnOnce(&mut Self)) {
        if catch_unwind(AssertUnwindSafe(|| f(self))).is_err() {
            eprintln!("tether: the event loop recovered from a panic (child id {id})");
            let _ = catch_unwind(AssertUnwindSafe(|| self.abandon(id)));
        }
    }

    fn poll_timeout(&self) -> i32 {
        let next = self.timers.first().map(|(at, _, _)| *at);
        let next = match (next, self.watchdog.next_start()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            None => -1,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                // Round up so we never wake just before the deadline and spin.
                left.as_millis().saturating_add(1).min(i32::MAX as u128) as i32
            }
        }
    }

    fn dispatch(&mut self, token: u64) {
        match token {
            WAKE_TOKEN => {
                sys::eventfd_drain(self.shared.wake.as_raw_fd());
                let chunk = self.shared.read_chunk.load(Ordering::Relaxed);
                if chunk != self.buffer.len() {
                    self.buffer = vec![0; chunk];
                }
                // A bounded batch, so that exits and the watchdog are not kept waiting behind a
                // flood of spawns; the rest wakes the loop again at once.
                for _ in 0..REQUEST_BATCH {
                    match self.receiver.try_recv() {
                        Ok(request) => self.handle(request),
                        Err(_) => return,
                    }
                }
                sys::eventfd_signal(self.shared.wake.as_raw_fd());
            }
            WATCHDOG_EXIT_TOKEN => self.on_watchdog_exit(),
            SPAWNER_EXIT_TOKEN => {
                self.spawner.on_exit();
                self.note_spawner();
            }
            WATCHDOG_STDIN_TOKEN => {
                let writable = self.watchdog.flush();
                self.apply_writable(writable);
            }
            _ => {
                let id = token >> KIND_BITS;
                match token & KIND_MASK {
                    KIND_EXIT => self.on_exit(id),
                    KIND_STDOUT => self.on_readable(id, Stream::Stdout),
                    KIND_STDERR => self.on_readable(id, Stream::Stderr),
                    KIND_STDIN => self.flush_stdin(id),
                    _ => self.check_drained(id, true),
                }
            }
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Spawn {
                id,
                command,
                listener,
                tag,
            } => self.guarded(id, |this| this.spawn(id, &command, listener, Some(tag))),
            Request::Adopt {
                id,
                pid,
                command,
                listener,
                tag,
            } => self.guarded(id, |this| this.adopt(id, pid, &command, listener, tag)),
            Request::Stop {
                id,
                first_step_done,
                force,
            } => self.guarded(id, |this| this.begin_stop(id, first_step_done, force)),
            Request::StopAll { done } => {
                let ids: Vec<u64> = self
                    .children
                    .iter()
                    .filter(|(_, child)| !child.detach)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.guarded(id, |this| this.begin_stop(id, false, true));
                }
                self.stop_all_waiters.push(done);
                self.notify_if_idle();
            }
            Request::Write { id, data, written } => self.guarded(id, |this| {
                let Some(child) = this.children.get_mut(&id) else {
                    return;
                };
                match child.stdin.as_mut() {
                    Some(stdin) if !stdin.eof => {
                        if stdin.queue.is_empty() {
                            stdin.offset = written;
                        }
                        stdin.queue.push_back(data);
                    }
                    _ => this.shared.registry.stdin_dequeued(child.os_pid),
                }
                this.flush_stdin(id);
            }),
            Request::CloseStdin { id } => self.guarded(id, |this| {
                if let Some(stdin) = this.children.get_mut(&id).and_then(|c| c.stdin.as_mut()) {
                    stdin.eof = true;
                }
                this.flush_stdin(id);
            }),
            Request::Activate { id, stream, credit } => {
                self.guarded(id, |this| this.activate(id, stream, credit))
            }
            Request::SetCgroups { root } => {
                if let Some(root) = &root {
                    let writable = self.watchdog.add_cgroup_root(root.path.clone());
                    self.apply_writable(writable);
                }
                self.cgroups = root;
            }
            Request::SetSpawner { program } => {
                self.spawner.set_program(program);
                self.note_spawner();
            }
            Request::SetWatchdog { program } => {
                if self.watchdog.set_program(program) {
                    self.guarded(0, Self::start_watchdog);
                }
            }
            Request::StdinFlushed { id, flushed } => {
                match self.children.get_mut(&id).and_then(|c| c.stdin.as_mut()) {
                    Some(stdin) => {
                        stdin.flushed.push(flushed);
                        stdin.notify_if_flushed();
                    }
                    None => {
                        let _ = catch_unwind(AssertUnwindSafe(|| flushed(false)));
                    }
                }
            }
            Request::Counters { id, reply } => {
                let counters = self.children.get(&id).map(|c| c.counters_now(&self.shared));
                let _ = catch_unwind(AssertUnwindSafe(|| reply(counters)));
            }
        }
    }

    // ── Starting ─────────────────────────────────────────────────────────────────────────────

    /// Spawns a child. `tag: None` marks the loop's own helpers (kill commands): not
    /// registered, never reported, bounded by the stop of the child that started them.
    fn spawn(
        &mut self,
        id: u64,
        command: &Command,
        mut listener: Box<dyn Listener>,
        tag: Option<Tag>,
    ) {
        let limit = self.shared.max_children.load(Ordering::Relaxed);
        if tag.is_some() && self.shared.registry.len() >= limit {
            return listener.spawned(Err(SpawnError::MaxChildren));
        }
        let group = match command.group {
            Group::Join(pgid) => match self.shared.registry.group_leader(pgid) {
                // Only the group of a live child of ours: never the VM's, never a stranger's.
                Some(leader) => Some(guard::Group {
                    pgid,
                    leader: Some(leader),
                }),
                None => return listener.spawned(Err(SpawnError::BadGroup)),
            },
            _ => None,
        };
        let cgroup = match self.child_cgroup(id, command) {
            Ok(cgroup) => cgroup,
            Err(error) => return listener.spawned(Err(error)),
        };
        let procs = cgroup.as_ref().map(|c| c.procs.as_c_str());
        let spawned = catch_unwind(AssertUnwindSafe(|| {
            spawn::spawn_with(
                command,
                &mut self.stack,
                self.dev_null.as_raw_fd(),
                procs,
                Some(&mut self.spawner),
                0,
            )
        }))
        .unwrap_or(Err(SpawnError::Internal));
        self.note_spawner();
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(error) => {
                if let Some(cgroup) = cgroup {
                    cgroup.remove();
                }
                return listener.spawned(Err(error));
            }
        };
        let group = match group {
            Some(joined) => Some(joined),
            None if command.leads_group() => Some(guard::Group {
                pgid: spawned.pid,
                leader: None,
            }),
            None => None,
        };
        if let Some(leader) = group.as_ref().and_then(|g| g.leader.as_ref()) {
            leader.joiners.fetch_add(1, Ordering::Relaxed);
        }
        let targets = Targets {
            pid: spawned.pid,
            pidfd: spawned.pidfd,
            group,
            kill_group: command.kill_group,
            cgroup,
            joiners: Default::default(),
        };
        let mut child = Child::new(targets, listener, command);
        for (fd, stream, kind, credit) in [
            (
                spawned.stdout,
                Stream::Stdout,
                KIND_STDOUT,
                command.stdout_credit,
            ),
            (
                spawned.stderr,
                Stream::Stderr,
                KIND_STDERR,
                command.stderr_credit,
            ),
        ] {
            if let Some(fd) = fd {
                let watching = credit != Some(0)
                    && self
                        .watch(fd.as_raw_fd(), token(id, kind), libc::EPOLLIN)
                        .is_ok();
                child.pipes.push(Pipe {
                    stream,
                    fd,
                    credit,
                    watching,
                    owed: None,
                });
            }
        }
        child.stdin = spawned.stdin.map(|fd| Stdin {
            fd,
            queue: VecDeque::new(),
            offset: 0,
            eof: false,
            watching: false,
            flushed: Vec::new(),
        });
        child.terminal = spawned.terminal;
        child.leads_group = command.leads_group();
        child.idle_timeout = command.idle_timeout;
        child.max_output = command.max_output;
        self.insert(id, child, tag);
    }

    /// A new cgroup for a child that is not detached, when cgroups are in use. Limits without
    /// cgroups (or without their controller) are refused, never ignored.
    fn child_cgroup(&self, id: u64, command: &Command) -> Result<Option<Cgroup>, SpawnError> {
        let root = match (&self.cgroups, command.detach) {
            (Some(root), false) => root,
            _ if command.cgroup_limits.is_empty() => return Ok(None),
            _ => return Err(SpawnError::CgroupLimitsUnavailable),
        };
        match root.child(id, &command.cgroup_limits) {
            Ok(cgroup) => Ok(Some(cgroup)),
            Err(Errno::ENOTSUP) => Err(SpawnError::CgroupLimitsUnavailable),
            Err(errno) => Err(SpawnError::Os(errno)),
        }
    }

    fn adopt(
        &mut self,
        id: u64,
        pid: libc::pid_t,
        command: &Command,
        mut listener: Box<dyn Listener>,
        tag: Tag,
    ) {
        let pidfd = match sys::pidfd_open(pid) {
            Ok(pidfd) => pidfd,
            Err(errno) => return listener.spawned(Err(SpawnError::Os(errno))),
        };
        let mut targets = Targets::process(pid, pidfd);
        // Not ours: with kill_group, the group it leads (the caller checked that it leads one).
        if command.kill_group {
            targets.group = Some(guard::Group {
                pgid: pid,
                leader: None,
            });
            targets.kill_group = true;
        }
        let mut child = Child::new(targets, listener, command);
        child.adopted = true;
        child.detach = command.detach;
        self.insert(id, child, Some(tag));
    }

    /// Starts watching a started child, registers it and tells its listener.
    fn insert(&mut self, id: u64, mut child: Child, tag: Option<Tag>) {
        let _ = self.watch(child.pidfd(), token(id, KIND_EXIT), libc::EPOLLIN);
        if let Some(tag) = tag {
            self.shared.registry.insert(
                child.os_pid,
                Entry {
                    id,
                    targets: child.targets.clone(),
                    leads_group: child.leads_group,
                    stopping: false,
                    stdin: child.stdin.is_some(),
                    first_stop_signal: match child.stop.first().map(|step| &step.action) {
                        Some(StopAction::Signal(signal)) => Some(*signal),
                        _ => None,
                    },
                    stdin_fd: child.stdin.as_ref().map(|s| s.fd.as_raw_fd()),
                    terminal_fd: child.terminal.as_ref().map(|t| t.as_raw_fd()),
                    stdin_queued: 0,
                    stdin_direct_bytes: 0,
                    exited: false,
                    tag,
                },
            );
        }
        if child.guarded() {
            let writable = self.watchdog.guard(child.pid, child.pidfd());
            self.apply_writable(writable);
        }
        if let Some(idle) = child.idle_timeout {
            let at = Instant::now() + idle;
            child.idle_deadline = Some(at);
            self.timers.insert((at, id, Timer::Idle));
        }
        child.listener.spawned(Ok(child.os_pid));
        self.children.insert(id, child);
    }

    // ── Stopping ─────────────────────────────────────────────────────────────────────────────

    /// Starts the stop sequence of child `id`. A draining child whose leftovers are kept while
    /// its owner lives is stopped only when `force`d (its owner died, or everything stops).
    fn begin_stop(&mut self, id: u64, first_step_done: bool, force: bool) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        if child.draining {
            if child.stopping || (child.keep_background && !force) {
                return;
            }
            child.stopping = true;
            child.next_step = 0;
            return self.run_stop_steps(id);
        }
        if child.exit.is_some() {
            // Exited, output still owed to an owner that is gone (the only one who stops an
            // exited child): deliver nothing more, report now.
            let pipes = std::mem::take(&mut child.pipes);
            for pipe in pipes {
                self.unwatch(pipe.fd.as_raw_fd());
            }
            if let Some(child) = self.children.get_mut(&id) {
                // What it left behind is stopped at once, kept or not.
                child.keep_background = false;
            }
            return self.finish_if_done(id);
        }
        if child.stopping {
            return;
        }
        child.stopping = true;
        self.shared.registry.mark_stopping(child.os_pid);
        if first_step_done {
            // The caller sent the first signal: wait as that step says, then go on.
            child.next_step = 1;
            let wait = child.stop.first().map_or(Duration::ZERO, |step| step.wait);
            if !wait.is_zero() {
                return self.arm_stop_deadline(id, wait);
            }
        }
        self.run_stop_steps(id);
    }

    fn arm_stop_deadline(&mut self, id: u64, wait: Duration) {
        if let (Some(at), Some(child)) =
            (Instant::now().checked_add(wait), self.children.get_mut(&id))
        {
            child.stop_deadline = Some(at);
            self.timers.insert((at, id, Timer::StopStep));
        }
    }

    /// Runs stop steps from the next one until one has a wait (then arms its deadline).
    fn run_stop_steps(&mut self, id: u64) {
        loop {
            let Some(child) = self.children.get_mut(&id) else {
                return;
            };
            let Some(step) = child.stop.get(child.next_step).cloned() else {
                return;
            };
            child.next_step += 1;
            let reach = child.stop_reach();
            let spare = match reach {
                Reach::Drain => spared(&self.shared.registry, &child.targets),
                _ => Spare::default(),
            };
            match step.action {
                StopAction::Signal(signal) => {
                    let _ = child.targets.stop_signal(signal, reach, &spare);
                }
                // The child is gone: its kill command has nothing left to address.
                StopAction::Command(_) if reach == Reach::Drain => {
                    let _ = child.targets.stop_signal(libc::SIGTERM, reach, &spare);
                }
                StopAction::Command(script) => {
                    let pid = child.pid;
                    if let Some(helper) = self.run_kill_command(&script, pid, step.wait) {
                        if let Some(child) = self.children.get_mut(&id) {
                            child.helpers.push(helper);
                        }
                    }
                }
            }
            if step.wait.is_zero() {
                continue;
            }
            return self.arm_stop_deadline(id, step.wait);
        }
    }

    /// Runs a user's kill command (`/bin/sh -c`) with `CHILD_PID` set. It is a child like any
    /// other (its own group and cgroup, guarded, killed with the VM), never reported, and
    /// stopped after `limit` (the step's wait) or when the child it stops is gone.
    fn run_kill_command(
        &mut self,
        script: &[u8],
        pid: libc::pid_t,
        limit: Duration,
    ) -> Option<u64> {
        let mut command = Command::new([b"/bin/sh".to_vec(), b"-c".to_vec(), script.to_vec()]);
        command.env = vec![crate::command::EnvChange::Set(
            b"CHILD_PID".to_vec(),
            pid.to_string().into_bytes(),
        )];
        command.stop = crate::command::kill_after(Duration::ZERO);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.spawn(id, &command, Box::new(Silent), None);
        let at = Instant::now().checked_add(limit.max(Duration::from_millis(1)))?;
        self.children.contains_key(&id).then(|| {
            self.timers.insert((at, id, Timer::HelperLimit));
            id
        })
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&(at, id, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::StopStep => {
                    if let Some(child) = self.children.get_mut(&id) {
                        child.stop_deadline = None;
                        self.run_stop_steps(id);
                    }
                }
                Timer::Idle => self.check_idle(id, now),
                Timer::DrainCheck => self.check_drained(id, false),
                Timer::HelperLimit => self.begin_stop(id, false, true),
            }
        }
    }

    fn check_idle(&mut self, id: u64, now: Instant) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        child.idle_deadline = None;
        let (Some(idle), false) = (child.idle_timeout, child.stopping) else {
            return;
        };
        let due = child.last_output + idle;
        if due <= now {
            self.begin_stop(id, false, false);
        } else {
            child.idle_deadline = Some(due);
            self.timers.insert((due, id, Timer::Idle));
        }
    }

    // ── Output and input ─────────────────────────────────────────────────────────────────────

    fn on_readable(&mut self, id: u64, stream: Stream) {
        self.read_once(id, stream);
        self.finish_if_done(id);
    }

    /// One read from a stream, within its credit and, after the exit, within what is owed.
    /// Returns whether it read something.
    fn read_once(&mut self, id: u64, stream: Stream) -> bool {
        let epoll = self.epoll.as_raw_fd();
        let Some(child) = self.children.get_mut(&id) else {
            return false;
        };
        let Some(index) = child.pipes.iter().position(|p| p.stream == stream) else {
            return false;
        };
        let pipe = &mut child.pipes[index];
        // Out of credit, nothing is read; but a pipe that owes nothing after the exit is done.
        if pipe.credit == Some(0) && pipe.owed != Some(0) {
            return false;
        }
        let fd = pipe.fd.as_raw_fd();
        let delivered = child.counters.stdout_bytes + child.counters.stderr_bytes;
        let allowance = output_allowance(self.buffer.len(), child.max_output, delivered);
        if allowance == 0 && pipe.owed != Some(0) {
            // At the cap: one more byte, never delivered, tells whether the child wrote more
            // than allowed (else this is the end of file).
            match sys::read(fd, &mut self.buffer[..1]) {
                Ok(1..) => {
                    self.cap_output(id);
                    return false;
                }
                Err(Errno::EAGAIN) => return false,
                _ => {
                    let pipe = child.pipes.swap_remove(index);
                    if pipe.watching {
                        epoll_remove(epoll, pipe.fd.as_raw_fd());
                    }
                    return false;
                }
            }
        }
        // Read exactly what the pipe holds (after the exit: what is owed), so that a listener
        // can read straight into a buffer of the right size.
        let available = pipe.owed.unwrap_or_else(|| sys::bytes_available(fd));
        let want = available.min(allowance);
        let mut read = |buffer: &mut [u8]| sys::read(fd, buffer);
        let result = if want > 0 {
            child
                .listener
                .read_output(stream, child.os_pid, want, &mut self.buffer, &mut read)
        } else if pipe.owed.is_some() {
            Ok(0)
        } else {
            // Nothing held: this read sees the end of file, or bytes that just arrived.
            let n = read(&mut self.buffer[..allowance]);
            if let Ok(n @ 1..) = n {
                child
                    .listener
                    .output(stream, child.os_pid, &self.buffer[..n]);
            }
            n
        };
        match result {
            Ok(n) if n > 0 => {
                pipe.owed = pipe.owed.map(|owed| owed - n);
                let passive = match &mut pipe.credit {
                    Some(credit) => {
                        *credit -= 1;
                        *credit == 0
                    }
                    None => false,
                };
                if passive && pipe.watching {
                    pipe.watching = false;
                    epoll_remove(epoll, fd);
                }
                if passive {
                    child.listener.passive(stream, child.os_pid);
                }
                self.count_output(id, stream, n);
                true
            }
            Err(Errno::EAGAIN) => false,
            _ => {
                // End of file (EIO for a pty whose other side closed), or all owed delivered.
                let pipe = child.pipes.swap_remove(index);
                if pipe.watching {
                    epoll_remove(epoll, pipe.fd.as_raw_fd());
                }
                false
            }
        }
    }

    /// Grants credit to flow-controlled streams of a child, and reads what is owed.
    fn activate(&mut self, id: u64, stream: Option<Stream>, credit: Option<u64>) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        let mut rewatch = Vec::new();
        let exited = child.exit.is_some();
        for pipe in child
            .pipes
            .iter_mut()
            .filter(|p| stream.is_none_or(|s| s == p.stream))
        {
            pipe.credit = match (pipe.credit, credit) {
                (_, None) => None,
                (None, Some(_)) => pipe.credit,
                (Some(old), Some(more)) => Some(old.saturating_add(more)),
            };
            if pipe.credit != Some(0) && !pipe.watching {
                pipe.watching = true;
                let kind = match pipe.stream {
                    Stream::Stdout => KIND_STDOUT,
                    Stream::Stderr => KIND_STDERR,
                };
                rewatch.push((pipe.fd.as_raw_fd(), kind));
            }
        }
        for (fd, kind) in rewatch {
            let _ = self.watch(fd, token(id, kind), libc::EPOLLIN);
        }
        if exited {
            // Nothing will wake us for bytes already in the pipe: deliver them now.
            for stream in [Stream::Stdout, Stream::Stderr] {
                while self.read_once(id, stream) {}
            }
        }
        self.finish_if_done(id);
    }

    fn count_output(&mut self, id: u64, stream: Stream, n: usize) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        match stream {
            Stream::Stdout => child.counters.stdout_bytes += n as u64,
            Stream::Stderr => child.counters.stderr_bytes += n as u64,
        }
        child.last_output = Instant::now();
    }

    /// The child wrote more than its `max_output`: nothing more is read or delivered, and it is
    /// stopped (unless it has already exited).
    fn cap_output(&mut self, id: u64) {
        let epoll = self.epoll.as_raw_fd();
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        child.counters.output_capped = true;
        for pipe in std::mem::take(&mut child.pipes) {
            if pipe.watching {
                epoll_remove(epoll, pipe.fd.as_raw_fd());
            }
            child.muted.push(pipe.fd);
        }
        if child.exit.is_none() {
            self.begin_stop(id, false, false);
        }
    }

    /// Writes what the child's stdin takes; waits for writability when it takes no more.
    fn flush_stdin(&mut self, id: u64) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        let Some(stdin) = child.stdin.as_mut() else {
            return;
        };
        let fd = stdin.fd.as_raw_fd();
        let mut broken = false;
        while let Some(front) = stdin.queue.front() {
            let bytes = (**front).as_ref();
            match sys::write(fd, &bytes[stdin.offset..]) {
                Ok(n) => {
                    child.counters.stdin_bytes += n as u64;
                    stdin.offset += n;
                    if stdin.offset == bytes.len() {
                        stdin.queue.pop_front();
                        stdin.offset = 0;
                        self.shared.registry.stdin_dequeued(child.os_pid);
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    // EPIPE: the child closed its stdin; nothing more can be written.
                    broken = true;
                    break;
                }
            }
        }
        if !broken {
            stdin.notify_if_flushed();
        }
        let done = broken || (stdin.eof && stdin.queue.is_empty());
        if done {
            self.shared.registry.stdin_closing(child.os_pid);
            if let Some(stdin) = child.stdin.take() {
                if stdin.watching {
                    self.unwatch(stdin.fd.as_raw_fd());
                }
            }
            return;
        }
        let wants_writable = !stdin.queue.is_empty();
        if wants_writable != stdin.watching {
            stdin.watching = wants_writable;
            if wants_writable {
                let _ = self.watch(fd, token(id, KIND_STDIN), libc::EPOLLOUT);
            } else {
                self.unwatch(fd);
            }
        }
    }

    // ── Exits ────────────────────────────────────────────────────────────────────────────────

    fn on_exit(&mut self, id: u64) {
        let Some(child) = self.children.get(&id) else {
            return;
        };
        if child.exit.is_some() {
            return;
        }
        let (pid, pidfd, adopted) = (child.pid, child.pidfd(), child.adopted);
        // A caller may have begun the stop (registry) before the loop heard of it.
        let stopping = child.stopping || self.shared.registry.stopping(child.os_pid);
        let state = if adopted {
            // Not our child: the pidfd turning readable is all we can know.
            sys::ExitState::Lost
        } else {
            sys::exit_state(pidfd)
        };
        if state == sys::ExitState::Running {
            return;
        }
        let targets = child.targets.clone();
        let spare = spared(&self.shared.registry, &targets);
        let reaped = self
            .shared
            .registry
            .mark_exited(child.os_pid, || match state {
                sys::ExitState::Exited => {
                    if stopping && !adopted {
                        // A stopped child's leftovers die with it, while its zombie still pins
                        // the group id (which matters where group signals go by number).
                        let _ = targets.signal_sparing(libc::SIGKILL, Reach::Drain, &spare);
                    }
                    sys::reap(pid)
                        .ok()
                        .map(|(raw, usage)| (ExitStatus::from_raw(raw), usage_of(&usage)))
                }
                _ => None,
            });
        self.unwatch(pidfd);
        if let Some(leader) = targets.group.as_ref().and_then(|g| g.leader.as_ref()) {
            leader.joiners.fetch_sub(1, Ordering::Relaxed);
        }
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        child.exit = Some(match reaped {
            Some((status, usage)) => (Some(status), Some(usage)),
            None => (None, None),
        });
        // Owe exactly what the pipes hold now: a grandchild may keep writing forever.
        for pipe in &mut child.pipes {
            pipe.owed = Some(sys::bytes_available(pipe.fd.as_raw_fd()));
        }
        let streams: Vec<Stream> = child.pipes.iter().map(|p| p.stream).collect();
        for stream in streams {
            while self.read_once(id, stream) {}
        }
        self.finish_if_done(id);
    }

    /// Reports the exit of a reaped child once nothing more is owed to its owner, then drains
    /// what it left behind.
    fn finish_if_done(&mut self, id: u64) {
        let done = self
            .children
            .get(&id)
            .is_some_and(|c| c.exit.is_some() && c.pipes.is_empty() && !c.draining);
        if !done {
            return;
        }
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        child.counters = child.counters_now(&self.shared);
        self.shared.registry.remove(child.os_pid, || ());
        let (status, mut usage) = child.exit.unwrap_or((None, None));
        if let (Some(usage), Some(cgroup)) = (usage.as_mut(), child.targets.cgroup.as_ref()) {
            let stats = cgroup.stats();
            usage.tree_cpu_usec = stats.cpu_usec;
            usage.tree_memory_peak = stats.memory_peak;
        }
        let (os_pid, counters) = (child.os_pid, child.counters);
        // Known before the :DOWN, so that whoever gets it sees the draining state at once.
        let spare = spared(&self.shared.registry, &child.targets);
        let drains = !child.detach && !child.adopted && child.targets.remains(&spare);
        if drains {
            child.draining = true;
            self.shared
                .draining
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(os_pid)
                .or_default()
                .push(id);
        }
        if let Some(child) = self.children.get_mut(&id) {
            child.listener.exited(os_pid, status, usage, counters);
        }
        self.release_resources(id);
        if drains {
            self.drain(id);
        } else {
            self.forget(id);
        }
    }

    /// The child is reported and gone (and marked draining), and what it started lives on: stop
    /// it with the child's stop sequence (unless it is kept while the owner lives), and keep it
    /// guarded until it is gone.
    fn drain(&mut self, id: u64) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        let was_stopping = std::mem::replace(&mut child.stopping, false);
        if let Some(events) = child.targets.cgroup.as_ref().and_then(|c| c.events().ok()) {
            let fd = events.as_raw_fd();
            child.events = Some(events);
            let _ = self.watch(fd, token(id, KIND_CGROUP), libc::EPOLLPRI);
        }
        self.arm_drain_check(id, DRAIN_CHECK_FIRST);
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        if was_stopping {
            // Its stop already killed the rest; only a last SIGKILL for what got in since.
            child.stopping = true;
            let spare = spared(&self.shared.registry, &child.targets);
            let _ = child
                .targets
                .signal_sparing(libc::SIGKILL, Reach::Drain, &spare);
        } else if !child.keep_background || !child.listener.keep_while_owner_lives(id) {
            self.begin_stop(id, false, true);
        }
    }

    fn arm_drain_check(&mut self, id: u64, after: Duration) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        let at = Instant::now() + after;
        child.drain_check = Some((at, after));
        self.timers.insert((at, id, Timer::DrainCheck));
    }

    /// A draining child's cgroup changed (`event`) or its check is due: forget it once
    /// nothing it started is alive, else check again later (less often each time).
    fn check_drained(&mut self, id: u64, event: bool) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        if !child.draining {
            return;
        }
        if let (true, Some(events)) = (event, child.events.as_ref()) {
            // Reading re-arms the notification.
            let mut buffer = [0u8; 256];
            // SAFETY: `buffer` is valid for its length; the fd is open.
            let _ = unsafe {
                libc::pread(
                    events.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
        }
        if !child
            .targets
            .remains(&spared(&self.shared.registry, &child.targets))
        {
            return self.forget(id);
        }
        if event {
            return;
        }
        let next = child.drain_check.map_or(DRAIN_CHECK_FIRST, |(_, after)| {
            (after * 2).min(DRAIN_CHECK_MAX)
        });
        self.arm_drain_check(id, next);
    }

    /// Lets go of a child that is gone with everything it started: its watchdog guard, its
    /// cgroup, its kill commands, its timers.
    fn forget(&mut self, id: u64) {
        let Some(mut child) = self.children.remove(&id) else {
            return;
        };
        if child.draining {
            let mut draining = self
                .shared
                .draining
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(ids) = draining.get_mut(&child.os_pid) {
                ids.retain(|&other| other != id);
                if ids.is_empty() {
                    draining.remove(&child.os_pid);
                }
            }
        }
        if let Some(events) = child.events.take() {
            self.unwatch(events.as_raw_fd());
        }
        if let Some((at, _)) = child.drain_check {
            self.timers.remove(&(at, id, Timer::DrainCheck));
        }
        if let Some(at) = child.stop_deadline {
            self.timers.remove(&(at, id, Timer::StopStep));
        }
        if child.guarded() {
            let writable = self.watchdog.release(child.pid);
            self.apply_writable(writable);
        }
        if let Some(cgroup) = child.targets.cgroup.as_ref() {
            cgroup.remove();
        }
        for helper in std::mem::take(&mut child.helpers) {
            self.begin_stop(helper, false, true);
        }
        self.notify_if_idle();
    }

    /// Unwatches stdin and cancels the stop and idle timers of a child that has exited.
    fn release_resources(&mut self, id: u64) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        let stdin = child.stdin.take();
        child.muted.clear();
        let stop = child.stop_deadline.take();
        let idle = child.idle_deadline.take();
        if let Some(stdin) = stdin {
            if stdin.watching {
                self.unwatch(stdin.fd.as_raw_fd());
            }
        }
        if let Some(at) = stop {
            self.timers.remove(&(at, id, Timer::StopStep));
        }
        if let Some(at) = idle {
            self.timers.remove(&(at, id, Timer::Idle));
        }
    }

    /// After a panic while handling child `id`: kill it and everything it started, reap it and
    /// report it ended with an unknown status, so that its owner is never left waiting.
    fn abandon(&mut self, id: u64) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        let targets = child.targets.clone();
        let _ = targets.signal(libc::SIGKILL, Reach::Stop);
        let _ = targets.signal(libc::SIGKILL, Reach::Drain);
        let (adopted, pid, os_pid, reported) =
            (child.adopted, child.pid, child.os_pid, child.draining);
        let pipes = std::mem::take(&mut child.pipes);
        self.shared.registry.remove(os_pid, || {
            (!adopted && !reported).then(|| sys::reap(pid)).map(drop)
        });
        self.unwatch(targets.pidfd.as_raw_fd());
        for pipe in &pipes {
            self.unwatch(pipe.fd.as_raw_fd());
        }
        self.release_resources(id);
        if let Some(child) = self.children.get_mut(&id) {
            if !reported {
                let counters = child.counters;
                child.listener.exited(os_pid, None, None, counters);
            }
        }
        self.forget(id);
    }

    fn notify_if_idle(&mut self) {
        if self.children.values().all(|c| c.detach) {
            for done in self.stop_all_waiters.drain(..) {
                let _ = catch_unwind(AssertUnwindSafe(done));
            }
        }
    }

    // ── The spawner ──────────────────────────────────────────────────────────────────────────

    /// Watches a newly started spawner's exit and publishes its pid.
    fn note_spawner(&mut self) {
        if let Some(pidfd) = self.spawner.started.take() {
            let _ = self.watch(pidfd, SPAWNER_EXIT_TOKEN, libc::EPOLLIN);
        }
        let pid = self.spawner.pid().unwrap_or(0);
        self.shared.spawner_pid.store(pid, Ordering::Relaxed);
    }

    // ── The watchdog ─────────────────────────────────────────────────────────────────────────

    /// Starts the watchdog if it is due, telling it every guarded group.
    fn start_watchdog(&mut self) {
        let groups: Vec<(i32, RawFd)> = self
            .children
            .values()
            .filter(|c| c.guarded())
            .map(|c| (c.pid, c.pidfd()))
            .collect();
        let interest = self.watchdog.start(
            &mut self.stack,
            self.dev_null.as_raw_fd(),
            groups.into_iter(),
        );
        self.apply(interest);
        let pid = self.watchdog.pid().unwrap_or(0);
        self.shared.watchdog_pid.store(pid, Ordering::Relaxed);
    }

    fn apply(&self, interest: Interest) {
        if let Some(fd) = interest.exit {
            let _ = self.watch(fd, WATCHDOG_EXIT_TOKEN, libc::EPOLLIN);
        }
        self.apply_writable(interest.writable);
    }

    fn apply_writable(&self, writable: Option<(RawFd, bool)>) {
        match writable {
            Some((fd, true)) => {
                let _ = self.watch(fd, WATCHDOG_STDIN_TOKEN, libc::EPOLLOUT);
            }
            Some((fd, false)) => self.unwatch(fd),
            None => {}
        }
    }

    fn on_watchdog_exit(&mut self) {
        let epoll = self.epoll.as_raw_fd();
        let exited = self.watchdog.on_exit(|fd| epoll_remove(epoll, fd));
        if exited {
            eprintln!("tether: the watchdog exited; starting a new one");
            self.shared.watchdog_pid.store(0, Ordering::Relaxed);
            self.start_watchdog();
        }
    }
}

/// Removes `fd` from the epoll set `epoll` (a free function, for use while a child is borrowed).
fn epoll_remove(epoll: RawFd, fd: RawFd) {
    // SAFETY: EPOLL_CTL_DEL ignores the event argument.
    let _ = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
}

fn usage_of(usage: &libc::rusage) -> Usage {
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Usage {
        user_time: time(usage.ru_utime),
        system_time: time(usage.ru_stime),
        // Linux reports ru_maxrss in KiB.
        max_rss: (usage.ru_maxrss.max(0) as u64) * 1024,
        tree_cpu_usec: None,
        tree_memory_peak: None,
    }
}

#[cfg(test)]
mod tests {
    use super::output_allowance;

    #[test]
    fn output_allowance_never_lets_more_than_the_cap_through() {
        assert_eq!(output_allowance(1 << 20, None, u64::MAX), 1 << 20);
        assert_eq!(output_allowance(1 << 20, Some(1_000_000), 0), 1_000_000);
        assert_eq!(output_allowance(65536, Some(1_000_000), 983_040), 16_960);
        assert_eq!(output_allowance(65536, Some(1_000_000), 999_999), 1);
        assert_eq!(output_allowance(65536, Some(1_000_000), 1_000_000), 0);
        assert_eq!(output_allowance(65536, Some(5), 7), 0);
        assert_eq!(output_allowance(65536, Some(u64::MAX), 0), 65536);
        // Reads of any size, summed, stop exactly at the cap.
        let (mut delivered, max) = (0u64, 1_000_001u64);
        for want in [4096, 1 << 20, 7, 65536].into_iter().cycle().take(100) {
            delivered += output_allowance(want, Some(max), delivered) as u64;
        }
        assert_eq!(delivered, max);
    }
}
