//! The two helper programs the loop keeps running: the watchdog and the spawner.

use super::*;

impl EventLoop {
    /// Watches a newly started spawner's exit and publishes its pid.
    pub(super) fn note_spawner(&mut self) {
        if let Some(pidfd) = self.spawner.started.take() {
            let _ = self.watch(pidfd, Token::SpawnerExit, libc::EPOLLIN);
        }
        let pid = self.spawner.pid().unwrap_or(0);
        self.shared.spawner_pid.store(pid, Ordering::Relaxed);
    }

    // ── The watchdog ─────────────────────────────────────────────────────────────────────────

    /// Starts the watchdog if it is due, telling it every guarded group.
    pub(super) fn start_watchdog(&mut self) {
        let groups: Vec<(i32, RawFd)> = self
            .children
            .values()
            .filter(|c| c.watchdog_guards())
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

    pub(super) fn apply(&self, interest: Interest) {
        if let Some(fd) = interest.exit {
            let _ = self.watch(fd, Token::WatchdogExit, libc::EPOLLIN);
        }
        self.apply_writable(interest.writable);
    }

    pub(super) fn apply_writable(&self, writable: Option<(RawFd, bool)>) {
        match writable {
            Some((fd, true)) => {
                let _ = self.watch(fd, Token::WatchdogStdin, libc::EPOLLOUT);
            }
            Some((fd, false)) => self.unwatch(fd),
            None => {}
        }
    }

    pub(super) fn on_watchdog_exit(&mut self) {
        let epoll = self.epoll.as_raw_fd();
        let exited = self.watchdog.on_exit(|fd| epoll_remove(epoll, fd));
        if exited {
            eprintln!("tether: the watchdog exited; starting a new one");
            self.shared.watchdog_pid.store(0, Ordering::Relaxed);
            self.start_watchdog();
        }
    }
}
