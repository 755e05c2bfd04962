//! Starting a child: `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` and a child-side setup that
//! only makes async-signal-safe system calls.
//!
//! Why this shape (measured, see docs/native-facts.md):
//! - `fork` copies the VM's page tables (65 ms per spawn with 2 GiB live); a vfork-style clone
//!   shares the memory and suspends only the calling thread until `execve`, so the cost does not
//!   grow with the VM.
//! - The child runs on a stack we hand it and shares our memory, so between `clone` and `execve`
//!   it must not allocate, lock, unwind or touch Rust's standard library: everything it needs
//!   (argv, envp, the `PATH` candidates) is prepared here before the clone, and it reports a
//!   failure by storing `errno` in shared memory — we read it once `clone` returns, which the
//!   kernel only lets happen after the child has exec'd or exited.
//! - The BEAM's descriptors are not close-on-exec and the signals it ignores survive `execve`, so
//!   the child resets every signal to its default, empties its mask and marks every descriptor
//!   above 2 close-on-exec before it execs.
//! - `CLONE_PIDFD` gives a descriptor for the child at once: exit is watched and signals are sent
//!   through it, so a recycled pid is never signalled.

mod capabilities;
mod child;
mod prepare;
mod request;
mod stdio;
mod wire;

use crate::command::{Command, Group};
use crate::sys;
use nix::errno::Errno;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use capabilities::{prctl, set_capabilities};
use child::{child_main, ChildContext};
pub use prepare::{child_environment, exec_candidates, user_environment_changes, User};
use prepare::{cstring, lookup_user, prepare, Prepared};
pub(crate) use request::clone_request;
use request::request_of;
use stdio::{stdio, ChildFile, Stdio, CLOSE, FILE, INHERIT, OTHER};
pub use wire::{
    decode_report, DecodeError, FileTarget, Limit, Own, Report, Request, Response, MAX_FDS,
    MAX_REQUEST, RLIMITS, TARGET_CLOSE, TARGET_FILE, TARGET_OTHER,
};

/// Why a spawn failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// A system call failed; for exec failures this is the errno of `execve` (ENOENT, EACCES…).
    Os(Errno),
    /// SIGCHLD is ignored in this process, so exit statuses would be lost.
    SigchldIgnored,
    /// The command cannot be represented for `execve` (empty argv, a NUL byte).
    InvalidCommand,
    /// The `user` does not exist.
    UnknownUser,
    /// As many children run as the configured maximum.
    MaxChildren,
    /// The event loop hit an internal error while spawning.
    Internal,
    /// `Group::Join` names a group that no live child of ours leads.
    BadGroup,
    /// cgroup limits were asked for where cgroups (or their controller) are not available.
    CgroupLimitsUnavailable,
}

impl From<Errno> for SpawnError {
    fn from(errno: Errno) -> SpawnError {
        SpawnError::Os(errno)
    }
}

/// A started child, with our ends of its pipes (or of its pty).
#[derive(Debug)]
pub struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
    /// Our (non-blocking) write end of the child's stdin (the pty master with a pty).
    pub stdin: Option<OwnedFd>,
    /// Our (non-blocking) read end of the child's stdout (the pty master with a pty).
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// With a pty: the master, for window size changes whatever else we keep of it.
    pub terminal: Option<OwnedFd>,
}

/// Memory the child runs on between `clone` and `execve`. Reused by every spawn of a thread.
pub struct ChildStack(Vec<u8>);

impl Default for ChildStack {
    fn default() -> ChildStack {
        ChildStack(vec![0; 128 * 1024])
    }
}

impl ChildStack {
    fn top(&mut self) -> *mut libc::c_void {
        let end = self.0.as_mut_ptr_range().end as usize;
        (end & !15) as *mut libc::c_void
    }

    /// Its base and the size up to the aligned top, for `clone3`.
    fn bounds(&mut self) -> (*mut u8, usize) {
        let base = self.0.as_mut_ptr();
        (base, self.top() as usize - base as usize)
    }
}

