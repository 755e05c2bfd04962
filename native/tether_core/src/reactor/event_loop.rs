//! The loop itself: epoll, requests, timers, and the panic fence around every handler.

use super::*;

/// Largest write a caller makes straight to a child's stdin (bigger ones go through the loop).
pub(super) const DIRECT_WRITE_MAX: usize = 64 * 1024;
/// Requests handled per wake-up before the loop looks at its other events again.
pub(super) const REQUEST_BATCH: usize = 32;
/// Largest single read: big reads make big off-heap binaries, cheap to send.
pub(super) const READ_CHUNK: usize = 1 << 20;

pub(super) struct EventLoop {
    pub(super) shared: Arc<Shared>,
    pub(super) receiver: Receiver<Request>,
    pub(super) epoll: OwnedFd,
    pub(super) children: HashMap<u64, Child>,
    pub(super) timers: BTreeSet<(Instant, u64, Timer)>,
    pub(super) stop_all_waiters: Vec<Callback>,
    pub(super) stack: ChildStack,
    pub(super) dev_null: OwnedFd,
    pub(super) buffer: Vec<u8>,
    pub(super) watchdog: Watchdog,
    /// The small process children are cloned from.
    pub(super) spawner: spawner::Client,
    /// Where child cgroups are made (`None`: no cgroups).
    pub(super) cgroups: Option<Root>,
}

/// A listener for the helpers the loop starts itself (kill commands): nobody hears them.
pub(super) struct Silent;

impl Listener for Silent {
    fn spawned(&mut self, _: Result<u32, SpawnError>) {}
    fn output(&mut self, _: Stream, _: u32, _: &[u8]) {}
    fn exited(&mut self, _: u32, _: Option<ExitStatus>, _: Option<Usage>, _: Counters) {}
}

impl EventLoop {
    pub(super) fn new(
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
            Token::Wake,
            libc::EPOLLIN,
        )?;
        Ok(event_loop)
    }

    pub(super) fn watch(&self, fd: RawFd, token: Token, events: i32) -> Result<(), Errno> {
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token.encode(),
        };
        // SAFETY: `event` is a valid epoll_event; the fd is open.
        sys::cvt(unsafe {
            libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event)
        })
        .map(drop)
    }

    pub(super) fn unwatch(&self, fd: RawFd) {
        epoll_remove(self.epoll.as_raw_fd(), fd);
    }

    pub(super) fn run(&mut self) -> ! {
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
            let watchdog_exit = Token::WatchdogExit.encode();
            if ready.iter().any(|e| e.u64 == watchdog_exit) {
                self.fenced(0, |this| this.dispatch(Token::WatchdogExit));
            }
            for event in ready.iter().filter(|e| e.u64 != watchdog_exit) {
                // Only pipe traffic starts a busy poll: that is where replies come back fast
                // (not after a spawn or an exit, when it would only take a core from children).
                let token = Token::decode(event.u64);
                if token.is_pipe() {
                    last_event = Instant::now();
                }
                self.fenced(token.child_id(), |this| this.dispatch(token));
            }
            self.fenced(0, Self::fire_timers);
            if self.watchdog.next_start().is_some() {
                self.fenced(0, Self::start_watchdog);
            }
        }
    }

    /// Runs `f`, and if it panics, logs it and ends child `id` (0: no child concerned).
    pub(super) fn fenced(&mut self, id: u64, f: impl FnOnce(&mut Self)) {
        if catch_unwind(AssertUnwindSafe(|| f(self))).is_err() {
            eprintln!("tether: the event loop recovered from a panic (child id {id})");
            let _ = catch_unwind(AssertUnwindSafe(|| self.abandon(id)));
        }
    }

    pub(super) fn poll_timeout(&self) -> i32 {
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

    pub(super) fn dispatch(&mut self, token: Token) {
        match token {
            Token::Wake => {
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
            Token::WatchdogExit => self.on_watchdog_exit(),
            Token::SpawnerExit => {
                self.spawner.on_exit();
                self.note_spawner();
            }
            Token::WatchdogStdin => {
                let writable = self.watchdog.flush();
                self.apply_writable(writable);
            }
            Token::Child(id, Source::Exit) => self.on_exit(id),
            Token::Child(id, Source::Stdout) => self.on_readable(id, Stream::Stdout),
            Token::Child(id, Source::Stderr) => self.on_readable(id, Stream::Stderr),
            Token::Child(id, Source::Stdin) => self.flush_stdin(id),
            Token::Child(id, Source::Cgroup) => self.check_drained(id, true),
        }
    }

    pub(super) fn handle(&mut self, request: Request) {
        match request {
            Request::Spawn {
                id,
                command,
                listener,
                tag,
            } => self.fenced(id, |this| this.spawn(id, &command, listener, Some(tag))),
            Request::Adopt {
                id,
                pid,
                command,
                listener,
                tag,
            } => self.fenced(id, |this| this.adopt(id, pid, &command, listener, tag)),
            Request::Stop {
                id,
                first_step_done,
                force,
            } => self.fenced(id, |this| this.begin_stop(id, first_step_done, force)),
            Request::StopAll { done } => {
                let ids: Vec<u64> = self
                    .children
                    .iter()
                    .filter(|(_, child)| !child.detach)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.fenced(id, |this| this.begin_stop(id, false, true));
                }
                self.stop_all_waiters.push(done);
                self.notify_if_idle();
            }
            Request::Write { id, data, written } => self.fenced(id, |this| {
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
            Request::CloseStdin { id } => self.fenced(id, |this| {
                if let Some(stdin) = this.children.get_mut(&id).and_then(|c| c.stdin.as_mut()) {
                    stdin.eof = true;
                }
                this.flush_stdin(id);
            }),
            Request::Activate { id, stream, credit } => {
                self.fenced(id, |this| this.activate(id, stream, credit))
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
                    self.fenced(0, Self::start_watchdog);
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

    pub(super) fn fire_timers(&mut self) {
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
}

/// Removes `fd` from the epoll set `epoll` (a free function, for use while a child is borrowed).
pub(super) fn epoll_remove(epoll: RawFd, fd: RawFd) {
    // SAFETY: EPOLL_CTL_DEL ignores the event argument.
    let _ = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
}
