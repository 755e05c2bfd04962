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

use crate::command::{Capabilities, Command, EnvChange, Group, Input, Output};
use crate::spawner::{Client, FileTarget, Own, Request, Response};
use crate::spawner::{TARGET_CLOSE, TARGET_FILE, TARGET_OTHER};
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
}

/// The child closes this standard descriptor.
const CLOSE: RawFd = -1;
/// The child points this standard descriptor where the other output stream goes.
const OTHER: RawFd = -2;
/// The child keeps the VM's descriptor.
const INHERIT: RawFd = -3;
/// The child opens this standard descriptor's file itself (see [`ChildFile`]).
const FILE: RawFd = -4;

/// A file the child opens for one of its fds 0–2 once it runs as its user, so that the user's
/// rights apply and what it creates is the user's.
#[derive(Clone, Copy)]
struct ChildFile {
    /// Null unless the descriptor's target is [`FILE`].
    path: *const libc::c_char,
    flags: libc::c_int,
    mode: libc::mode_t,
}

impl ChildFile {
    const NONE: ChildFile = ChildFile {
        path: std::ptr::null(),
        flags: 0,
        mode: 0,
    };
}

/// Everything the child reads, prepared before the clone.
struct ChildContext {
    candidates: *const *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    /// Targets of fds 0, 1, 2: a descriptor, [`CLOSE`], [`OTHER`], [`INHERIT`] or [`FILE`].
    stdio: [RawFd; 3],
    /// The files of the [`FILE`] targets.
    files: [ChildFile; 3],
    /// With a pty: the slave, to become the controlling terminal of a new session.
    controlling_tty: RawFd,
    /// The `cgroup.procs` file of the child's cgroup, or null.
    cgroup_procs: *const libc::c_char,
    /// `setpgid(0, group)` unless negative (0: a new group).
    group: libc::pid_t,
    pdeathsig: bool,
    parent_pid: libc::pid_t,
    nice: Option<libc::c_int>,
    rlimits: *const (libc::__rlimit_resource_t, libc::rlimit),
    rlimit_count: usize,
    /// uid, gid and supplementary groups to switch to.
    user: Option<(libc::uid_t, libc::gid_t)>,
    groups: *const libc::gid_t,
    group_count: usize,
    /// The capabilities to run with (see [`set_capabilities`]).
    capabilities: Option<Capabilities>,
    /// The write end of the spawner's report pipe (our pid, then a failure's errno), or -1.
    report: RawFd,
    /// A value to write to `/proc/self/oom_score_adj` (NUL-terminated), or null.
    oom_score_adj: *const libc::c_char,
    /// 0 until the child fails; then the errno of the failure. Memory the parent sees: ours
    /// (CLONE_VM), or the spawner's shared page.
    error: *const AtomicI32,
}

/// argv, envp and the exec candidates as C arrays, owned here for the duration of the spawn.
struct Prepared {
    _strings: Strings,
    candidates: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: Option<CString>,
}

fn cstring(bytes: &[u8]) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError::InvalidCommand)
}

/// NUL-terminated strings packed in one allocation: a spawn's argv, envp and exec candidates
/// cost a few allocations, not one per string.
#[derive(Default)]
struct Strings {
    bytes: Vec<u8>,
    starts: Vec<usize>,
}

impl Strings {
    /// Appends the concatenation of `parts` as one string, refusing interior NUL bytes.
    fn push(&mut self, parts: &[&[u8]]) -> Result<(), SpawnError> {
        self.starts.push(self.bytes.len());
        for part in parts {
            if part.contains(&0) {
                return Err(SpawnError::InvalidCommand);
            }
            self.bytes.extend_from_slice(part);
        }
        self.bytes.push(0);
        Ok(())
    }

    fn len(&self) -> usize {
        self.starts.len()
    }

    /// A null-terminated array of pointers to strings `range`. Valid while `self` is neither
    /// changed nor dropped.
    fn pointers(&self, range: std::ops::Range<usize>) -> Vec<*const libc::c_char> {
        let base = self.bytes.as_ptr();
        let mut pointers: Vec<*const libc::c_char> = self.starts[range]
            .iter()
            // SAFETY: every start is an offset inside `bytes`.
            .map(|&start| unsafe { base.add(start) }.cast())
            .collect();
        pointers.push(std::ptr::null());
        pointers
    }
}