/// The cgroup a child is born in: its directory, to clone the child into it
/// (`CLONE_INTO_CGROUP`), and its `cgroup.procs`, for the child to join by writing to it where
/// that cannot be done.
#[derive(Debug, Clone, Copy)]
pub struct CgroupTarget<'a> {
    pub procs: &'a std::ffi::CStr,
    /// The open directory, or -1.
    pub dir: RawFd,
}

/// Starts `command`. `dev_null` is an open `/dev/null` for the streams that are not piped;
/// `cgroup`, the cgroup the child is born in.
pub fn spawn(
    command: &Command,
    stack: &mut ChildStack,
    dev_null: RawFd,
    cgroup: Option<CgroupTarget>,
) -> Result<Spawned, SpawnError> {
    spawn_with(command, stack, dev_null, cgroup, None, 0)
}

/// [`spawn`] from this thread, with `extra_flags` added to the clone (`CLONE_FS` for the
/// spawner itself).
pub(crate) fn spawn_direct(
    command: &Command,
    stack: &mut ChildStack,
    dev_null: RawFd,
    cgroup: Option<CgroupTarget>,
    extra_flags: libc::c_int,
) -> Result<Spawned, SpawnError> {
    spawn_with(command, stack, dev_null, cgroup, None, extra_flags)
}

/// Something that clones children for us from another process: the spawner's client. A seam,
/// so that this module does not know the spawner (and a fake could stand in).
pub(crate) trait Delegate {
    /// Has the child of `request` cloned, sending `fds` (the request's indices). `Ok(None)`:
    /// not possible now, spawn directly. `Ok(Some((pid, pidfd, errno)))`: the child was made
    /// (errno 0: it exec'd; else it has exited and is reaped, pidfd `None`).
    fn spawn(
        &mut self,
        request: &mut Request,
        fds: &[RawFd],
        stack: &mut ChildStack,
        dev_null: RawFd,
    ) -> Result<Option<(libc::pid_t, Option<OwnedFd>, i32)>, SpawnError>;
}

/// [`spawn`] through `spawner` when it is given and usable; else (or when it cannot serve this
/// request) from this thread.
pub(crate) fn spawn_with(
    command: &Command,
    stack: &mut ChildStack,
    dev_null: RawFd,
    cgroup: Option<CgroupTarget>,
    spawner: Option<&mut dyn Delegate>,
    extra_flags: libc::c_int,
) -> Result<Spawned, SpawnError> {
    if sys::sigchld_ignored() {
        return Err(SpawnError::SigchldIgnored);
    }
    let user = command.user.as_deref().map(lookup_user).transpose()?;
    let prepared = prepare(command, user.as_ref())?;
    let stdio = stdio(command, dev_null)?;
    let rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)> = command
        .rlimits
        .iter()
        .map(|r| {
            let limit = libc::rlimit {
                rlim_cur: r.soft,
                rlim_max: r.hard,
            };
            (r.resource as libc::__rlimit_resource_t, limit)
        })
        .collect();
    let group = match command.group {
        _ if command.pty.is_some() => -1, // setsid makes the child a group leader
        Group::New => 0,
        Group::Join(pgid) => pgid,
        Group::Inherit => -1,
    };
    let remote = match spawner {
        Some(client) => {
            let (mut request, fds) = request_of(
                command,
                &prepared,
                &stdio,
                cgroup,
                group,
                &rlimits,
                user.as_ref(),
            );
            client.spawn(&mut request, &fds, stack, dev_null)?
        }
        None => None,
    };
    let (pid, pidfd, errno) = match remote {
        Some(done) => done,
        None => {
            let error = AtomicI32::new(0);
            let mut context = ChildContext {
                candidates: prepared.candidates.as_ptr(),
                argv: prepared.argv.as_ptr(),
                envp: prepared.envp.as_ptr(),
                cwd: prepared
                    .cwd
                    .as_ref()
                    .map_or(std::ptr::null(), |c| c.as_ptr()),
                stdio: stdio.targets,
                files: stdio.files,
                controlling_tty: stdio.controlling_tty,
                cgroup_procs: cgroup.map_or(std::ptr::null(), |c| c.procs.as_ptr()),
                group,
                pdeathsig: !command.detach,
                // SAFETY: getpid has no preconditions.
                parent_pid: unsafe { libc::getpid() },
                nice: command.nice,
                rlimits: rlimits.as_ptr(),
                rlimit_count: rlimits.len(),
                user: user.as_ref().map(|u| (u.uid, u.gid)),
                groups: user
                    .as_ref()
                    .map_or(std::ptr::null(), |u| u.groups.as_ptr()),
                group_count: user.as_ref().map_or(0, |u| u.groups.len()),
                capabilities: command.capabilities,
                report: -1,
                oom_score_adj: std::ptr::null(),
                reset_signals: u64::MAX,
                error: &error,
            };
            let dir = cgroup.map_or(-1, |c| c.dir);
            let (pid, pidfd) = clone_child(&mut context, stack, DIRECT_FLAGS | extra_flags, dir)?;
            match error.load(Ordering::SeqCst) {
                0 => (pid, Some(pidfd), 0),
                errno => {
                    // The child has already exited (vfork semantics): reap it so no zombie
                    // stays.
                    let _ = sys::reap(pid);
                    (pid, None, errno)
                }
            }
        }
    };
    // The child's ends close when `stdio` drops; ours are returned.
    let [stdin, stdout, stderr] = stdio.ours;
    let terminal = stdio.terminal;
    match (errno, pidfd) {
        (0, Some(pidfd)) => Ok(Spawned {
            pid,
            pidfd,
            stdin,
            stdout,
            stderr,
            terminal,
        }),
        (0, None) => Err(SpawnError::Internal),
        (errno, _) => Err(SpawnError::Os(Errno::from_raw(errno))),
    }
}

