//! The live children, shared between the event loop and callers on other threads (NIF calls).
//!
//! The event loop reaps a child while holding this lock and removes its entry in the same
//! critical section, so a caller that finds an entry here is signalling a process that is alive
//! or a zombie: its pid (and process group id) cannot have been recycled.

use crate::guard::{Reach, Spare, Targets};
use crate::sys;
use nix::errno::Errno;
use std::any::Any;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a write to stdin was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    NoProcess,
    /// The child has no stdin pipe, or it was closed.
    Closed,
}

/// Data the embedding layer attaches to a child (the NIF keeps the BEAM pid there).
pub type Tag = Arc<dyn Any + Send + Sync>;

/// What `status` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    /// A stop was asked for; the process has not exited yet.
    Stopping,
    /// Stopped by job control (SIGSTOP, SIGTSTP…).
    Stopped,
}

/// The os_pid is not a live child of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoProcess;

/// Why `kill` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillError {
    NoProcess,
    /// The signal could not be sent (`EPERM`: refused by the guard or the kernel).
    Os(Errno),
}

pub(crate) struct Entry {
    pub id: u64,
    /// The child, its group and its cgroup: what its signals reach.
    pub targets: Arc<Targets>,
    /// It leads its own process group (which other children may then join).
    pub leads_group: bool,
    pub stopping: bool,
    /// The first step of its stop sequence, when that is a signal (callers send it).
    pub first_stop_signal: Option<i32>,
    /// The child has a stdin pipe that is not closed yet.
    pub stdin: bool,
    /// The pipe itself while the event loop keeps it open: callers write to it directly when
    /// nothing is queued before them.
    pub stdin_fd: Option<RawFd>,
    /// With a pty: the master, open until the entry is removed.
    pub terminal_fd: Option<RawFd>,
    /// Writes handed to the event loop and not yet fully written.
    pub stdin_queued: usize,
    /// Bytes written directly by callers (the event loop counts the rest).
    pub stdin_direct_bytes: u64,
    /// Reaped; kept until its owed output is delivered. Not signalled, not listed.
    pub exited: bool,
    pub tag: Tag,
}

#[derive(Default)]
pub struct Registry {
    children: Mutex<HashMap<u32, Entry>>,
    /// Entries marked exited (changed under the lock of `children`).
    exited: AtomicUsize,
}

impl Registry {
    /// Poison-tolerant: a panic elsewhere never makes the registry unusable.
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Entry>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `signal` to the child and, unless it is signalled alone, to its process group.
    pub fn kill(&self, os_pid: u32, signal: i32) -> Result<(), KillError> {
        let children = self.lock();
        let entry = live(children.get(&os_pid)).map_err(|_| KillError::NoProcess)?;
        entry
            .targets
            .signal(signal, Reach::Kill)
            .map_err(KillError::Os)
    }

    /// The pids of live children that joined group `pgid` (led by another child).
    pub(crate) fn joiners(&self, pgid: i32) -> Vec<libc::pid_t> {
        self.lock()
            .values()
            .filter(|e| !e.exited)
            .filter(|e| {
                let group = e.targets.group.as_ref();
                group.is_some_and(|g| g.pgid == pgid && g.leader.is_some())
            })
            .map(|e| e.targets.pid)
            .collect()
    }

    /// The leader pidfd of group `pgid`, if a live child leads it (for a child that joins it).
    pub(crate) fn group_leader(&self, pgid: i32) -> Option<Arc<Targets>> {
        let children = self.lock();
        let entry = live(children.get(&(pgid as u32))).ok()?;
        entry.leads_group.then(|| entry.targets.clone())
    }

    /// Running, stopping (after a stop request) or stopped (job control).
    pub fn state(&self, os_pid: u32) -> Result<State, NoProcess> {
        let children = self.lock();
        let entry = live(children.get(&os_pid))?;
        Ok(if entry.stopping {
            State::Stopping
        } else if matches!(sys::proc_state(entry.targets.pid), Some(b'T' | b't')) {
            State::Stopped
        } else {
            State::Running
        })
    }

    /// Marks the child as stopping and, when its stop sequence starts with a signal, sends it
    /// from the calling thread (the event loop then only waits out that step). Returns the id
    /// for the event loop and whether the first step was taken; `None` if a stop is already
    /// under way.
    pub fn begin_stop(&self, os_pid: u32) -> Result<Option<(u64, bool)>, NoProcess> {
        let mut children = self.lock();
        let entry = children
            .get_mut(&os_pid)
            .filter(|e| !e.exited)
            .ok_or(NoProcess)?;
        if entry.stopping {
            return Ok(None);
        }
        entry.stopping = true;
        if let Some(signal) = entry.first_stop_signal {
            let _ = entry
                .targets
                .stop_signal(signal, Reach::Stop, &Spare::default());
        }
        Ok(Some((entry.id, entry.first_stop_signal.is_some())))
    }

