//! Keeps the watchdog program (the `tether_watchdog` binary) running and informed.
//!
//! No thread of ours survives a SIGKILLed VM, and `PR_SET_PDEATHSIG` reaches only direct
//! children. So the reactor starts a small program whose stdin is one end of a unix
//! `SOCK_SEQPACKET` socket pair and tells it, one record each, every process group to guard
//! (`+PGID`, with a pidfd of the group's leader attached by `SCM_RIGHTS`), every group that is
//! gone (`-PGID`), and the cgroup directory every child cgroup lives in (`C<path>`). When the VM
//! dies the kernel closes our end, `recvmsg` returns end of file, and the program kills that
//! cgroup tree and every guarded group, then exits.
//!
//! With the leader's pidfd the program signals the group through `PIDFD_SIGNAL_PROCESS_GROUP`:
//! a group stays guarded until it is empty, even after its leader was reaped, and a recycled
//! group id is never hit.
//!
//! The program is itself a child of the reactor, watched through its pidfd: if it dies, the
//! reactor starts a new one at once and tells it everything again, however often it is killed.
//! Only a program that keeps dying young by itself (a crash loop: it guards nothing anyway) is
//! restarted less often. Writes never
//! block the reactor: what the socket does not take waits in `pending`.

use crate::command::{Command, Input};
use crate::spawn::{self, ChildStack};
use crate::sys;
use nix::errno::Errno;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A program that lived shorter than this died young.
const YOUNG: Duration = Duration::from_secs(1);
/// After this many young deaths in a row, restarts wait [`CRASH_LOOP_DELAY`].
const CRASH_LOOP: u32 = 5;
const CRASH_LOOP_DELAY: Duration = Duration::from_secs(1);

struct Running {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    socket: OwnedFd,
    started: Instant,
}

/// One record for the program, with the pidfd it carries.
struct Record {
    line: Vec<u8>,
    fd: Option<OwnedFd>,
}

pub(crate) struct Watchdog {
    program: Option<Vec<u8>>,
    running: Option<Running>,
    pending: VecDeque<Record>,
    /// Every cgroup tree this VM made (one, unless the base was reconfigured).
    cgroup_roots: Vec<PathBuf>,
    young_deaths: u32,
    last_exit: Option<Instant>,
}

/// What the reactor must change in its epoll set after a call.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Interest {
    /// The program's pidfd, to watch for its exit (after a start).
    pub exit: Option<RawFd>,
    /// Its socket: `Some(true)` to wait until writable, `Some(false)` to stop waiting.
    pub writable: Option<(RawFd, bool)>,
}