extern "C" {
    /// The process environment, as `execve` takes it.
    static environ: *const *const libc::c_char;
}

/// Our own environment, each entry as `NAME=value`, read straight from `environ` (no per-entry
/// allocation). Like `std::env::vars_os`, this cannot exclude a concurrent `setenv` by other
/// code in the VM; entries are copied at once.
fn own_environment(strings: &mut Strings) -> Result<(), SpawnError> {
    // SAFETY: `environ` is a null-terminated array of NUL-terminated strings, maintained by libc.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let bytes = std::ffi::CStr::from_ptr(*entry).to_bytes();
            if bytes.contains(&b'=') {
                strings.push(&[bytes])?;
            }
            entry = entry.add(1);
        }
    }
    Ok(())
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

/// What a `user` child starts from, as `runuser` does: our environment with `HOME`, `SHELL`,
/// `USER` and `LOGNAME` of the user's passwd entry, then the command's own `changes` (which may
/// set, unset or clear them).
pub fn user_environment_changes(user: &User, changes: &[EnvChange]) -> Vec<EnvChange> {
    // An empty shell field means /bin/sh (passwd(5)).
    let shell = if user.shell.is_empty() {
        b"/bin/sh".to_vec()
    } else {
        user.shell.clone()
    };
    let mut all = vec![
        EnvChange::Set(b"HOME".to_vec(), user.home.clone()),
        EnvChange::Set(b"SHELL".to_vec(), shell),
        EnvChange::Set(b"USER".to_vec(), user.name.clone()),
        EnvChange::Set(b"LOGNAME".to_vec(), user.name.clone()),
    ];
    all.extend_from_slice(changes);
    all
}

/// Where `execve` is tried, in order, as `execvp` does: the program itself when it names a path,
/// else each `PATH` entry (the child's `PATH` when the command sets one, else ours).
pub fn exec_candidates(program: &[u8], env: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    let path = env
        .iter()
        .find(|(k, _)| k == b"PATH")
        .map(|(_, v)| v.clone());
    candidates(program, path)
}

