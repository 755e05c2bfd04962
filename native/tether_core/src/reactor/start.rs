//! Spawning and adopting: a child enters the loop.

use super::*;

impl EventLoop {
    /// Spawns a child. `tag: None` marks the loop's own helpers (kill commands): not
    /// registered, never reported, bounded by the stop of the child that started them.
    pub(super) fn spawn(
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
        let fresh = match self.child_cgroup(command) {
            Ok(fresh) => fresh,
            Err(error) => return listener.spawned(Err(error)),
        };
        let target = fresh.as_ref().map(|f| spawn::CgroupTarget {
            procs: f.cgroup.procs.as_c_str(),
            dir: f.dir.as_ref().map_or(-1, |d| d.as_raw_fd()),
        });
        let spawned = catch_unwind(AssertUnwindSafe(|| {
            spawn::spawn_with(
                command,
                &mut self.stack,
                self.dev_null.as_raw_fd(),
                target,
                Some(&mut self.spawner),
                0,
            )
        }))
        .unwrap_or(Err(SpawnError::Internal));
        self.note_spawner();
        // The directory served the clone; the child's cgroup is known by its path from now on.
        let cgroup = fresh.map(|f| f.cgroup);
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
                Source::Stdout,
                command.stdout_credit,
            ),
            (
                spawned.stderr,
                Stream::Stderr,
                Source::Stderr,
                command.stderr_credit,
            ),
        ] {
            if let Some(fd) = fd {
                let watching = credit != Some(0)
                    && self
                        .watch(fd.as_raw_fd(), Token::Child(id, kind), libc::EPOLLIN)
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
    pub(super) fn child_cgroup(&self, command: &Command) -> Result<Option<Fresh>, SpawnError> {
        let root = match (&self.cgroups, command.detach) {
            (Some(root), false) => root,
            _ if command.cgroup_limits.is_empty() => return Ok(None),
            _ => return Err(SpawnError::CgroupLimitsUnavailable),
        };
        match root.child(&command.cgroup_limits) {
            Ok(fresh) => Ok(Some(fresh)),
            Err(Errno::ENOTSUP) => Err(SpawnError::CgroupLimitsUnavailable),
            Err(errno) => Err(SpawnError::Os(errno)),
        }
    }

    pub(super) fn adopt(
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
    pub(super) fn insert(&mut self, id: u64, mut child: Child, tag: Option<Tag>) {
        let _ = self.watch(child.pidfd(), Token::Child(id, Source::Exit), libc::EPOLLIN);
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
        if child.watchdog_guards() {
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
}
