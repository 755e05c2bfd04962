//! The handle callers hold: every method sends a request or reads shared state, never waits.

use super::*;

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