/// [`exec_candidates`] with the child's `PATH` (`None`: ours).
fn candidates(program: &[u8], path: Option<Vec<u8>>) -> Vec<Vec<u8>> {
    if program.contains(&b'/') {
        return vec![program.to_vec()];
    }
    let path = path
        .or_else(|| std::env::var_os("PATH").map(|p| p.as_bytes().to_vec()))
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

fn prepare(command: &Command, user: Option<&User>) -> Result<Prepared, SpawnError> {
    if command.argv.is_empty() || command.program().is_empty() {
        return Err(SpawnError::InvalidCommand);
    }
    let mut strings = Strings::default();
    for arg in &command.argv {
        strings.push(&[arg])?;
    }
    let argc = strings.len();
    // The usual case, no changes, copies our environment in one pass.
    let path = if command.env.is_empty() && user.is_none() {
        own_environment(&mut strings)?;
        None
    } else {
        let env = match user {
            Some(user) => child_environment(&user_environment_changes(user, &command.env)),
            None => child_environment(&command.env),
        };
        for (name, value) in &env {
            if name.is_empty() || name.contains(&b'=') {
                return Err(SpawnError::InvalidCommand);
            }
            strings.push(&[name, b"=", value])?;
        }
        env.into_iter().find(|(k, _)| k == b"PATH").map(|(_, v)| v)
    };
    let envc = strings.len();
    for candidate in candidates(command.program(), path) {
        strings.push(&[&candidate])?;
    }
    let cwd = command.cwd.as_deref().map(cstring).transpose()?;
    Ok(Prepared {
        argv: strings.pointers(0..argc),
        envp: strings.pointers(argc..envc),
        candidates: strings.pointers(envc..strings.len()),
        _strings: strings,
        cwd,
    })
}

/// The descriptors of one spawn: the child's targets for fds 0–2, ours to keep, and the ones
/// that only need to stay open until the clone returns.
struct Stdio {
    targets: [RawFd; 3],
    files: [ChildFile; 3],
    /// The paths `files` point to.
    _paths: Vec<CString>,
    controlling_tty: RawFd,
    ours: [Option<OwnedFd>; 3],
    terminal: Option<OwnedFd>,
    _child_ends: Vec<OwnedFd>,
}

fn stdio(command: &Command, dev_null: RawFd) -> Result<Stdio, SpawnError> {
    let mut child_ends = Vec::new();
    let mut ours: [Option<OwnedFd>; 3] = [None, None, None];
    let mut files = [ChildFile::NONE; 3];
    let mut paths = Vec::new();
    // The child opens the file itself; the CString's heap buffer does not move when `paths` grows.
    let mut file = |index: usize, path: &[u8], flags: libc::c_int, mode: u32| {
        let path = cstring(path)?;
        files[index] = ChildFile {
            path: path.as_ptr(),
            flags,
            mode,
        };
        paths.push(path);
        Ok::<RawFd, SpawnError>(FILE)
    };
    let keep = |fd: OwnedFd, child_ends: &mut Vec<OwnedFd>| {
        let raw = fd.as_raw_fd();
        child_ends.push(fd);
        raw
    };
    let pty = command.pty.map(sys::open_pty).transpose()?;
    let mut terminal = None;
    let slave = pty.as_ref().map(|(_, slave)| slave.as_raw_fd());

    let stdin = match &command.stdin {
        Input::Null => dev_null,
        Input::Close => CLOSE,
        Input::File(path) => file(0, path, libc::O_RDONLY, 0)?,
        Input::Fd(fd) => *fd,
        Input::Pipe => match slave {
            Some(slave) => slave,
            None => {
                let (read, write) = sys::input_pipe(command.pipe_size)?;
                ours[0] = Some(write);
                keep(read, &mut child_ends)
            }
        },
    };
    let mut outputs = [CLOSE; 2];
    for (index, output) in [&command.stdout, &command.stderr].into_iter().enumerate() {
        outputs[index] = match output {
            Output::Null => dev_null,
            Output::Close => CLOSE,
            Output::Other => OTHER,
            Output::Inherit => INHERIT,
            Output::File { path, append, mode } => {
                let flags = libc::O_WRONLY
                    | libc::O_CREAT
                    | if *append {
                        libc::O_APPEND
                    } else {
                        libc::O_TRUNC
                    };
                file(index + 1, path, flags, *mode)?
            }
            Output::Pipe => match slave {
                Some(slave) => slave,
                None => {
                    let (read, write) = sys::output_pipe(command.pipe_size)?;
                    ours[index + 1] = Some(read);
                    keep(write, &mut child_ends)
                }
            },
        };
    }
    if let Some((master, slave)) = pty {
        // Our end never blocks, whichever directions we keep (a duplicate shares the flag).
        sys::set_nonblocking(&master)?;
        terminal = Some(sys::duplicate(&master)?);
        // One master for both directions: a duplicate lets stdin and stdout be watched apart.
        if command.stdin == Input::Pipe {
            ours[0] = Some(sys::duplicate(&master)?);
        }
        if command.stdout == Output::Pipe || command.stderr == Output::Pipe {
            ours[1] = Some(master);
        }
        child_ends.push(slave);
    }
    Ok(Stdio {
        targets: [stdin, outputs[0], outputs[1]],
        files,
        _paths: paths,
        controlling_tty: slave.unwrap_or(CLOSE),
        ours,
        terminal,
        _child_ends: child_ends,
    })
}

/// The passwd entry of the user a child runs as, and its supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
    pub name: Vec<u8>,
    pub home: Vec<u8>,
    pub shell: Vec<u8>,
}

/// Bytes of a C string from a passwd entry (empty for null).
///
/// # Safety
/// `field` is null or a NUL-terminated string.
unsafe fn passwd_field(field: *const libc::c_char) -> Vec<u8> {
    if field.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller's promise.
    unsafe { std::ffi::CStr::from_ptr(field) }
        .to_bytes()
        .to_vec()
}

