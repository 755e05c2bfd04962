//! Keeps the watchdog program (the `tether_watchdog` binary) running and informed.
//!
//! No thread of ours survives a SIGKILLed VM, and `PR_SET_PDEATHSIG` reaches only direct
//! children. So the reactor starts a small program with a pipe on its stdin and tells it every
//! process group to guard (`+PGID\n`) and every group that is gone (`-PGID\n`). When the VM dies
//! the kernel closes the pipe and the program SIGKILLs every guarded group.
//!
//! The program is itself a child of the reactor, watched through its pidfd: if it dies, the
//! reactor starts a new one (at most once a second) and tells it every live group again.
//! Writes never block the reactor: what the pipe does not take waits in `pending` and goes out
//! when the pipe is writable.

use crate::command::Command;
use crate::spawn::{self, ChildStack};
use crate::sys;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Shortest time between two starts of the program.
pub const RESTART_INTERVAL: Duration = Duration::from_secs(1);

struct Running {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    stdin: OwnedFd,
}

pub(crate) struct Watchdog {
    program: Option<Vec<u8>>,
    running: Option<Running>,
    pending: Vec<u8>,
    last_start: Option<Instant>,
}

/// What the reactor must change in its epoll set after a call.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Interest {
    /// The program's pidfd, to watch for its exit (after a start).
    pub exit: Option<RawFd>,
    /// Its stdin: `Some(true)` to wait until writable, `Some(false)` to stop waiting.
    pub writable: Option<(RawFd, bool)>,
}

impl Watchdog {
    pub fn new(program: Option<Vec<u8>>) -> Watchdog {
        Watchdog {
            program,
            running: None,
            pending: Vec::new(),
            last_start: None,
        }
    }

    /// Sets the program when none is set yet; returns whether it was set.
    pub fn set_program(&mut self, program: Vec<u8>) -> bool {
        if self.program.is_some() {
            return false;
        }
        self.program = Some(program);
        true
    }

    /// The program's pid while it runs.
    pub fn pid(&self) -> Option<libc::pid_t> {
        self.running.as_ref().map(|r| r.pid)
    }

    /// When a start is due but throttled, the earliest time to try again.
    pub fn next_start(&self) -> Option<Instant> {
        if self.program.is_none() || self.running.is_some() {
            return None;
        }
        self.last_start.map(|at| at + RESTART_INTERVAL)
    }

    /// Starts the program unless it runs or started less than [`RESTART_INTERVAL`] ago, and
    /// tells it every group in `groups`.
    pub fn start(
        &mut self,
        stack: &mut ChildStack,
        dev_null: RawFd,
        groups: impl Iterator<Item = i32>,
    ) -> Interest {
        let Some(program) = self.program.clone() else {
            return Interest::default();
        };
        if self.running.is_some() || self.next_start().is_some_and(|at| at > Instant::now()) {
            return Interest::default();
        }
        self.last_start = Some(Instant::now());
        let mut command = Command::new([program]);
        command.stdin = crate::command::Input::Pipe;
        command.detach = true;
        command.pipe_size = 0;
        let spawned = match spawn::spawn(&command, stack, dev_null) {
            Ok(spawned) => spawned,
            Err(error) => {
                eprintln!("tether: cannot start the watchdog: {error:?}");
                return Interest::default();
            }
        };
        let Some(stdin) = spawned.stdin else {
            return Interest::default();
        };
        let exit = spawned.pidfd.as_raw_fd();
        self.running = Some(Running {
            pid: spawned.pid,
            pidfd: spawned.pidfd,
            stdin,
        });
        self.pending.clear();
        for pgid in groups {
            push_line(&mut self.pending, b'+', pgid);
        }
        Interest {
            exit: Some(exit),
            writable: self.flush(),
        }
    }

    /// Guards group `pgid` from now on.
    pub fn guard(&mut self, pgid: i32) -> Option<(RawFd, bool)> {
        self.send(b'+', pgid)
    }

    /// Stops guarding group `pgid`. Call it while the group's leader is an unreaped zombie.
    pub fn release(&mut self, pgid: i32) -> Option<(RawFd, bool)> {
        self.send(b'-', pgid)
    }

    fn send(&mut self, op: u8, pgid: i32) -> Option<(RawFd, bool)> {
        self.running.as_ref()?;
        let was_waiting = !self.pending.is_empty();
        push_line(&mut self.pending, op, pgid);
        if was_waiting {
            // Already waiting for the pipe to become writable.
            return None;
        }
        self.flush()
    }

    /// Writes what the pipe takes. Returns a change of writable-interest, if any.
    pub fn flush(&mut self) -> Option<(RawFd, bool)> {
        let running = self.running.as_ref()?;
        let fd = running.stdin.as_raw_fd();
        let had_pending = !self.pending.is_empty();
        while !self.pending.is_empty() {
            match sys::write(fd, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EAGAIN) => return Some((fd, true)),
                // EPIPE: it died; its exit event restarts it and resends everything.
                Err(_) => {
                    self.pending.clear();
                    break;
                }
            }
        }
        had_pending.then_some((fd, false))
    }

    /// The program may have exited (its pidfd is readable): reap it, calling `unwatch` for each
    /// of its descriptors before they close. Returns whether it had exited.
    pub fn on_exit(&mut self, mut unwatch: impl FnMut(RawFd)) -> bool {
        let Some(running) = self.running.as_ref() else {
            return false;
        };
        if sys::exit_state(running.pidfd.as_raw_fd()) == sys::ExitState::Running {
            return false;
        }
        if let Some(running) = self.running.take() {
            unwatch(running.pidfd.as_raw_fd());
            unwatch(running.stdin.as_raw_fd());
            let _ = sys::reap(running.pid);
        }
        self.pending.clear();
        true
    }
}

fn push_line(buffer: &mut Vec<u8>, op: u8, pgid: i32) {
    buffer.push(op);
    buffer.extend_from_slice(pgid.to_string().as_bytes());
    buffer.push(b'\n');
}
