//! Starting a child: `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` and a child-side setup that
//! only makes async-signal-safe system calls.
//!
//! Why this shape (measured, see NATIVE_FACTS.md):
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

use crate::command::{Command, EnvChange};
use crate::sys;
use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

/// Why a spawn failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// A system call failed; for exec failures this is the errno of `execve` (ENOENT, EACCES…).
    Os(Errno),
    /// SIGCHLD is ignored in this process, so exit statuses would be lost.
    SigchldIgnored,
    /// The command cannot be represented for `execve` (empty argv, a NUL byte).
    InvalidCommand,
    /// The event loop hit an internal error while spawning.
    Internal,
}

impl SpawnError {
    /// The lower-case name used as an Elixir atom: `enoent`, `sigchld_ignored`, …
    pub fn name(&self) -> String {
        match self {
            SpawnError::Os(errno) => format!("{errno:?}").to_ascii_lowercase(),
            SpawnError::SigchldIgnored => "sigchld_ignored".into(),
            SpawnError::InvalidCommand => "invalid_command".into(),
            SpawnError::Internal => "internal".into(),
        }
    }
}

impl From<Errno> for SpawnError {
    fn from(errno: Errno) -> SpawnError {
        SpawnError::Os(errno)
    }
}

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
    /// Our (non-blocking) write end of the child's stdin.
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
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
}

/// Everything the child reads, prepared before the clone. Field order matters to nobody.
struct ChildContext {
    candidates: *const *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin_fd: RawFd,
    stdout_fd: RawFd,
    stderr_fd: RawFd,
    new_group: bool,
    pdeathsig: bool,
    parent_pid: libc::pid_t,
    /// 0 until the child fails; then the errno of the failure.
    error: AtomicI32,
}

/// argv, envp and the exec candidates as C arrays, owned here for the duration of the spawn.
struct Prepared {
    _strings: Vec<CString>,
    candidates: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: Option<CString>,
}

fn cstring(bytes: &[u8]) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError::InvalidCommand)
}

/// The environment the child gets: ours, changed in order by `changes`.
pub fn child_environment(changes: &[EnvChange]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut env: Vec<(Vec<u8>, Vec<u8>)> = std::env::vars_os()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    for change in changes {
        match change {
            EnvChange::Clear => env.clear(),
            EnvChange::Unset(name) => env.retain(|(k, _)| k != name),
            EnvChange::Set(name, value) => match env.iter_mut().find(|(k, _)| k == name) {
                Some(entry) => entry.1 = value.clone(),
                None => env.push((name.clone(), value.clone())),
            },
        }
    }
    env
}

/// Where `execve` is tried, in order, as `execvp` does: the program itself when it names a path,
/// else each `PATH` entry (the child's `PATH` when the command sets one, else ours).
pub fn exec_candidates(program: &[u8], env: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    if program.contains(&b'/') {
        return vec![program.to_vec()];
    }
    let own_path = std::env::var_os("PATH").map(|p| p.as_bytes().to_vec());
    let path = env
        .iter()
        .find(|(k, _)| k == b"PATH")
        .map(|(_, v)| v.clone())
        .or(own_path)
        .unwrap_or_else(|| b"/usr/local/bin:/usr/bin:/bin".to_vec());
    path.split(|&b| b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { b"." as &[u8] } else { dir };
            let mut full = dir.to_vec();
            full.push(b'/');
            full.extend_from_slice(program);
            full
        })
        .collect()
}

fn prepare(command: &Command) -> Result<Prepared, SpawnError> {
    if command.argv.is_empty() || command.program().is_empty() {
        return Err(SpawnError::InvalidCommand);
    }
    let env = child_environment(&command.env);
    let candidates = exec_candidates(command.program(), &env);

    let mut strings = Vec::with_capacity(command.argv.len() + env.len() + candidates.len());
    let mut pointers = |list: &mut Vec<*const libc::c_char>, s: CString| {
        list.push(s.as_ptr());
        strings.push(s);
    };
    let mut argv = Vec::with_capacity(command.argv.len() + 1);
    for arg in &command.argv {
        pointers(&mut argv, cstring(arg)?);
    }
    let mut envp = Vec::with_capacity(env.len() + 1);
    for (name, value) in &env {
        if name.is_empty() || name.contains(&b'=') {
            return Err(SpawnError::InvalidCommand);
        }
        let mut entry = name.clone();
        entry.push(b'=');
        entry.extend_from_slice(value);
        pointers(&mut envp, cstring(&entry)?);
    }
    let mut candidate_ptrs = Vec::with_capacity(candidates.len() + 1);
    for candidate in candidates {
        pointers(&mut candidate_ptrs, cstring(&candidate)?);
    }
    argv.push(std::ptr::null());
    envp.push(std::ptr::null());
    candidate_ptrs.push(std::ptr::null());
    let cwd = command.cwd.as_deref().map(cstring).transpose()?;
    Ok(Prepared {
        _strings: strings,
        candidates: candidate_ptrs,
        argv,
        envp,
        cwd,
    })
}

