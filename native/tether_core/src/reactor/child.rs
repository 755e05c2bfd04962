//! One child's state in the event loop: its pipes, its stdin queue, its stop and its timers.

use super::*;

/// Output of a child still being read.
pub(super) struct Pipe {
    pub(super) stream: Stream,
    pub(super) fd: OwnedFd,
    /// Messages it may still send (flow control); `None`: no limit.
    pub(super) credit: Option<u64>,
    /// Registered in the epoll set (not while out of credit).
    pub(super) watching: bool,
    /// After the child's exit: the bytes still owed (what the pipe held at the exit).
    pub(super) owed: Option<usize>,
}

/// What waits to be written to a child's stdin.
pub(super) struct Stdin {
    pub(super) fd: OwnedFd,
    pub(super) queue: VecDeque<Bytes>,
    /// Bytes of the front chunk already written.
    pub(super) offset: usize,
    /// Close once the queue is empty.
    pub(super) eof: bool,
    /// Registered for EPOLLOUT.
    pub(super) watching: bool,
    /// Told once the queue is empty (true), or that it never will be (false).
    pub(super) flushed: Vec<Flushed>,
}

/// Tells whether a child's stdin queue was written out (`Reactor::when_stdin_flushed`).
pub type Flushed = Box<dyn FnOnce(bool) + Send>;

impl Stdin {
    /// Tells the waiters once nothing is queued.
    pub(super) fn notify_if_flushed(&mut self) {
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

pub(super) struct Child {
    pub(super) os_pid: u32,
    pub(super) pid: libc::pid_t,
    /// The child, its group and its cgroup (shared with the registry): where signals go.
    pub(super) targets: Arc<Targets>,
    pub(super) pipes: Vec<Pipe>,
    pub(super) stdin: Option<Stdin>,
    /// With a pty: the master, for the window size (its number is in the registry, which
    /// forgets it before this closes).
    pub(super) terminal: Option<OwnedFd>,
    pub(super) listener: Box<dyn Listener>,
    pub(super) stop: Vec<StopStep>,
    /// The step a stop runs next (after the one in progress).
    pub(super) next_step: usize,
    pub(super) stop_deadline: Option<Instant>,
    /// The child leads its own group, which the watchdog then guards.
    pub(super) leads_group: bool,
    pub(super) detach: bool,
    /// After the child's exit, what it started lives on until the owner dies (or a stop).
    pub(super) keep_background: bool,
    /// Reported as exited; what it started is still alive and is being stopped (or kept).
    pub(super) draining: bool,
    /// While draining with a cgroup: its `cgroup.events`, watched for `populated 0`.
    pub(super) events: Option<OwnedFd>,
    pub(super) drain_check: Option<(Instant, Duration)>,
    /// Kill commands started by its stop sequence: stopped when it is gone.
    pub(super) helpers: Vec<u64>,
    /// Not our child: no reaping, no status.
    pub(super) adopted: bool,
    pub(super) stopping: bool,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) idle_deadline: Option<Instant>,
    pub(super) last_output: Instant,
    pub(super) max_output: Option<u64>,
    /// Once the output went over `max_output`: its pipes, no longer read but kept open until
    /// it is reported (closing them would end it with SIGPIPE before its stop could).
    pub(super) muted: Vec<OwnedFd>,
    pub(super) counters: Counters,
    /// Reaped, with its status; reported once every owed byte is delivered.
    pub(super) exit: Option<(Option<ExitStatus>, Option<Usage>)>,
}

/// The children of ours that joined the group `targets` leads, and what they started: a drain
/// spares them.
pub(super) fn spared(registry: &Registry, targets: &Targets) -> Spare {
    if targets.has_joiners() {
        Spare::of(registry.joiners(targets.pid), targets.cgroup.is_some())
    } else {
        Spare::default()
    }
}

impl Child {
    /// A child with nothing watched yet, stopped as `command` says.
    pub(super) fn new(targets: Targets, listener: Box<dyn Listener>, command: &Command) -> Child {
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

    pub(super) fn pidfd(&self) -> RawFd {
        self.targets.pidfd.as_raw_fd()
    }

    /// Where the steps of its stop sequence reach: after its exit, what it left behind.
    pub(super) fn stop_reach(&self) -> Reach {
        if self.exit.is_some() {
            Reach::Drain
        } else {
            Reach::Stop
        }
    }

    /// Its counters, with the bytes callers wrote to its stdin directly.
    pub(super) fn counters_now(&self, shared: &Shared) -> Counters {
        let mut counters = self.counters;
        counters.stdin_bytes += shared.registry.stdin_direct_bytes(self.os_pid);
        counters
    }

    /// Whether the watchdog guards this child's group.
    pub(super) fn watchdog_guards(&self) -> bool {
        self.leads_group && !self.detach && !self.adopted
    }
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    StopStep,
    Idle,
    /// Whether a draining child's leftovers are gone yet.
    DrainCheck,
    /// A kill command's time is up.
    HelperLimit,
}

/// First and longest interval between two checks of a draining group.
pub(super) const DRAIN_CHECK_FIRST: Duration = Duration::from_millis(20);
pub(super) const DRAIN_CHECK_MAX: Duration = Duration::from_secs(1);