/// The passwd entry and supplementary groups of `name`, looked up before the clone (NSS is not
/// async-signal-safe). Switching users needs root.
fn lookup_user(name: &[u8]) -> Result<User, SpawnError> {
    let cname = cstring(name)?;
    // SAFETY: passwd is plain data; zeroed is a valid value.
    let mut passwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: valid pointers to the name, the passwd, the buffer and its length.
    let ret = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut passwd,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if ret != 0 || found.is_null() {
        return Err(SpawnError::UnknownUser);
    }
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut count = groups.len() as libc::c_int;
    // SAFETY: `groups` has room for `count` entries; getgrouplist updates `count`.
    let ret = unsafe {
        libc::getgrouplist(
            cname.as_ptr(),
            passwd.pw_gid,
            groups.as_mut_ptr(),
            &mut count,
        )
    };
    groups.truncate(if ret < 0 { 0 } else { count.max(0) as usize });
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(SpawnError::Os(Errno::EPERM));
    }
    // SAFETY: getpwnam_r succeeded: the fields are null or strings inside `buffer`, still alive.
    let (name, home, shell) = unsafe {
        (
            passwd_field(passwd.pw_name),
            passwd_field(passwd.pw_dir),
            passwd_field(passwd.pw_shell),
        )
    };
    Ok(User {
        uid: passwd.pw_uid,
        gid: passwd.pw_gid,
        groups,
        name,
        home,
        shell,
    })
}

/// Starts `command`. `dev_null` is an open `/dev/null` for the streams that are not piped;
/// `cgroup_procs`, the `cgroup.procs` file of the cgroup the child joins before `execve`.
pub fn spawn(
    command: &Command,
    stack: &mut ChildStack,
    dev_null: RawFd,
    cgroup_procs: Option<&std::ffi::CStr>,
) -> Result<Spawned, SpawnError> {
    spawn_with(command, stack, dev_null, cgroup_procs, None, 0)
}

/// [`spawn`] from this thread, with `extra_flags` added to the clone (`CLONE_FS` for the
/// spawner itself).
pub(crate) fn spawn_direct(
    command: &Command,
    stack: &mut ChildStack,
    dev_null: RawFd,
    cgroup_procs: Option<&std::ffi::CStr>,
    extra_flags: libc::c_int,
) -> Result<Spawned, SpawnError> {
    spawn_with(command, stack, dev_null, cgroup_procs, None, extra_flags)
}