/// Starts `command`. `dev_null` is an open `/dev/null` for the streams that are not piped.
pub fn spawn(
    command: &Command,
    stack: &mut ChildStack,
    dev_null: RawFd,
) -> Result<Spawned, SpawnError> {
    if sys::sigchld_ignored() {
        return Err(SpawnError::SigchldIgnored);
    }
    let prepared = prepare(command)?;
    let stdin = command
        .stdin
        .then(|| sys::input_pipe(command.pipe_size))
        .transpose()?;
    let stdout = command
        .stdout
        .then(|| sys::output_pipe(command.pipe_size))
        .transpose()?;
    let stderr = command
        .stderr
        .then(|| sys::output_pipe(command.pipe_size))
        .transpose()?;
    let context = ChildContext {
        candidates: prepared.candidates.as_ptr(),
        argv: prepared.argv.as_ptr(),
        envp: prepared.envp.as_ptr(),
        cwd: prepared
            .cwd
            .as_ref()
            .map_or(std::ptr::null(), |c| c.as_ptr()),
        stdin_fd: stdin.as_ref().map_or(dev_null, |(r, _)| r.as_raw_fd()),
        stdout_fd: stdout.as_ref().map_or(dev_null, |(_, w)| w.as_raw_fd()),
        stderr_fd: stderr.as_ref().map_or(dev_null, |(_, w)| w.as_raw_fd()),
        new_group: command.kill_group,
        pdeathsig: !command.detach,
        // SAFETY: getpid has no preconditions.
        parent_pid: unsafe { libc::getpid() },
        error: AtomicI32::new(0),
    };

    let (pid, pidfd) = clone_child(&context, stack)?;
    // Our ends only; the child's ends close here.
    let stdin = stdin.map(|(_, w)| w);
    let (stdout, stderr) = (stdout.map(|(r, _)| r), stderr.map(|(r, _)| r));
    match context.error.load(Ordering::SeqCst) {
        0 => Ok(Spawned {
            pid,
            pidfd,
            stdin,
            stdout,
            stderr,
        }),
        errno => {
            // The child has already exited (vfork semantics): reap it so no zombie stays.
            let _ = sys::reap(pid);
            Err(SpawnError::Os(Errno::from_raw(errno)))
        }
    }
}

/// Clones the child with every signal blocked in this thread, so that no handler of ours runs on
/// the child's stack before it has reset its dispositions.
fn clone_child(
    context: &ChildContext,
    stack: &mut ChildStack,
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
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: `child_main` only makes async-signal-safe calls and reads `context`, which outlives
    // the call: with CLONE_VFORK this thread is suspended until the child execs or exits. The
    // stack is ours, unused by anyone else, and its top is 16-byte aligned. With CLONE_PIDFD the
    // kernel writes the pidfd to the parent_tid argument.
    let ret = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            flags,
            context as *const ChildContext as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    let clone_errno = Errno::last();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    if ret == -1 {
        return Err(SpawnError::Os(clone_errno));
    }
    // SAFETY: the kernel created this descriptor for us.
    Ok((ret, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// The child between `clone` and `execve`. Async-signal-safe system calls only, no allocation,
/// no panics (no indexing, no formatting), and `_exit` on every path that does not exec.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the ChildContext that `spawn` keeps alive while we run.
    let context = unsafe { &*(arg as *const ChildContext) };
    // SAFETY: every call below is a plain system call on values prepared by the parent.
    unsafe {
        let fail = |errno: libc::c_int| -> ! {
            context.error.store(errno.max(1), Ordering::SeqCst);
            libc::_exit(127)
        };
        let errno = || *libc::__errno_location();

        // Every signal back to its default (raw syscall: glibc refuses 32 and 33), empty mask.
        let default_action = [0u64; 4];
        for signal in 1..=crate::signal::MAX {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
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

        if context.new_group && libc::setpgid(0, 0) != 0 {
            fail(errno());
        }
        if context.pdeathsig {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                fail(errno());
            }
            // The VM may have died between clone and prctl: then nobody owns us.
            if libc::getppid() != context.parent_pid {
                fail(libc::ESRCH);
            }
        }
        for (from, to) in [
            (context.stdin_fd, 0),
            (context.stdout_fd, 1),
            (context.stderr_fd, 2),
        ] {
            if libc::dup2(from, to) == -1 {
                fail(errno());
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
        if !context.cwd.is_null() && libc::chdir(context.cwd) != 0 {
            fail(errno());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_execvp() {
        let env = vec![(b"PATH".to_vec(), b"/a::/b".to_vec())];
        assert_eq!(
            exec_candidates(b"ls", &env),
            vec![b"/a/ls".to_vec(), b"./ls".to_vec(), b"/b/ls".to_vec()]
        );
        assert_eq!(exec_candidates(b"./x", &env), vec![b"./x".to_vec()]);
        assert_eq!(exec_candidates(b"/bin/x", &[]), vec![b"/bin/x".to_vec()]);
    }

    #[test]
    fn environment_changes_apply_in_order() {
        let env = child_environment(&[
            EnvChange::Clear,
            EnvChange::Set(b"A".to_vec(), b"1".to_vec()),
            EnvChange::Set(b"B".to_vec(), b"2".to_vec()),
            EnvChange::Set(b"A".to_vec(), b"3".to_vec()),
            EnvChange::Unset(b"B".to_vec()),
        ]);
        assert_eq!(env, vec![(b"A".to_vec(), b"3".to_vec())]);
    }

    #[test]
    fn bad_commands_are_refused_before_clone() {
        for argv in [vec![], vec![b"".to_vec()], vec![b"a\0b".to_vec()]] {
            let command = Command {
                argv,
                ..Command::new(["x"])
            };
            assert_eq!(prepare(&command).err(), Some(SpawnError::InvalidCommand));
        }
        let mut command = Command::new(["true"]);
        command.env = vec![EnvChange::Set(b"A=B".to_vec(), b"1".to_vec())];
        assert_eq!(prepare(&command).err(), Some(SpawnError::InvalidCommand));
    }

    #[test]
    fn error_names_are_atoms() {
        assert_eq!(SpawnError::Os(Errno::ENOENT).name(), "enoent");
        assert_eq!(SpawnError::Os(Errno::EACCES).name(), "eacces");
        assert_eq!(SpawnError::SigchldIgnored.name(), "sigchld_ignored");
    }
}
