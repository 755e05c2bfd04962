//! Stopping: the stop sequence, one step per deadline, kill commands, idle timeouts.

use super::*;

impl EventLoop {
    /// Starts the stop sequence of child `id`. A draining child whose leftovers are kept while
    /// its owner lives is stopped only when `force`d (its owner died, or everything stops).
    pub(super) fn begin_stop(&mut self, id: u64, first_step_done: bool, force: bool) {
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

    pub(super) fn arm_stop_deadline(&mut self, id: u64, wait: Duration) {
        if let (Some(at), Some(child)) =
            (Instant::now().checked_add(wait), self.children.get_mut(&id))
        {
            child.stop_deadline = Some(at);
            self.timers.insert((at, id, Timer::StopStep));
        }
    }

    /// Runs stop steps from the next one until one has a wait (then arms its deadline).
    pub(super) fn run_stop_steps(&mut self, id: u64) {
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
    pub(super) fn run_kill_command(
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

    pub(super) fn check_idle(&mut self, id: u64, now: Instant) {
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
}
