//! A child's exit: reap, deliver what is owed, report, drain what it left behind, forget.

use super::*;

impl EventLoop {
    pub(super) fn on_exit(&mut self, id: u64) {
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
    pub(super) fn finish_if_done(&mut self, id: u64) {
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
    pub(super) fn drain(&mut self, id: u64) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        let was_stopping = std::mem::replace(&mut child.stopping, false);
        if let Some(events) = child.targets.cgroup.as_ref().and_then(|c| c.events().ok()) {
            let fd = events.as_raw_fd();
            child.events = Some(events);
            let _ = self.watch(fd, Token::Child(id, Source::Cgroup), libc::EPOLLPRI);
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

    pub(super) fn arm_drain_check(&mut self, id: u64, after: Duration) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        let at = Instant::now() + after;
        child.drain_check = Some((at, after));
        self.timers.insert((at, id, Timer::DrainCheck));
    }

    /// A draining child's cgroup changed (`event`) or its check is due: forget it once
    /// nothing it started is alive, else check again later (less often each time).
    pub(super) fn check_drained(&mut self, id: u64, event: bool) {
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
    pub(super) fn forget(&mut self, id: u64) {
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
        if child.watchdog_guards() {
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
    pub(super) fn release_resources(&mut self, id: u64) {
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
    pub(super) fn abandon(&mut self, id: u64) {
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

    pub(super) fn notify_if_idle(&mut self) {
        if self.children.values().all(|c| c.detach) {
            for done in self.stop_all_waiters.drain(..) {
                let _ = catch_unwind(AssertUnwindSafe(done));
            }
        }
    }

    // ── The spawner ──────────────────────────────────────────────────────────────────────────
}

pub(super) fn usage_of(usage: &libc::rusage) -> Usage {
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