/// [`spawn`] through `spawner` when it is given and usable; else (or when it cannot serve this
/// request) from this thread.
pub(crate) fn spawn_with(
    command: &Command,
    stack: &mut ChildStack,
    dev_null: RawFd,
    cgroup_procs: Option<&std::ffi::CStr>,
    spawner: Option<&mut Client>,
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
                cgroup_procs,
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
            let context = ChildContext {
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
                cgroup_procs: cgroup_procs.map_or(std::ptr::null(), |p| p.as_ptr()),
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
                error: &error,
            };
            let (pid, pidfd) = clone_child(&context, stack, DIRECT_FLAGS | extra_flags)?;
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

/// The spawner's request for a child, and the descriptors it carries (the request's indices).
fn request_of(
    command: &Command,
    prepared: &Prepared,
    stdio: &Stdio,
    cgroup_procs: Option<&std::ffi::CStr>,
    group: libc::pid_t,
    rlimits: &[(libc::__rlimit_resource_t, libc::rlimit)],
    user: Option<&User>,
) -> (Request, Vec<RawFd>) {
    fn index(fds: &mut Vec<RawFd>, fd: RawFd) -> i32 {
        match fds.iter().position(|&f| f == fd) {
            Some(i) => i as i32,
            None => {
                fds.push(fd);
                fds.len() as i32 - 1
            }
        }
    }
    let mut fds = Vec::new();
    let mut targets = [TARGET_CLOSE; 3];
    for (to, (target, &from)) in targets.iter_mut().zip(&stdio.targets).enumerate() {
        *target = match from {
            CLOSE => TARGET_CLOSE,
            OTHER => TARGET_OTHER,
            FILE => TARGET_FILE,
            // The VM's own descriptor is sent: the spawner's standard fds are not the VM's.
            INHERIT => index(&mut fds, to as RawFd),
            fd => index(&mut fds, fd),
        };
    }
    let mut files: [Option<FileTarget>; 3] = [None, None, None];
    for (file, child) in files.iter_mut().zip(&stdio.files) {
        if !child.path.is_null() {
            *file = Some(FileTarget {
                // SAFETY: the path points into a CString that `stdio` keeps.
                path: unsafe { std::ffi::CStr::from_ptr(child.path) }
                    .to_bytes()
                    .to_vec(),
                flags: child.flags,
                mode: child.mode,
            });
        }
    }
    let controlling_tty = if stdio.controlling_tty >= 0 {
        index(&mut fds, stdio.controlling_tty)
    } else {
        -1
    };
    let request = Request {
        strings: prepared._strings.bytes.clone(),
        argc: (prepared.argv.len() - 1) as u32,
        envc: (prepared.envp.len() - 1) as u32,
        cwd: prepared.cwd.as_ref().map(|c| c.as_bytes().to_vec()),
        stdio: targets,
        files,
        controlling_tty,
        cgroup_procs: cgroup_procs.map(|p| p.to_bytes().to_vec()),
        group,
        pdeathsig: !command.detach,
        // SAFETY: getpid has no preconditions.
        parent_pid: unsafe { libc::getpid() },
        nice: command.nice,
        rlimits: rlimits
            .iter()
            .map(|(r, l)| (*r, l.rlim_cur, l.rlim_max))
            .collect(),
        user: user.map(|u| (u.uid, u.gid)),
        groups: user.map_or(Vec::new(), |u| u.groups.clone()),
        capabilities: command.capabilities,
        report: -1,
        ..Request::default()
    };
    (request, fds)
}

/// The spawner's side of a request: clones the child with `CLONE_PARENT` (its parent is the
/// VM), from this small process. The response has the child's pid and errno, with its pidfd.
pub(crate) fn clone_request(
    request: &Request,
    fds: &[OwnedFd],
    own: &Own,
    stack: &mut ChildStack,
) -> (Response, Option<OwnedFd>) {
    let refused = |errno: libc::c_int| (Response { pid: 0, errno }, None);
    // Indices were validated by `Request::decode` against `fds.len()`.
    let raw = |i: i32| fds.get(i as usize).map_or(-1, |fd| fd.as_raw_fd());
    let base = request.strings.as_ptr();
    let mut starts = Vec::new();
    let mut at = 0;
    for (i, &b) in request.strings.iter().enumerate() {
        if b == 0 {
            starts.push(at);
            at = i + 1;
        }
    }
    let pointers = |range: &[usize]| -> Vec<*const libc::c_char> {
        let mut p: Vec<*const libc::c_char> = range
            .iter()
            // SAFETY: every start is an offset inside `strings`.
            .map(|&s| unsafe { base.add(s) }.cast())
            .collect();
        p.push(std::ptr::null());
        p
    };
    let (argc, envc) = (request.argc as usize, request.envc as usize);
    if argc + envc >= starts.len() {
        return refused(libc::EINVAL);
    }
    let argv = pointers(&starts[..argc]);
    let envp = pointers(&starts[argc..argc + envc]);
    let candidates = pointers(&starts[argc + envc..]);
    let Ok(cwd) = request.cwd.clone().map(CString::new).transpose() else {
        return refused(libc::EINVAL);
    };
    let mut paths = Vec::new();
    let mut files = [ChildFile::NONE; 3];
    for (child, file) in files.iter_mut().zip(&request.files) {
        if let Some(file) = file {
            let Ok(path) = CString::new(file.path.clone()) else {
                return refused(libc::EINVAL);
            };
            *child = ChildFile {
                path: path.as_ptr(),
                flags: file.flags,
                mode: file.mode,
            };
            paths.push(path);
        }
    }
    let mut targets = [CLOSE; 3];
    for (target, &from) in targets.iter_mut().zip(&request.stdio) {
        *target = match from {
            TARGET_CLOSE => CLOSE,
            TARGET_OTHER => OTHER,
            TARGET_FILE => FILE,
            i => raw(i),
        };
    }
    let Ok(cgroup_procs) = request.cgroup_procs.clone().map(CString::new).transpose() else {
        return refused(libc::EINVAL);
    };
    // The VM's limits where ours differ (it may have changed them since it started us), then
    // the command's own.
    let mut rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)> = Vec::new();
    for &(resource, soft, hard) in &request.base_rlimits {
        // SAFETY: rlimit is plain data, filled by getrlimit.
        let mut mine: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to an rlimit.
        let ret = unsafe { libc::getrlimit(resource as _, &mut mine) };
        if ret != 0 || mine.rlim_cur != soft || mine.rlim_max != hard {
            rlimits.push((
                resource as _,
                libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                },
            ));
        }
    }
    for &(resource, soft, hard) in &request.rlimits {
        rlimits.push((
            resource as _,
            libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            },
        ));
    }
    // SAFETY: getpriority has no memory arguments.
    let my_nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let nice = request
        .nice
        .or((request.base_nice != my_nice).then_some(request.base_nice));
    let oom = request
        .oom_score_adj
        .filter(|&v| Some(v) != own.oom_score_adj)
        .and_then(|v| CString::new(v.to_string()).ok());
    let context = ChildContext {
        candidates: candidates.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        stdio: targets,
        files,
        controlling_tty: if request.controlling_tty >= 0 {
            raw(request.controlling_tty)
        } else {
            CLOSE
        },
        cgroup_procs: cgroup_procs
            .as_ref()
            .map_or(std::ptr::null(), |p| p.as_ptr()),
        group: request.group,
        pdeathsig: request.pdeathsig,
        parent_pid: request.parent_pid,
        nice,
        rlimits: rlimits.as_ptr(),
        rlimit_count: rlimits.len(),
        user: request.user,
        groups: request.groups.as_ptr(),
        group_count: request.groups.len(),
        capabilities: request.capabilities,
        report: if request.report >= 0 {
            raw(request.report)
        } else {
            -1
        },
        oom_score_adj: oom.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        error: own.error,
    };
    // SAFETY: `own.error` points to the spawner's shared page, alive for its whole life.
    let error = unsafe { &*own.error };
    error.store(0, Ordering::SeqCst);
    // CLONE_VM: the child runs in the spawner's memory until it execs (vfork semantics, no
    // copy of the address space); the spawner keeps its peak RSS below any program's own (see
    // `spawner::serve`), so the peak the kernel folds into the child's max_rss at execve is the
    // program's. The errno comes back through the shared page.
    let flags =
        libc::CLONE_PARENT | libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    match clone_child(&context, stack, flags) {
        Ok((pid, pidfd)) => (
            Response {
                pid,
                errno: error.load(Ordering::SeqCst),
            },
            Some(pidfd),
        ),
        Err(SpawnError::Os(errno)) => refused(errno as libc::c_int),
        Err(_) => refused(libc::EINVAL),
    }
}

