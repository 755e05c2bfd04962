//! The child between `clone` and `execve`: async-signal-safe system calls only, no allocation,
//! no locks, no panics. Everything it reads was prepared by the parent (see `prepare`, `stdio`).

use super::*;
use crate::command::Capabilities;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

/// Everything the child reads, prepared before the clone.
pub(super) struct ChildContext {
    pub(super) candidates: *const *const libc::c_char,
    pub(super) argv: *const *const libc::c_char,
    pub(super) envp: *const *const libc::c_char,
    pub(super) cwd: *const libc::c_char,
    /// Targets of fds 0, 1, 2: a descriptor, [`CLOSE`], [`OTHER`], [`INHERIT`] or [`FILE`].
    pub(super) stdio: [RawFd; 3],
    /// The files of the [`FILE`] targets.
    pub(super) files: [ChildFile; 3],
    /// With a pty: the slave, to become the controlling terminal of a new session.
    pub(super) controlling_tty: RawFd,
    /// The `cgroup.procs` file of the child's cgroup, or null.
    pub(super) cgroup_procs: *const libc::c_char,
    /// `setpgid(0, group)` unless negative (0: a new group).
    pub(super) group: libc::pid_t,
    pub(super) pdeathsig: bool,
    pub(super) parent_pid: libc::pid_t,
    pub(super) nice: Option<libc::c_int>,
    pub(super) rlimits: *const (libc::__rlimit_resource_t, libc::rlimit),
    pub(super) rlimit_count: usize,
    /// uid, gid and supplementary groups to switch to.
    pub(super) user: Option<(libc::uid_t, libc::gid_t)>,
    pub(super) groups: *const libc::gid_t,
    pub(super) group_count: usize,
    /// The capabilities to run with (see [`set_capabilities`]).
    pub(super) capabilities: Option<Capabilities>,
    /// The write end of the spawner's report pipe (our pid, then a failure's errno), or -1.
    pub(super) report: RawFd,
    /// A value to write to `/proc/self/oom_score_adj` (NUL-terminated), or null.
    pub(super) oom_score_adj: *const libc::c_char,
    /// The signals whose disposition is not the default here (bit `n - 1` for signal `n`):
    /// the ones the child resets. All of them from the VM (its handlers and ignores change at
    /// run time); from the spawner, the few it set itself.
    pub(super) reset_signals: u64,
    /// 0 until the child fails; then the errno of the failure. Memory the parent sees: ours
    /// (CLONE_VM), or the spawner's shared page.
    pub(super) error: *const AtomicI32,
}