impl Watchdog {
    pub fn new(program: Option<Vec<u8>>) -> Watchdog {
        Watchdog {
            program,
            running: None,
            pending: VecDeque::new(),
            cgroup_roots: Vec::new(),
            young_deaths: 0,
            last_exit: None,
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

    /// When a start is due: at once, or after a crash loop's delay.
    pub fn next_start(&self) -> Option<Instant> {
        if self.program.is_none() || self.running.is_some() {
            return None;
        }
        match (self.young_deaths >= CRASH_LOOP, self.last_exit) {
            (true, Some(at)) => Some(at + CRASH_LOOP_DELAY),
            _ => Some(Instant::now()),
        }
    }

    /// Starts the program unless it runs or a crash loop holds it back, and tells it every
    /// group in `groups` (each with its leader's pidfd) and the cgroup root.
    pub fn start<'a>(
        &mut self,
        stack: &mut ChildStack,
        dev_null: RawFd,
        groups: impl Iterator<Item = (i32, RawFd)> + 'a,
    ) -> Interest {
        let Some(program) = self.program.clone() else {
            return Interest::default();
        };
        if self.running.is_some() || self.next_start().is_some_and(|at| at > Instant::now()) {
            return Interest::default();
        }
        let (spawned, ours) = match launch(program, stack, dev_null) {
            Ok(launched) => launched,
            Err(error) => {
                eprintln!("tether: cannot start the watchdog: {error:?}");
                self.last_exit = Some(Instant::now());
                self.young_deaths += 1;
                return Interest::default();
            }
        };
        let exit = spawned.pidfd.as_raw_fd();
        self.running = Some(Running {
            pid: spawned.pid,
            pidfd: spawned.pidfd,
            socket: ours,
            started: Instant::now(),
        });
        self.pending.clear();
        for root in &self.cgroup_roots {
            self.pending.push_back(root_record(root));
        }
        for (pgid, pidfd) in groups {
            self.pending.push_back(guard_record(pgid, pidfd));
        }
        Interest {
            exit: Some(exit),
            writable: self.flush(),
        }
    }

    /// Tells the program (now and after every restart) of a tree of child cgroups.
    pub fn add_cgroup_root(&mut self, root: PathBuf) -> Option<(RawFd, bool)> {
        if self.cgroup_roots.contains(&root) {
            return None;
        }
        let record = root_record(&root);
        self.cgroup_roots.push(root);
        self.send(record)
    }

    /// Guards group `pgid`, whose leader's pidfd is `leader`, from now on.
    pub fn guard(&mut self, pgid: i32, leader: RawFd) -> Option<(RawFd, bool)> {
        self.send(guard_record(pgid, leader))
    }

    /// Stops guarding group `pgid` (it is empty).
    pub fn release(&mut self, pgid: i32) -> Option<(RawFd, bool)> {
        self.send(Record {
            line: format!("-{pgid}").into_bytes(),
            fd: None,
        })
    }

    fn send(&mut self, record: Record) -> Option<(RawFd, bool)> {
        self.running.as_ref()?;
        let was_waiting = !self.pending.is_empty();
        self.pending.push_back(record);
        if was_waiting {
            // Already waiting for the socket to become writable.
            return None;
        }
        self.flush()
    }

    /// Sends what the socket takes. Returns a change of writable-interest, if any.
    pub fn flush(&mut self) -> Option<(RawFd, bool)> {
        let running = self.running.as_ref()?;
        let fd = running.socket.as_raw_fd();
        let had_pending = !self.pending.is_empty();
        while let Some(record) = self.pending.front() {
            match send_record(fd, record) {
                Ok(()) => {
                    self.pending.pop_front();
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
            unwatch(running.socket.as_raw_fd());
            let killed = sys::reap(running.pid).is_ok_and(|(raw, _)| {
                libc::WIFSIGNALED(raw) && libc::WTERMSIG(raw) == libc::SIGKILL
            });
            // Killed (by a user, the OOM killer): restart at once, however often. Only a program
            // that dies young by itself is in a crash loop, and guards nothing anyway.
            if !killed && running.started.elapsed() < YOUNG {
                self.young_deaths += 1;
            } else {
                self.young_deaths = 0;
            }
        }
        self.last_exit = Some(Instant::now());
        self.pending.clear();
        true
    }
}

/// Starts the program with one end of a new socket pair as its stdin; returns it and our end.
fn launch(
    program: Vec<u8>,
    stack: &mut ChildStack,
    dev_null: RawFd,
) -> Result<(spawn::Spawned, OwnedFd), spawn::SpawnError> {
    let (ours, theirs) = socket_pair()?;
    let mut command = Command::new([program]);
    command.stdin = Input::Fd(theirs.as_raw_fd());
    command.detach = true;
    command.pipe_size = 0;
    // Their end closes when `theirs` drops: the program holds its own copy.
    Ok((spawn::spawn(&command, stack, dev_null, None)?, ours))
}

fn root_record(root: &std::path::Path) -> Record {
    let mut line = b"C".to_vec();
    line.extend_from_slice(root.as_os_str().as_bytes());
    Record { line, fd: None }
}

fn guard_record(pgid: i32, leader: RawFd) -> Record {
    // SAFETY: F_DUPFD_CLOEXEC on an open fd has no memory effects.
    let fd = unsafe { libc::fcntl(leader, libc::F_DUPFD_CLOEXEC, 3) };
    Record {
        line: format!("+{pgid}").into_bytes(),
        // SAFETY: a fresh descriptor owned by nobody else.
        fd: (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }),
    }
}

/// `(ours, theirs)`: a close-on-exec `SOCK_SEQPACKET` pair; our end is non-blocking.
fn socket_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    let (ours, theirs) = sys::seqpacket_pair()?;
    sys::set_nonblocking(&ours)?;
    Ok((ours, theirs))
}

/// Sends one record, with its pidfd as `SCM_RIGHTS` (our end is non-blocking: `EAGAIN` when
/// the socket is full).
fn send_record(socket: RawFd, record: &Record) -> Result<(), Errno> {
    let fds: Vec<RawFd> = record.fd.iter().map(AsRawFd::as_raw_fd).collect();
    crate::sys::send_with_fds(socket, &record.line, &fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until the program's pidfd is readable (it exited).
    fn wait_exit(fd: RawFd) {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut poll, 1, 10_000) }, 1);
    }

    #[test]
    fn records_name_the_group_or_the_cgroup_root() {
        assert_eq!(root_record(std::path::Path::new("/sys/x")).line, b"C/sys/x");
        let pidfd = sys::pidfd_open(std::process::id() as libc::pid_t).unwrap();
        let record = guard_record(4242, pidfd.as_raw_fd());
        assert_eq!(record.line, b"+4242");
        assert!(record
            .fd
            .is_some_and(|fd| fd.as_raw_fd() != pidfd.as_raw_fd()));
    }

    #[test]
    fn a_program_that_keeps_dying_young_by_itself_is_held_back() {
        let mut watchdog = Watchdog::new(Some(b"/bin/false".to_vec()));
        let (mut stack, dev_null) = (ChildStack::default(), sys::open_dev_null().unwrap());
        for death in 1..=CRASH_LOOP {
            assert!(
                watchdog.next_start().unwrap() <= Instant::now(),
                "death {death}"
            );
            let interest = watchdog.start(&mut stack, dev_null.as_raw_fd(), std::iter::empty());
            wait_exit(interest.exit.unwrap());
            assert!(watchdog.on_exit(|_| ()));
            assert_eq!(watchdog.pid(), None);
        }
        let held = watchdog.next_start().unwrap();
        assert!(held > Instant::now() + CRASH_LOOP_DELAY / 2);
        // Held back: a start now does nothing.
        let interest = watchdog.start(&mut stack, dev_null.as_raw_fd(), std::iter::empty());
        assert_eq!(interest, Interest::default());
    }

    #[test]
    fn a_killed_program_is_restarted_at_once_and_told_everything_again() {
        let mut watchdog = Watchdog::new(Some(b"/bin/cat".to_vec()));
        let (mut stack, dev_null) = (ChildStack::default(), sys::open_dev_null().unwrap());
        watchdog.add_cgroup_root(PathBuf::from("/sys/fs/cgroup/none"));
        for _ in 0..CRASH_LOOP + 1 {
            let interest = watchdog.start(&mut stack, dev_null.as_raw_fd(), std::iter::empty());
            let pid = watchdog.pid().unwrap();
            // The root record reached it (cat copies it to /dev/null; the queue is empty).
            assert!(watchdog.pending.is_empty());
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait_exit(interest.exit.unwrap());
            assert!(watchdog.on_exit(|_| ()));
            assert!(watchdog.next_start().unwrap() <= Instant::now());
        }
    }
}