    /// Whether a stop of the child was asked for.
    pub(crate) fn stopping(&self, os_pid: u32) -> bool {
        self.lock().get(&os_pid).is_some_and(|e| e.stopping)
    }

    /// The reactor's id of a live child.
    pub fn id(&self, os_pid: u32) -> Result<u64, NoProcess> {
        self.lock().get(&os_pid).map(|e| e.id).ok_or(NoProcess)
    }

    /// The id of a child whose stdin is open; with `close`, marks it closed from now on.
    pub fn stdin_id(&self, os_pid: u32, close: bool) -> Result<u64, WriteError> {
        let mut children = self.lock();
        let entry = with_open_stdin(children.get_mut(&os_pid))?;
        entry.stdin = !close;
        Ok(entry.id)
    }

    /// Writes `data` to the child's stdin straight away when nothing waits in the event loop's
    /// queue before it, the pipe takes all of it, and it is small (a non-blocking write of at
    /// most `direct_max` bytes: the caller's thread is never held up). Otherwise returns the
    /// child's id and the bytes already written, and counts one more queued write: the event
    /// loop writes the rest. Under the lock, so writes keep their order and the pipe cannot be
    /// closed meanwhile.
    pub fn write_or_queue(
        &self,
        os_pid: u32,
        data: &[u8],
        direct_max: usize,
    ) -> Result<Option<(u64, usize)>, WriteError> {
        let mut children = self.lock();
        let entry = with_open_stdin(children.get_mut(&os_pid))?;
        let mut written = 0;
        if let (Some(fd), 0, true) = (entry.stdin_fd, entry.stdin_queued, data.len() <= direct_max)
        {
            // Errors (EAGAIN, EPIPE…) are left to the event loop, which handles them.
            written = sys::write(fd, data).unwrap_or(0);
            entry.stdin_direct_bytes += written as u64;
            if written == data.len() {
                return Ok(None);
            }
        }
        entry.stdin_queued += 1;
        Ok(Some((entry.id, written)))
    }

    /// Sets the window size of the child's pty, if it has one.
    pub fn set_window_size(&self, os_pid: u32, rows: u16, cols: u16) -> Result<(), NoProcess> {
        let children = self.lock();
        let entry = live(children.get(&os_pid))?;
        if let Some(fd) = entry.terminal_fd {
            let _ = sys::set_window_size(fd, rows, cols);
        }
        Ok(())
    }

    /// The event loop finished (or dropped) one queued write.
    pub(crate) fn stdin_dequeued(&self, os_pid: u32) {
        if let Some(entry) = self.lock().get_mut(&os_pid) {
            entry.stdin_queued = entry.stdin_queued.saturating_sub(1);
        }
    }

    /// The event loop is about to close the stdin pipe: no caller may write to it any more.
    pub(crate) fn stdin_closing(&self, os_pid: u32) {
        if let Some(entry) = self.lock().get_mut(&os_pid) {
            entry.stdin_fd = None;
        }
    }

    /// Bytes callers wrote to the child's stdin directly.
    pub(crate) fn stdin_direct_bytes(&self, os_pid: u32) -> u64 {
        self.lock()
            .get(&os_pid)
            .map_or(0, |entry| entry.stdin_direct_bytes)
    }

    /// The os_pids of every live child, ascending.
    pub fn os_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .lock()
            .iter()
            .filter(|(_, e)| !e.exited)
            .map(|(pid, _)| *pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    /// The tag attached at spawn, until the exit is reported (also while the output owed at
    /// exit is delivered: the process still stands for its pid, though it cannot be signalled).
    pub fn tag(&self, os_pid: u32) -> Option<Tag> {
        self.lock().get(&os_pid).map(|e| e.tag.clone())
    }

    /// Number of running children (not those that exited and still owe output).
    pub fn len(&self) -> usize {
        let children = self.lock();
        children.len() - self.exited.load(Ordering::Relaxed)
    }

    /// Number of children that exited and still owe output to a passive stream.
    pub fn exited_len(&self) -> usize {
        let _children = self.lock();
        self.exited.load(Ordering::Relaxed)
    }

    /// Whether no child is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn insert(&self, os_pid: u32, entry: Entry) {
        self.lock().insert(os_pid, entry);
    }

    pub(crate) fn mark_stopping(&self, os_pid: u32) {
        if let Some(entry) = self.lock().get_mut(&os_pid) {
            entry.stopping = true;
        }
    }

    /// Runs `reap` and marks the entry exited in one critical section, so that nobody signals
    /// the pid after it was reaped. The entry stays (for `id`) until [`Registry::remove`].
    pub(crate) fn mark_exited<R>(&self, os_pid: u32, reap: impl FnOnce() -> R) -> R {
        let mut children = self.lock();
        let reaped = reap();
        if let Some(entry) = children.get_mut(&os_pid).filter(|e| !e.exited) {
            entry.exited = true;
            self.exited.fetch_add(1, Ordering::Relaxed);
        }
        reaped
    }