/// A direct spawn's clone: the child runs in our memory until `execve` (vfork semantics).
const DIRECT_FLAGS: libc::c_int =
    libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;

/// Clones the child with every signal blocked in this thread, so that no handler of ours runs on
/// the child's stack before it has reset its dispositions.
fn clone_child(
    context: &ChildContext,
    stack: &mut ChildStack,
    flags: libc::c_int,
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

/// `struct __user_cap_header_struct` of `<linux/capability.h>`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`: with version 3, `capget`/`capset` take two, the low and the
/// high 32 bits of each set.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The `capset` data that makes `set` the effective, permitted and inheritable set.
fn cap_data(set: u64) -> [CapData; 2] {
    let half = |bits: u64| CapData {
        effective: bits as u32,
        permitted: bits as u32,
        inheritable: bits as u32,
    };
    [half(set & 0xffff_ffff), half(set >> 32)]
}

/// The permitted set in `capget` data.
fn permitted_set(data: &[CapData; 2]) -> u64 {
    u64::from(data[0].permitted) | u64::from(data[1].permitted) << 32
}

/// `prctl(option, arg2, arg3, 0, 0)`, every argument an unsigned long as the kernel reads them
/// (an `int` passed to the variadic `prctl` leaves the upper half of its register unspecified,
/// and some options refuse nonzero unused arguments).
///
/// # Safety
/// As `prctl(2)` for `option`.
unsafe fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> libc::c_int {
    let zero: libc::c_ulong = 0;
    // SAFETY: the caller's promise; the arguments are plain integers.
    unsafe { libc::prctl(option, arg2, arg3, zero, zero) }
}

/// Makes `capabilities` the child's effective, permitted, inheritable and ambient sets. Ambient
/// is what survives `execve` for a program without file capabilities run by a user other than
/// root (its permitted and effective sets after `execve` are the ambient set); root gets its
/// bounding set at `execve`, so a child that stays root has the rest dropped from it first (that
/// needs CAP_SETPCAP, which root has until then). Raising what the caller does not hold fails
/// with EPERM (from `capset` or the ambient raise), as the kernel decides.
///
/// # Safety
/// Called by the child between `clone` and `execve`: raw system calls on stack values only.
unsafe fn set_capabilities(capabilities: Capabilities) -> Result<(), libc::c_int> {
    let errno = || {
        // SAFETY: errno is thread-local and always readable.
        unsafe { *libc::__errno_location() }
    };
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData (version 3) for the calling thread (pid 0).
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(errno());
    }
    // Capabilities the kernel knows answer 0 or 1; the first unknown one, EINVAL.
    let mut bounding = 0u64;
    for cap in 0..64u32 {
        // SAFETY: PR_CAPBSET_READ only reads this thread's bounding set.
        match unsafe { prctl(libc::PR_CAPBSET_READ, cap.into(), 0) } {
            1 => bounding |= 1 << cap,
            0 => {}
            _ => break,
        }
    }
    let wanted = capabilities.resolve(permitted_set(&data), bounding);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let drops = capabilities.bounding_drops(bounding);
        for cap in (0..64u32).filter(|cap| drops & (1 << cap) != 0) {
            // SAFETY: PR_CAPBSET_DROP only changes this thread's bounding set.
            if unsafe { prctl(libc::PR_CAPBSET_DROP, cap.into(), 0) } != 0 {
                return Err(errno());
            }
        }
    }
    let data = cap_data(wanted);
    // SAFETY: capset reads the header and two CapData; pid 0 is the calling thread.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(errno());
    }
    for cap in (0..64u32).filter(|cap| wanted & (1 << cap) != 0) {
        let raise = libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong;
        // SAFETY: PR_CAP_AMBIENT only changes this thread's ambient set.
        if unsafe { prctl(libc::PR_CAP_AMBIENT, raise, cap.into()) } != 0 {
            return Err(errno());
        }
    }
    Ok(())
}

