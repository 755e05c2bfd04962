//! The event loop ("reactor"): one thread that spawns, watches and stops every child.
//!
//! Why one thread, and why this order of operations:
//! - One epoll set over every child's pidfd and output pipes keeps the number of threads flat
//!   whatever the number of children.
//! - Children are cloned on this long-lived thread because `PR_SET_PDEATHSIG` fires when the
//!   *thread* that spawned a child exits: the children then die with the VM, not with a worker.
//! - An exit is seen on the pidfd, never inferred from pipe EOF: a grandchild may hold the pipes
//!   open for as long as it likes. When the pidfd turns readable we reap under the registry lock
//!   (so no caller can signal a recycled pid), then read exactly what the pipes held at that
//!   moment (`FIONREAD`), and only then report the exit. Every byte the child wrote therefore
//!   reaches the listener before the exit does.
//! - A stop sends SIGTERM (and SIGCONT, so that a job-control stopped child can act on it) to
//!   the child's group and arms a deadline; SIGKILL follows at the deadline. A stopping child
//!   whose leader exits early has its remaining group members killed while the leader is still an
//!   unreaped zombie, which keeps the group id from being reused.
//! - Every request and every event is handled inside `catch_unwind`: a panic is logged and the
//!   loop goes on; the child it concerned is killed and reported as ended, never forgotten.

use crate::command::Command;
use crate::registry::{Entry, NoProcess, Registry, Tag};
use crate::spawn::{self, ChildStack, SpawnError};
use crate::status::ExitStatus;
use crate::sys;
use crate::watchdog::{Interest, Watchdog};
use crossbeam_channel::{Receiver, Sender};
use nix::errno::Errno;
use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
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
    /// `None` when the status was lost (the kernel reaped the child because SIGCHLD was ignored).
    fn exited(&mut self, os_pid: u32, status: Option<ExitStatus>);
}

type Callback = Box<dyn FnOnce() + Send>;

enum Request {
    Spawn {
        id: u64,
        command: Box<Command>,
        listener: Box<dyn Listener>,
        tag: Tag,
    },
    Stop {
        id: u64,
    },
    StopAll {
        done: Callback,
    },
}

struct Shared {
    requests: Sender<Request>,
    wake: OwnedFd,
    registry: Registry,
    next_id: AtomicU64,
    watchdog_pid: AtomicI32,
}

/// How the reactor runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Path of the `tether_watchdog` program; `None` runs without one (children then die with
    /// the VM only through `PR_SET_PDEATHSIG`, which does not reach grandchildren).
    pub watchdog: Option<Vec<u8>>,
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

    /// Queues a spawn and returns the child's id at once. The listener hears the outcome.
    pub fn spawn(&self, command: Command, listener: Box<dyn Listener>, tag: Tag) -> u64 {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.send(Request::Spawn {
            id,
            command: Box::new(command),
            listener,
            tag,
        });
        id
    }

    /// Stops child `id` (no-op once it has exited): SIGTERM, then SIGKILL after its kill timeout.
    pub fn stop(&self, id: u64) {
        self.send(Request::Stop { id });
    }

    /// Like [`Reactor::stop`], by os_pid.
    pub fn stop_os_pid(&self, os_pid: u32) -> Result<(), NoProcess> {
        let id = self.shared.registry.begin_stop(os_pid)?;
        self.stop(id);
        Ok(())
    }

    /// Sends `signal` to a live child (its group when it leads one).
    pub fn kill(&self, os_pid: u32, signal: i32) -> Result<(), NoProcess> {
        self.shared.registry.kill(os_pid, signal)
    }

    /// Stops every child; `done` runs on the loop thread once none is left.
    pub fn stop_all(&self, done: Callback) {
        self.send(Request::StopAll { done });
    }

    /// The live children.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
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
}

struct Child {
    os_pid: u32,
    pid: libc::pid_t,
    pidfd: OwnedFd,
    pipes: Vec<Pipe>,
    listener: Box<dyn Listener>,
    kill_timeout: Duration,
    kill_group: bool,
    detach: bool,
    stopping: bool,
    deadline: Option<Instant>,
}