    /// Runs `reap` and removes the entry in one critical section, so that nobody signals the
    /// pid between the two.
    pub(crate) fn remove<R>(&self, os_pid: u32, reap: impl FnOnce() -> R) -> R {
        let mut children = self.lock();
        let reaped = reap();
        if children.remove(&os_pid).is_some_and(|e| e.exited) {
            self.exited.fetch_sub(1, Ordering::Relaxed);
        }
        reaped
    }
}

/// The entry of a process that has not exited and whose stdin is open.
fn with_open_stdin(entry: Option<&mut Entry>) -> Result<&mut Entry, WriteError> {
    let entry = entry.filter(|e| !e.exited).ok_or(WriteError::NoProcess)?;
    if entry.stdin {
        Ok(entry)
    } else {
        Err(WriteError::Closed)
    }
}

/// The entry of a process that has not exited.
fn live(entry: Option<&Entry>) -> Result<&Entry, NoProcess> {
    entry.filter(|e| !e.exited).ok_or(NoProcess)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::process::{Child, Command};

    /// A real `sleep`, registered as a child signalled alone, with `stdin` as its open stdin.
    fn registered(registry: &Registry, stdin: Option<RawFd>) -> (Child, u32) {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let os_pid = child.id();
        let pidfd = sys::pidfd_open(os_pid as libc::pid_t).unwrap();
        let entry = Entry {
            id: 7,
            targets: Arc::new(Targets::process(os_pid as libc::pid_t, pidfd)),
            leads_group: false,
            stopping: false,
            first_stop_signal: Some(libc::SIGTERM),
            stdin: stdin.is_some(),
            stdin_fd: stdin,
            terminal_fd: None,
            stdin_queued: 0,
            stdin_direct_bytes: 0,
            exited: false,
            tag: Arc::new(()),
        };
        registry.insert(os_pid, entry);
        (child, os_pid)
    }

    #[test]
    fn a_stop_is_begun_once_and_sends_its_first_signal() {
        let registry = Registry::default();
        let (mut child, os_pid) = registered(&registry, None);
        assert_eq!(registry.state(os_pid), Ok(State::Running));
        assert_eq!(registry.begin_stop(os_pid), Ok(Some((7, true))));
        assert_eq!(registry.begin_stop(os_pid), Ok(None));
        assert_eq!(registry.state(os_pid), Ok(State::Stopping));
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(15)
        );
        assert_eq!(registry.begin_stop(1), Err(NoProcess));
    }

    #[test]
    fn an_exited_child_is_never_signalled_and_no_longer_counted() {
        let registry = Registry::default();
        let (mut child, os_pid) = registered(&registry, None);
        assert_eq!((registry.len(), registry.os_pids()), (1, vec![os_pid]));
        child.kill().unwrap();
        registry.mark_exited(os_pid, || child.wait().unwrap());
        assert_eq!(
            registry.kill(os_pid, libc::SIGKILL),
            Err(KillError::NoProcess)
        );
        assert_eq!(registry.state(os_pid), Err(NoProcess));
        assert_eq!((registry.len(), registry.exited_len()), (0, 1));
        // The id and the tag stay until the exit is reported.
        assert_eq!(registry.id(os_pid), Ok(7));
        assert!(registry.tag(os_pid).is_some());
        registry.remove(os_pid, || ());
        assert_eq!(
            (registry.exited_len(), registry.id(os_pid)),
            (0, Err(NoProcess))
        );
        assert!(registry.is_empty());
    }

    #[test]
    fn small_writes_go_straight_to_the_pipe_unless_something_is_queued() {
        let registry = Registry::default();
        let (read_end, write_end) = sys::input_pipe(0).unwrap();
        let (mut child, os_pid) = registered(&registry, Some(write_end.as_raw_fd()));
        assert_eq!(registry.write_or_queue(os_pid, b"abc", 16), Ok(None));
        assert_eq!(registry.stdin_direct_bytes(os_pid), 3);
        // Too big to write directly: the event loop gets it, and what follows queues behind.
        assert_eq!(
            registry.write_or_queue(os_pid, &[0; 17], 16),
            Ok(Some((7, 0)))
        );
        assert_eq!(registry.write_or_queue(os_pid, b"d", 16), Ok(Some((7, 0))));
        registry.stdin_dequeued(os_pid);
        registry.stdin_dequeued(os_pid);
        assert_eq!(registry.write_or_queue(os_pid, b"e", 16), Ok(None));
        let mut buffer = [0u8; 8];
        let n = sys::read(read_end.as_raw_fd(), &mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"abce");
        assert_eq!(registry.stdin_id(os_pid, true), Ok(7));
        assert_eq!(
            registry.write_or_queue(os_pid, b"f", 16),
            Err(WriteError::Closed)
        );
        assert_eq!(
            registry.write_or_queue(1, b"f", 16),
            Err(WriteError::NoProcess)
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