/// The child between `clone` and `execve`. Async-signal-safe system calls only, no allocation,
/// no panics (no indexing, no formatting), and `_exit` on every path that does not exec.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
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
            let fd = libc::open(file.path, file.flags | libc::O_CLOEXEC, file.mode);
            if fd < 0 {
                fail(errno());
            }
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
            assert_eq!(
                prepare(&command, None).err(),
                Some(SpawnError::InvalidCommand)
            );
        }
        let mut command = Command::new(["true"]);
        command.env = vec![EnvChange::Set(b"A=B".to_vec(), b"1".to_vec())];
        assert_eq!(
            prepare(&command, None).err(),
            Some(SpawnError::InvalidCommand)
        );
    }

    /// The strings of a null-terminated C array.
    fn strings(array: &[*const libc::c_char]) -> Vec<Vec<u8>> {
        array
            .iter()
            .take_while(|p| !p.is_null())
            // SAFETY: the array points into a live `Prepared`.
            .map(|&p| unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes().to_vec())
            .collect()
    }

    #[test]
    fn the_environment_is_ours_unless_changed() {
        let ours: Vec<Vec<u8>> = child_environment(&[])
            .into_iter()
            .map(|(k, v)| [k, b"=".to_vec(), v].concat())
            .collect();
        let prepared = prepare(&Command::new(["ls", "-l"]), None).unwrap();
        assert_eq!(strings(&prepared.envp), ours);
        assert_eq!(
            strings(&prepared.argv),
            vec![b"ls".to_vec(), b"-l".to_vec()]
        );
        assert!(strings(&prepared.candidates)
            .iter()
            .all(|c| c.ends_with(b"/ls")));

        let mut command = Command::new(["ls"]);
        command.env = vec![
            EnvChange::Clear,
            EnvChange::Set(b"PATH".to_vec(), b"/x:/y".to_vec()),
        ];
        let prepared = prepare(&command, None).unwrap();
        assert_eq!(strings(&prepared.envp), vec![b"PATH=/x:/y".to_vec()]);
        assert_eq!(
            strings(&prepared.candidates),
            vec![b"/x/ls".to_vec(), b"/y/ls".to_vec()]
        );
    }

    fn nobody(shell: &[u8]) -> User {
        User {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            name: b"nobody".to_vec(),
            home: b"/nonexistent".to_vec(),
            shell: shell.to_vec(),
        }
    }

    fn value<'a>(env: &'a [(Vec<u8>, Vec<u8>)], name: &[u8]) -> Option<&'a [u8]> {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn a_user_gets_home_shell_user_and_logname_from_passwd() {
        let user = nobody(b"/usr/sbin/nologin");
        let env = child_environment(&user_environment_changes(&user, &[]));
        assert_eq!(value(&env, b"HOME"), Some(&b"/nonexistent"[..]));
        assert_eq!(value(&env, b"SHELL"), Some(&b"/usr/sbin/nologin"[..]));
        assert_eq!(value(&env, b"USER"), Some(&b"nobody"[..]));
        assert_eq!(value(&env, b"LOGNAME"), Some(&b"nobody"[..]));
        // The rest is ours.
        let ours = child_environment(&[]);
        let others = |env: &[(Vec<u8>, Vec<u8>)]| -> Vec<(Vec<u8>, Vec<u8>)> {
            let login: [&[u8]; 4] = [b"HOME", b"SHELL", b"USER", b"LOGNAME"];
            env.iter()
                .filter(|(k, _)| !login.contains(&k.as_slice()))
                .cloned()
                .collect()
        };
        assert_eq!(others(&env), others(&ours));
        // An empty shell field is /bin/sh.
        let env = child_environment(&user_environment_changes(&nobody(b""), &[]));
        assert_eq!(value(&env, b"SHELL"), Some(&b"/bin/sh"[..]));
    }

    #[test]
    fn a_users_env_changes_win_over_passwd() {
        let user = nobody(b"/bin/sh");
        let changes = [
            EnvChange::Set(b"HOME".to_vec(), b"/h".to_vec()),
            EnvChange::Unset(b"SHELL".to_vec()),
        ];
        let env = child_environment(&user_environment_changes(&user, &changes));
        assert_eq!(value(&env, b"HOME"), Some(&b"/h"[..]));
        assert_eq!(value(&env, b"SHELL"), None);
        assert_eq!(value(&env, b"USER"), Some(&b"nobody"[..]));

        let changes = [
            EnvChange::Clear,
            EnvChange::Set(b"USER".to_vec(), b"u".to_vec()),
        ];
        let env = child_environment(&user_environment_changes(&user, &changes));
        assert_eq!(env, vec![(b"USER".to_vec(), b"u".to_vec())]);
    }

    #[test]
    fn a_users_environment_is_prepared_with_its_path_search() {
        let user = nobody(b"/bin/sh");
        let mut command = Command::new(["ls"]);
        command.env = vec![
            EnvChange::Clear,
            EnvChange::Set(b"PATH".to_vec(), b"/x".to_vec()),
        ];
        let prepared = prepare(&command, Some(&user)).unwrap();
        assert_eq!(strings(&prepared.envp), vec![b"PATH=/x".to_vec()]);
        assert_eq!(strings(&prepared.candidates), vec![b"/x/ls".to_vec()]);
        let prepared = prepare(&Command::new(["ls"]), Some(&user)).unwrap();
        let envp = strings(&prepared.envp);
        assert!(envp.contains(&b"HOME=/nonexistent".to_vec()));
        assert!(envp.contains(&b"LOGNAME=nobody".to_vec()));
    }

    #[test]
    fn capset_data_splits_each_set_in_halves() {
        // kill (5), net_bind_service (10), mac_admin (33), checkpoint_restore (40).
        let set = 1 << 5 | 1 << 10 | 1 << 33 | 1 << 40;
        let data = cap_data(set);
        let half = |bits| CapData {
            effective: bits,
            permitted: bits,
            inheritable: bits,
        };
        assert_eq!(data, [half(0x420), half(0x102)]);
        assert_eq!(permitted_set(&data), set);
        assert_eq!(cap_data(0), [CapData::default(); 2]);
        assert_eq!(permitted_set(&cap_data(u64::MAX)), u64::MAX);
    }
}