impl Child {
    /// Whether the watchdog guards this child's group.
    fn guarded(&self) -> bool {
        self.kill_group && !self.detach
    }

    fn signal(&self, signal: i32) {
        let _ = if self.kill_group {
            sys::killpg(self.pid, signal)
        } else {
            sys::pidfd_send_signal(self.pidfd.as_raw_fd(), signal)
        };
    }
}

const WAKE_TOKEN: u64 = 0;
const WATCHDOG_EXIT_TOKEN: u64 = 1;
const WATCHDOG_STDIN_TOKEN: u64 = 2;
/// Child ids start at 1, so child tokens (`id << 2 | kind`) never collide with the above.
const KIND_EXIT: u64 = 0;
const KIND_STDOUT: u64 = 1;
const KIND_STDERR: u64 = 2;
/// Largest single read: big reads make big off-heap binaries, cheap to send.
const READ_CHUNK: usize = 1 << 20;

fn token(id: u64, kind: u64) -> u64 {
    (id << 2) | kind
}

struct EventLoop {
    shared: Arc<Shared>,
    receiver: Receiver<Request>,
    epoll: OwnedFd,
    children: HashMap<u64, Child>,
    deadlines: BTreeSet<(Instant, u64)>,
    stop_all_waiters: Vec<Callback>,
    stack: ChildStack,
    dev_null: OwnedFd,
    buffer: Vec<u8>,
    watchdog: Watchdog,
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
            deadlines: BTreeSet::new(),
            stop_all_waiters: Vec::new(),
            stack: ChildStack::default(),
            dev_null: sys::open_dev_null()?,
            buffer: vec![0; READ_CHUNK],
            watchdog: Watchdog::new(options.watchdog),
            shared,
        };
        event_loop.watch(event_loop.shared.wake.as_raw_fd(), WAKE_TOKEN)?;
        Ok(event_loop)
    }

    fn watch(&self, fd: RawFd, token: u64) -> Result<(), Errno> {
        self.watch_for(fd, token, libc::EPOLLIN)
    }

    fn watch_for(&self, fd: RawFd, token: u64, events: i32) -> Result<(), Errno> {
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
        // SAFETY: EPOLL_CTL_DEL ignores the event argument.
        let _ = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }

    fn run(&mut self) -> ! {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let timeout = self.poll_timeout();
            // SAFETY: `events` has room for `events.len()` entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout,
                )
            };
            for event in events.iter().take(n.max(0) as usize) {
                let token = event.u64;
                self.guarded(token >> 2, |this| this.dispatch(token));
            }
            self.guarded(0, Self::fire_deadlines);
            if self.watchdog.next_start().is_some() {
                self.guarded(0, Self::start_watchdog);
            }
        }
    }

    /// Starts the watchdog if it is due, telling it every guarded group.
    fn start_watchdog(&mut self) {
        let groups: Vec<i32> = self
            .children
            .values()
            .filter(|c| c.guarded())
            .map(|c| c.pid)
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
            let _ = self.watch(fd, WATCHDOG_EXIT_TOKEN);
        }
        self.apply_writable(interest.writable);
    }

    fn apply_writable(&self, writable: Option<(RawFd, bool)>) {
        match writable {
            Some((fd, true)) => {
                let _ = self.watch_for(fd, WATCHDOG_STDIN_TOKEN, libc::EPOLLOUT);
            }
            Some((fd, false)) => self.unwatch(fd),
            None => {}
        }
    }

    fn on_watchdog_exit(&mut self) {
        let epoll = self.epoll.as_raw_fd();
        let exited = self.watchdog.on_exit(|fd| {
            // SAFETY: EPOLL_CTL_DEL ignores the event argument.
            unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
        });
        if exited {
            eprintln!("tether: the watchdog exited; starting a new one");
            self.shared.watchdog_pid.store(0, Ordering::Relaxed);
            self.start_watchdog();
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
        let next = self.deadlines.first().map(|(at, _)| *at);
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
        if token == WAKE_TOKEN {
            sys::eventfd_drain(self.shared.wake.as_raw_fd());
            while let Ok(request) = self.receiver.try_recv() {
                self.handle(request);
            }
            return;
        }
        if token == WATCHDOG_EXIT_TOKEN {
            return self.on_watchdog_exit();
        }
        if token == WATCHDOG_STDIN_TOKEN {
            let writable = self.watchdog.flush();
            return self.apply_writable(writable);
        }
        let id = token >> 2;
        match token & 3 {
            KIND_EXIT => self.on_exit(id),
            KIND_STDOUT => self.on_readable(id, Stream::Stdout),
            _ => self.on_readable(id, Stream::Stderr),
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Spawn {
                id,
                command,
                listener,
                tag,
            } => self.guarded(id, |this| this.spawn(id, &command, listener, tag)),
            Request::Stop { id } => self.guarded(id, |this| this.begin_stop(id)),
            Request::StopAll { done } => {
                let ids: Vec<u64> = self
                    .children
                    .iter()
                    .filter(|(_, child)| !child.detach)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.guarded(id, |this| this.begin_stop(id));
                }
                self.stop_all_waiters.push(done);
                self.notify_if_idle();
            }
        }
    }

    fn spawn(&mut self, id: u64, command: &Command, mut listener: Box<dyn Listener>, tag: Tag) {
        let spawned = catch_unwind(AssertUnwindSafe(|| {
            spawn::spawn(command, &mut self.stack, self.dev_null.as_raw_fd())
        }))
        .unwrap_or(Err(SpawnError::Internal));
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(error) => return listener.spawned(Err(error)),
        };
        let os_pid = spawned.pid as u32;
        let mut pipes = Vec::new();
        for (fd, stream, kind) in [
            (spawned.stdout, Stream::Stdout, KIND_STDOUT),
            (spawned.stderr, Stream::Stderr, KIND_STDERR),
        ] {
            if let Some(fd) = fd {
                // Cannot fail for a fresh pipe short of ENOMEM; then the stream is not read.
                if self.watch(fd.as_raw_fd(), token(id, kind)).is_ok() {
                    pipes.push(Pipe { stream, fd });
                }
            }
        }
        let _ = self.watch(spawned.pidfd.as_raw_fd(), token(id, KIND_EXIT));
        self.shared.registry.insert(
            os_pid,
            Entry {
                id,
                pid: spawned.pid,
                pidfd: spawned.pidfd.as_raw_fd(),
                kill_group: command.kill_group,
                stopping: false,
                tag,
            },
        );
        if command.kill_group && !command.detach {
            let writable = self.watchdog.guard(spawned.pid);
            self.apply_writable(writable);
        }
        listener.spawned(Ok(os_pid));
        self.children.insert(
            id,
            Child {
                os_pid,
                pid: spawned.pid,
                pidfd: spawned.pidfd,
                pipes,
                listener,
                kill_timeout: command.kill_timeout,
                kill_group: command.kill_group,
                detach: command.detach,
                stopping: false,
                deadline: None,
            },
        );
    }

    fn begin_stop(&mut self, id: u64) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        if child.stopping {
            return;
        }
        child.stopping = true;
        self.shared.registry.mark_stopping(child.os_pid);
        child.signal(libc::SIGTERM);
        child.signal(libc::SIGCONT);
        match Instant::now().checked_add(child.kill_timeout) {
            _ if child.kill_timeout.is_zero() => child.signal(libc::SIGKILL),
            Some(at) => {
                child.deadline = Some(at);
                self.deadlines.insert((at, id));
            }
            // A timeout past the end of time: SIGTERM is all it gets.
            None => {}
        }
    }

    fn fire_deadlines(&mut self) {
        let now = Instant::now();
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(child) = self.children.get_mut(&id) {
                child.deadline = None;
                child.signal(libc::SIGKILL);
            }
        }
    }

    fn on_readable(&mut self, id: u64, stream: Stream) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        let Some(index) = child.pipes.iter().position(|p| p.stream == stream) else {
            return;
        };
        let fd = child.pipes[index].fd.as_raw_fd();
        match sys::read(fd, &mut self.buffer) {
            Ok(n) if n > 0 => child
                .listener
                .output(stream, child.os_pid, &self.buffer[..n]),
            Err(Errno::EAGAIN) => {}
            _ => {
                // End of file (or a broken pipe): this stream is done.
                let pipe = child.pipes.swap_remove(index);
                self.unwatch(pipe.fd.as_raw_fd());
            }
        }
    }

    fn on_exit(&mut self, id: u64) {
        let Some(child) = self.children.get(&id) else {
            return;
        };
        let (pid, pidfd) = (child.pid, child.pidfd.as_raw_fd());
        let kill_rest_of_group = child.stopping && child.kill_group;
        if child.guarded() && sys::exit_state(pidfd) != sys::ExitState::Running {
            // While the leader is an unreaped zombie its group id cannot be reused.
            let writable = self.watchdog.release(pid);
            self.apply_writable(writable);
        }
        let reaped = self.shared.registry.remove_if(child.os_pid, || {
            match sys::exit_state(pidfd) {
                sys::ExitState::Running => None,
                sys::ExitState::Lost => Some(None),
                sys::ExitState::Exited => {
                    if kill_rest_of_group {
                        // The zombie leader still pins the group id: no recycled group is hit.
                        let _ = sys::killpg(pid, libc::SIGKILL);
                    }
                    Some(
                        sys::reap(pid)
                            .ok()
                            .map(|(raw, _usage)| ExitStatus::from_raw(raw)),
                    )
                }
            }
        });
        let Some(status) = reaped else {
            return;
        };
        let Some(mut child) = self.children.remove(&id) else {
            return;
        };
        self.unwatch(pidfd);
        for pipe in std::mem::take(&mut child.pipes) {
            self.drain(&mut child, &pipe);
            self.unwatch(pipe.fd.as_raw_fd());
        }
        if let Some(at) = child.deadline {
            self.deadlines.remove(&(at, id));
        }
        child.listener.exited(child.os_pid, status);
        self.notify_if_idle();
    }

    /// Reads what the pipe holds now, and no more: a grandchild may keep writing forever.
    fn drain(&mut self, child: &mut Child, pipe: &Pipe) {
        let fd = pipe.fd.as_raw_fd();
        let mut left = sys::bytes_available(fd);
        while left > 0 {
            let want = left.min(self.buffer.len());
            match sys::read(fd, &mut self.buffer[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    left -= n;
                    child
                        .listener
                        .output(pipe.stream, child.os_pid, &self.buffer[..n]);
                }
            }
        }
    }

    /// After a panic while handling child `id`: kill it, reap it and report it ended with an
    /// unknown status, so that its owner is never left waiting.
    fn abandon(&mut self, id: u64) {
        let Some(mut child) = self.children.remove(&id) else {
            return;
        };
        if child.guarded() {
            let writable = self.watchdog.release(child.pid);
            self.apply_writable(writable);
        }
        child.signal(libc::SIGKILL);
        let _ = sys::pidfd_send_signal(child.pidfd.as_raw_fd(), libc::SIGKILL);
        self.shared
            .registry
            .remove_if(child.os_pid, || Some(sys::reap(child.pid)));
        self.unwatch(child.pidfd.as_raw_fd());
        for pipe in &child.pipes {
            self.unwatch(pipe.fd.as_raw_fd());
        }
        if let Some(at) = child.deadline {
            self.deadlines.remove(&(at, id));
        }
        child.listener.exited(child.os_pid, None);
        self.notify_if_idle();
    }

    fn notify_if_idle(&mut self) {
        if self.children.is_empty() {
            for done in self.stop_all_waiters.drain(..) {
                let _ = catch_unwind(AssertUnwindSafe(done));
            }
        }
    }
}