/// The child between `clone` and `execve`. Async-signal-safe system calls only, no allocation,
/// no panics (no indexing, no formatting), and `_exit` on every path that does not exec.
pub(super) extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the ChildContext that `spawn` keeps alive while we run.
    let context = unsafe { &*(arg as *const ChildContext) };
    // SAFETY: every call below is a plain system call on values prepared by the parent.
    unsafe {
        let fail = |errno: libc::c_int| -> ! {
            let errno = errno.max(1);
            (*context.error).store(errno, Ordering::SeqCst);
            if context.report >= 0 {
                libc::write(context.report, (&errno as *const libc::c_int).cast(), 4);
            }
            libc::_exit(127)
        };
        let errno = || *libc::__errno_location();
        let check = |ret: libc::c_int| {
            if ret == -1 {
                fail(errno())
            }
        };

        if context.report >= 0 {
            // First of all: should the spawner die now, the reactor learns that we exist.
            let pid = libc::syscall(libc::SYS_getpid) as libc::pid_t;
            if libc::write(context.report, (&pid as *const libc::pid_t).cast(), 4) != 4 {
                libc::_exit(127);
            }
        }
        // Every signal of `reset_signals` back to its default (raw syscall: glibc refuses 32
        // and 33), empty mask.
        let default_action = [0u64; 4];
        for signal in 1..=crate::signal::MAX {
            let set = context.reset_signals & (1u64 << (signal - 1)) != 0;
            if set && signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    default_action.as_ptr(),
                    std::ptr::null_mut::<libc::c_void>(),
                    8,
                );
            }
        }
        let empty: u64 = 0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            8,
        );

        if !context.cgroup_procs.is_null() {
            // Into our cgroup before anything can fork: all it starts is born inside.
            let fd = libc::open(context.cgroup_procs, libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(errno());
            }
            libc::close(fd);
        }
        if !context.oom_score_adj.is_null() {
            // The VM's, not the spawner's.
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            let value = context.oom_score_adj;
            if fd < 0 || libc::write(fd, value.cast(), libc::strlen(value)) < 0 {
                fail(errno());
            }
            libc::close(fd);
        }
        if context.controlling_tty >= 0 {
            // A new session whose controlling terminal is the pty.
            check(libc::setsid());
            check(libc::ioctl(context.controlling_tty, libc::TIOCSCTTY, 0));
        } else if context.group >= 0 {
            check(libc::setpgid(0, context.group));
        }
        if context.pdeathsig {
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL));
            // The VM may have died between clone and prctl: then nobody owns us.
            if libc::getppid() != context.parent_pid {
                fail(libc::ESRCH);
            }
        }
        for i in 0..context.rlimit_count {
            let (resource, limit) = &*context.rlimits.add(i);
            check(libc::setrlimit(*resource, limit));
        }
        if let Some(nice) = context.nice {
            check(libc::setpriority(libc::PRIO_PROCESS, 0, nice));
        }

        // Standard descriptors: sources first; files once we are the user; then the
        // cross-redirected one.
        for (to, from) in (0..3).zip(context.stdio) {
            if from == CLOSE {
                libc::close(to);
            } else if from >= 0 {
                check(libc::dup2(from, to));
            }
        }
        // Close-on-exec rather than close, so nothing is lost if exec fails.
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            fail(errno());
        }

        if let Some((uid, gid)) = context.user {
            if context.capabilities.is_some() {
                // Keep the permitted set through setuid (which otherwise empties it when no uid
                // stays 0): the capabilities to run with are taken from it below.
                check(prctl(libc::PR_SET_KEEPCAPS, 1, 0));
            }
            check(libc::setgroups(context.group_count, context.groups));
            check(libc::setgid(gid));
            check(libc::setuid(uid));
        }
        // Opened with the user's rights (before `chdir`: relative paths are the VM's, as
        // always). `open` returns the lowest free descriptor: a standard one that is meant to
        // stay closed, or one above 2; either way it is moved into place and closed.
        for (to, file) in (0..3).zip(context.files) {
            if file.path.is_null() {
                continue;
            }
            // O_NONBLOCK: the thread that cloned us is suspended until we exec, so an open
            // that waits (a FIFO's other end, a modem's carrier) would hold it, and with it
            // every spawn and event of the VM. A FIFO with no reader fails with ENXIO; one
            // with no writer opens, and reads end of file. The flag is cleared at once: the
            // program gets an ordinary blocking descriptor.
            let fd = libc::open(
                file.path,
                file.flags | libc::O_CLOEXEC | libc::O_NONBLOCK,
                file.mode,
            );
            if fd < 0 {
                fail(errno());
            }
            let status = libc::fcntl(fd, libc::F_GETFL);
            check(status);
            check(libc::fcntl(fd, libc::F_SETFL, status & !libc::O_NONBLOCK));
            if fd == to {
                check(libc::fcntl(fd, libc::F_SETFD, 0));
            } else {
                check(libc::dup2(fd, to));
                libc::close(fd);
            }
        }
        if context.stdio[1] == OTHER {
            check(libc::dup2(2, 1));
        }
        if context.stdio[2] == OTHER {
            check(libc::dup2(1, 2));
        }
        if !context.cwd.is_null() {
            check(libc::chdir(context.cwd));
        }
        // Last, once the files are open and the user is set: nothing above needs more, or less.
        if let Some(capabilities) = context.capabilities {
            if let Err(errno) = set_capabilities(capabilities) {
                fail(errno);
            }
        }

        // execvp's rules: keep searching past ENOENT-like errors, remember EACCES.
        let mut seen_eacces = false;
        let mut last = libc::ENOENT;
        let mut candidate = context.candidates;
        while !(*candidate).is_null() {
            libc::execve(*candidate, context.argv, context.envp);
            last = errno();
            match last {
                libc::EACCES => seen_eacces = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => fail(last),
            }
            candidate = candidate.add(1);
        }
        fail(if seen_eacces { libc::EACCES } else { last })
    }
}