/// A direct spawn's clone: the child runs in our memory until `execve` (vfork semantics).
const DIRECT_FLAGS: libc::c_int =
    libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;

/// Clones the child with every signal blocked in this thread, so that no handler of ours runs on
/// the child's stack before it has reset its dispositions. With `cgroup_dir` (not -1) the child
/// is born in that cgroup where the kernel can do it (`clone3`); else it joins by writing to
/// the context's `cgroup.procs`.
fn clone_child(
    context: &mut ChildContext,
    stack: &mut ChildStack,
    flags: libc::c_int,
    cgroup_dir: RawFd,
) -> Result<(libc::pid_t, OwnedFd), SpawnError> {
    // SAFETY: sigset_t is plain data and is initialised by sigfillset before use.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to sigset_t values.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
    }
    let mut pidfd: libc::c_int = -1;
    let procs = std::mem::replace(&mut context.cgroup_procs, std::ptr::null());
    let (base, size) = stack.bounds();
    // SAFETY: as for the clone below; the child has no cgroup.procs to write (it is born in
    // the cgroup). A failed clone3 ran no child.
    let born_inside = unsafe {
        sys::clone3::clone_into_cgroup(
            flags,
            cgroup_dir,
            base,
            size,
            child_main,
            context as *mut ChildContext as *mut libc::c_void,
        )
    };
    context.cgroup_procs = procs;
    let (ret, clone_errno) = match born_inside {
        Ok((pid, fd)) => {
            pidfd = fd;
            (pid, Errno::UnknownErrno)
        }
        // SAFETY: `child_main` only makes async-signal-safe calls and reads `context`, which
        // outlives the call: with CLONE_VFORK this thread is suspended until the child execs or
        // exits. The stack is ours, unused by anyone else, and its top is 16-byte aligned. With
        // CLONE_PIDFD the kernel writes the pidfd to the parent_tid argument.
        Err(_) => unsafe {
            let ret = libc::clone(
                child_main,
                stack.top(),
                flags,
                context as *mut ChildContext as *mut libc::c_void,
                &mut pidfd as *mut libc::c_int,
            );
            (ret, Errno::last())
        },
    };
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    if ret == -1 {
        return Err(SpawnError::Os(clone_errno));
    }
    // SAFETY: the kernel created this descriptor for us.
    Ok((ret, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}
