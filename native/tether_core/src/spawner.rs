//! The spawner: a small single-threaded process (the `tether_spawner` program) that clones every
//! child for the reactor, so that a spawn costs the same with 10,000 live children as with none
//! and a child's `max_rss` is its own program's.
//!
//! Why (measured, see docs/native-facts.md): a `clone` without `CLONE_FILES` copies the caller's
//! whole fd table, and the VM holds ≥ 3 fds per live child (+200 µs per spawn at 10k fds); a
//! vfork-style child runs in the caller's memory until `execve`, and the kernel folds that
//! memory's high-water mark into the child's rusage (`/bin/true` "used" the VM's 63 MB). The
//! spawner has a handful of fds and under 1 MB resident (linked statically, see below).
//!
//! The children stay the VM's: the spawner clones them with
//! `CLONE_PARENT | CLONE_VM | CLONE_VFORK | CLONE_PIDFD`, so their parent is the VM (the reactor
//! reaps them, `PR_SET_PDEATHSIG` follows the reactor thread that started the spawner), and
//! sends each child's pidfd back over a `SOCK_SEQPACKET` socket (`SCM_RIGHTS`). With `CLONE_VM`
//! the child's peak RSS until `execve` is the spawner's, so the spawner keeps that small: before
//! each request it drops its own text from its resident set (the request path faults back in
//! what it runs, from the page cache) and resets its peak (`/proc/self/clear_refs`). Idle, it is
//! then ~0.75 MB resident; `/bin/true` run through it reports its own ~1 MB (measured: 984–1,028
//! KiB against `time -v`'s 968–1,032). Without the shedding a child showed the spawner's
//! 1.2–1.3 MB; without `CLONE_VM` (a copy of the spawner's address space) each spawn cost
//! ~100 µs more.
//! One request carries everything the child needs, prepared by the reactor as for a direct
//! spawn (argv, the VM's environment, the exec candidates), the child's pipe ends and other
//! descriptors as `SCM_RIGHTS`, and the VM's state at request time that the spawner does not
//! share: its rlimits, nice and `oom_score_adj`. Working directory and umask need nothing: the
//! spawner is started with `CLONE_FS`, so it shares them with the VM at every moment.
//!
//! Failure modes: a spawner that dies is reaped and replaced at the next spawn. An in-flight
//! request learns the child's fate from a report pipe the child writes its pid (and, when it
//! fails before `execve`, the errno) into: no pid means no child, and the spawn is retried on a
//! new spawner; a pid means the child exists, and it is adopted (exec'd) or reaped (failed). A
//! spawner that cannot be started (program missing, start failures) falls back to a direct
//! spawn from the reactor thread, as do requests too large for one message.

use crate::command::Capabilities;
use crate::spawn::{self, ChildStack, SpawnError};
use crate::sys;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The largest request sent to the spawner (a `SOCK_SEQPACKET` message must fit the socket's
/// send buffer); bigger ones (huge argv or environment) are spawned directly.
pub const MAX_REQUEST: usize = 160 * 1024;
/// The most descriptors one request carries.
pub const MAX_FDS: usize = 8;
/// The rlimits that are sent, `0..RLIMITS` (RLIMIT_CPU … RLIMIT_RTTIME).
pub const RLIMITS: u32 = 16;
const MAGIC: u32 = 0x7e7e_0002;
/// After a failed start, the spawner is not tried again for this long (direct spawns meanwhile).
const START_BACKOFF: Duration = Duration::from_secs(1);

/// A stdio target of a request: a descriptor (an index into the request's fds) or one of these.
pub const TARGET_CLOSE: i32 = -1;
pub const TARGET_OTHER: i32 = -2;
pub const TARGET_FILE: i32 = -4;

/// A file the child opens for one of its fds 0–2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTarget {
    pub path: Vec<u8>,
    pub flags: i32,
    pub mode: u32,
}

/// One rlimit: resource, soft, hard.
pub type Limit = (u32, u64, u64);

/// Everything a child needs, as sent to the spawner.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// argv, envp and the exec candidates, each NUL-terminated, back to back.
    pub strings: Vec<u8>,
    pub argc: u32,
    pub envc: u32,
    pub cwd: Option<Vec<u8>>,
    /// Targets of fds 0–2: an index into the fds, or `TARGET_*`.
    pub stdio: [i32; 3],
    pub files: [Option<FileTarget>; 3],
    /// Index of the pty slave to make the controlling terminal, or -1.
    pub controlling_tty: i32,
    pub cgroup_procs: Option<Vec<u8>>,
    /// `setpgid(0, group)` unless negative.
    pub group: i32,
    pub pdeathsig: bool,
    /// The VM's pid, for the child's pdeathsig check.
    pub parent_pid: i32,
    /// The command's nice, else the VM's (reactor thread's) at request time.
    pub nice: Option<i32>,
    pub base_nice: i32,
    /// The command's rlimits, applied after `base_rlimits` (the VM's at request time).
    pub rlimits: Vec<Limit>,
    pub base_rlimits: Vec<Limit>,
    /// The VM's oom_score_adj at request time.
    pub oom_score_adj: Option<i32>,
    pub user: Option<(u32, u32)>,
    pub groups: Vec<u32>,
    pub capabilities: Option<Capabilities>,
    /// Index of the report pipe's write end, or -1.
    pub report: i32,
    /// How many descriptors come with the request.
    pub fd_count: u32,
}

/// What the spawner answers: the child's pid (0 when none was made) and the errno of the
/// failure (0: it exec'd). A pidfd comes with it when `pid > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub pid: i32,
    pub errno: i32,
}

/// Why a request or response could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    BadMagic,
    Invalid(&'static str),
    TrailingBytes,
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn opt_bytes(&mut self, v: &Option<Vec<u8>>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.bytes(v);
            }
            None => self.u8(0),
        }
    }
    fn opt_i32(&mut self, v: Option<i32>) {
        self.u8(v.is_some() as u8);
        self.i32(v.unwrap_or(0));
    }
    fn limits(&mut self, v: &[Limit]) {
        self.u32(v.len() as u32);
        for &(resource, soft, hard) in v {
            self.u32(resource);
            self.u64(soft);
            self.u64(hard);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("flag")),
        }
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_ne_bytes(b))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_ne_bytes(b))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    /// A path or other C string: no NUL inside.
    fn opt_cstr(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        if !self.bool()? {
            return Ok(None);
        }
        let v = self.bytes()?;
        if v.contains(&0) {
            return Err(DecodeError::Invalid("NUL in a string"));
        }
        Ok(Some(v))
    }
    fn opt_i32(&mut self) -> Result<Option<i32>, DecodeError> {
        let some = self.bool()?;
        let v = self.i32()?;
        Ok(some.then_some(v))
    }
    fn limits(&mut self) -> Result<Vec<Limit>, DecodeError> {
        let n = self.u32()? as usize;
        if n > 64 {
            return Err(DecodeError::Invalid("rlimit count"));
        }
        (0..n)
            .map(|_| Ok((self.u32()?, self.u64()?, self.u64()?)))
            .collect()
    }
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(self.strings.len() + 256));
        w.u32(MAGIC);
        w.bytes(&self.strings);
        w.u32(self.argc);
        w.u32(self.envc);
        w.opt_bytes(&self.cwd);
        for target in self.stdio {
            w.i32(target);
        }
        for file in &self.files {
            match file {
                Some(file) => {
                    w.u8(1);
                    w.bytes(&file.path);
                    w.i32(file.flags);
                    w.u32(file.mode);
                }
                None => w.u8(0),
            }
        }
        w.i32(self.controlling_tty);
        w.opt_bytes(&self.cgroup_procs);
        w.i32(self.group);
        w.u8(self.pdeathsig as u8);
        w.i32(self.parent_pid);
        w.opt_i32(self.nice);
        w.i32(self.base_nice);
        w.limits(&self.rlimits);
        w.limits(&self.base_rlimits);
        w.opt_i32(self.oom_score_adj);
        match self.user {
            Some((uid, gid)) => {
                w.u8(1);
                w.u32(uid);
                w.u32(gid);
            }
            None => w.u8(0),
        }
        w.u32(self.groups.len() as u32);
        for &g in &self.groups {
            w.u32(g);
        }
        match self.capabilities {
            None => w.u8(0),
            Some(Capabilities::Only(mask)) => {
                w.u8(1);
                w.u64(mask);
            }
            Some(Capabilities::All) => w.u8(2),
        }
        w.i32(self.report);
        w.u32(self.fd_count);
        w.0
    }

    /// Decodes and validates a request: every index names one of its `fd_count` descriptors,
    /// every string is NUL-terminated, there is a program and at least one exec candidate.
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader(bytes);
        if r.u32()? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let strings = r.bytes()?;
        let argc = r.u32()?;
        let envc = r.u32()?;
        let cwd = r.opt_cstr()?;
        let mut stdio = [0; 3];
        for target in &mut stdio {
            *target = r.i32()?;
        }
        let mut files: [Option<FileTarget>; 3] = [None, None, None];
        for file in &mut files {
            if r.bool()? {
                let path = r.bytes()?;
                if path.contains(&0) {
                    return Err(DecodeError::Invalid("NUL in a path"));
                }
                *file = Some(FileTarget {
                    path,
                    flags: r.i32()?,
                    mode: r.u32()?,
                });
            }
        }
        let controlling_tty = r.i32()?;
        let cgroup_procs = r.opt_cstr()?;
        let group = r.i32()?;
        let pdeathsig = r.bool()?;
        let parent_pid = r.i32()?;
        let nice = r.opt_i32()?;
        let base_nice = r.i32()?;
        let rlimits = r.limits()?;
        let base_rlimits = r.limits()?;
        let oom_score_adj = r.opt_i32()?;
        let user = if r.bool()? {
            Some((r.u32()?, r.u32()?))
        } else {
            None
        };
        let group_count = r.u32()? as usize;
        if group_count > 65536 {
            return Err(DecodeError::Invalid("group count"));
        }
        let groups = (0..group_count)
            .map(|_| r.u32())
            .collect::<Result<Vec<_>, _>>()?;
        let capabilities = match r.u8()? {
            0 => None,
            1 => Some(Capabilities::Only(r.u64()?)),
            2 => Some(Capabilities::All),
            _ => return Err(DecodeError::Invalid("capabilities")),
        };
        let report = r.i32()?;
        let fd_count = r.u32()?;
        if !r.0.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        let request = Request {
            strings,
            argc,
            envc,
            cwd,
            stdio,
            files,
            controlling_tty,
            cgroup_procs,
            group,
            pdeathsig,
            parent_pid,
            nice,
            base_nice,
            rlimits,
            base_rlimits,
            oom_score_adj,
            user,
            groups,
            capabilities,
            report,
            fd_count,
        };
        request.validate()?;
        Ok(request)
    }

    fn validate(&self) -> Result<(), DecodeError> {
        let fds = self.fd_count as i32;
        if self.fd_count as usize > MAX_FDS {
            return Err(DecodeError::Invalid("too many fds"));
        }
        let index = |i: i32| (0..fds).contains(&i);
        for (target, file) in self.stdio.iter().zip(&self.files) {
            let ok = match *target {
                TARGET_CLOSE | TARGET_OTHER => file.is_none(),
                TARGET_FILE => file.is_some(),
                i => index(i) && file.is_none(),
            };
            if !ok {
                return Err(DecodeError::Invalid("stdio target"));
            }
        }
        if self.controlling_tty != -1 && !index(self.controlling_tty) {
            return Err(DecodeError::Invalid("controlling tty"));
        }
        if self.report != -1 && !index(self.report) {
            return Err(DecodeError::Invalid("report fd"));
        }
        if self.strings.last().is_some_and(|&b| b != 0) {
            return Err(DecodeError::Invalid("unterminated string"));
        }
        let count = self.strings.iter().filter(|&&b| b == 0).count();
        let (argc, envc) = (self.argc as usize, self.envc as usize);
        // A program, and at least one candidate after argv and envp.
        if argc == 0 || argc.saturating_add(envc) >= count {
            return Err(DecodeError::Invalid("string counts"));
        }
        if self.strings.first() == Some(&0) {
            return Err(DecodeError::Invalid("empty program"));
        }
        Ok(())
    }
}

impl Response {
    pub fn encode(&self) -> [u8; 8] {
        let mut out = [0; 8];
        out[..4].copy_from_slice(&self.pid.to_ne_bytes());
        out[4..].copy_from_slice(&self.errno.to_ne_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader(bytes);
        let response = Response {
            pid: r.i32()?,
            errno: r.i32()?,
        };
        if !r.0.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        if response.pid < 0 || response.errno < 0 || (response.pid == 0 && response.errno == 0) {
            return Err(DecodeError::Invalid("response"));
        }
        Ok(response)
    }
}

/// What the report pipe told of a child whose spawner died mid-request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// No child was made: safe to retry.
    NoChild,
    /// The child exists and exec'd (or is about to exit after exec).
    Execed(i32),
    /// The child exists and failed before exec with this errno.
    Failed(i32, i32),
}

/// Decodes the report pipe's bytes: the child's pid, then its errno if it failed.
pub fn decode_report(bytes: &[u8]) -> Result<Report, DecodeError> {
    let mut r = Reader(bytes);
    match bytes.len() {
        0 => Ok(Report::NoChild),
        4 => Ok(Report::Execed(r.i32()?)),
        8 => Ok(Report::Failed(r.i32()?, r.i32()?)),
        _ => Err(DecodeError::Invalid("report")),
    }
}

// ── The reactor's side ───────────────────────────────────────────────────────────────────────

struct Running {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    socket: OwnedFd,
}

/// The reactor's handle on its spawner. Every call is made on the reactor thread.
pub(crate) struct Client {
    program: Option<Vec<u8>>,
    running: Option<Running>,
    /// Spawners that were let go and are not reaped yet (pid, pidfd).
    retired: Vec<(libc::pid_t, OwnedFd)>,
    /// No start is tried before this (after a failed one).
    retry_at: Option<Instant>,
    /// `/proc/self/oom_score_adj`, read at every request.
    oom: Option<OwnedFd>,
    /// The pidfd of a spawner started since the reactor last asked (to watch for its exit).
    pub started: Option<RawFd>,
}

impl Client {
    pub fn new() -> Client {
        // SAFETY: a NUL-terminated literal path.
        let fd = unsafe {
            libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        Client {
            program: None,
            running: None,
            retired: Vec::new(),
            retry_at: None,
            // SAFETY: a fresh descriptor owned by nobody else.
            oom: (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }),
            started: None,
        }
    }

    /// Uses `program` from now on (`None`: spawn directly). A running spawner for another
    /// program is told to exit (its socket closes).
    pub fn set_program(&mut self, program: Option<Vec<u8>>) {
        if program != self.program {
            self.lost();
            self.program = program;
            self.retry_at = None;
        }
    }

    pub fn pid(&self) -> Option<libc::pid_t> {
        self.running.as_ref().map(|r| r.pid)
    }

    /// A spawner's pidfd became readable: reap every spawner that exited.
    pub fn on_exit(&mut self) {
        if self
            .running
            .as_ref()
            .is_some_and(|r| sys::exit_state(r.pidfd.as_raw_fd()) != sys::ExitState::Running)
        {
            self.lost();
        }
        self.reap_retired();
    }

    /// The spawner is gone or unusable: close its socket (which ends it) and reap it once it
    /// has exited.
    fn lost(&mut self) {
        if let Some(running) = self.running.take() {
            drop(running.socket);
            self.retired.push((running.pid, running.pidfd));
        }
        self.reap_retired();
    }

    fn reap_retired(&mut self) {
        self.retired.retain(|(pid, pidfd)| {
            if sys::exit_state(pidfd.as_raw_fd()) == sys::ExitState::Running {
                return true;
            }
            let _ = sys::reap(*pid);
            false
        });
    }

    fn ensure(&mut self, stack: &mut ChildStack, dev_null: RawFd) -> bool {
        if self.running.is_some() {
            return true;
        }
        let Some(program) = self.program.clone() else {
            return false;
        };
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        match start(&program, stack, dev_null) {
            Ok(running) => {
                self.started = Some(running.pidfd.as_raw_fd());
                self.running = Some(running);
                self.retry_at = None;
                true
            }
            Err(error) => {
                eprintln!("tether: cannot start the spawner ({error:?}); spawning directly");
                self.retry_at = Some(Instant::now() + START_BACKOFF);
                false
            }
        }
    }

    fn oom_score_adj(&self) -> Option<i32> {
        let fd = self.oom.as_ref()?.as_raw_fd();
        let mut buf = [0u8; 16];
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return None;
        }
        std::str::from_utf8(&buf[..n as usize])
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Has the spawner clone the child of `request`, sending `fds` (the request's indices).
    /// `Ok(None)`: no spawner to use, spawn directly. `Ok(Some((pid, pidfd, errno)))`: the child
    /// was made (errno 0: it exec'd; else it has exited and is reaped here, pidfd `None`).
    pub fn spawn(
        &mut self,
        request: &mut Request,
        fds: &[RawFd],
        stack: &mut ChildStack,
        dev_null: RawFd,
    ) -> Result<Option<(libc::pid_t, Option<OwnedFd>, i32)>, SpawnError> {
        if self.program.is_none() || fds.len() + 1 > MAX_FDS {
            return Ok(None);
        }
        request.base_nice = current_nice();
        request.base_rlimits = current_rlimits();
        request.oom_score_adj = self.oom_score_adj();
        for _attempt in 0..2 {
            if !self.ensure(stack, dev_null) {
                return Ok(None);
            }
            let (report_read, report_write) = report_pipe()?;
            let mut all = fds.to_vec();
            request.report = all.len() as i32;
            all.push(report_write.as_raw_fd());
            request.fd_count = all.len() as u32;
            let bytes = request.encode();
            if bytes.len() > MAX_REQUEST {
                return Ok(None);
            }
            let socket = self.running.as_ref().map_or(-1, |r| r.socket.as_raw_fd());
            let sent = send_with_fds(socket, &bytes, &all);
            drop(report_write);
            let answer = match sent {
                Ok(()) => receive_response(socket),
                // A descriptor of ours is bad (a standard fd the VM closed) or the request is
                // too big: nothing was sent, and the spawner is fine. Spawn directly.
                Err(Errno::EBADF | Errno::EMSGSIZE | Errno::ENOBUFS) => return Ok(None),
                Err(errno) => Err(errno),
            };
            match answer {
                Ok(Ok((response, pidfd))) => return Ok(Some(finish(response, pidfd))),
                Ok(Err(_)) | Err(_) => {
                    // Dead, dying or broken: replace it; the report pipe tells what became of
                    // the child.
                    self.lost();
                    match decode_report(&read_to_end(report_read.as_raw_fd())) {
                        Ok(Report::NoChild) => continue,
                        Ok(Report::Execed(pid)) => {
                            // Ours (not reaped), so the pid cannot have been reused.
                            let pidfd = sys::pidfd_open(pid).map_err(SpawnError::Os)?;
                            return Ok(Some((pid, Some(pidfd), 0)));
                        }
                        Ok(Report::Failed(pid, errno)) => {
                            let _ = sys::reap(pid);
                            return Ok(Some((pid, None, errno)));
                        }
                        Err(_) => return Err(SpawnError::Internal),
                    }
                }
            }
        }
        // Two spawners died before making the child: spawn directly.
        Ok(None)
    }
}

/// A response with its pidfd: a failed child is reaped here.
fn finish(response: Response, pidfd: Option<OwnedFd>) -> (libc::pid_t, Option<OwnedFd>, i32) {
    if response.errno != 0 && response.pid > 0 {
        let _ = sys::reap(response.pid);
        return (response.pid, None, response.errno);
    }
    (response.pid, pidfd, response.errno)
}

/// Starts the spawner with `CLONE_FS` (it shares the VM's cwd and umask), its socket on stdin,
/// in the VM's process group and session (children that inherit a group get the VM's),
/// `PR_SET_PDEATHSIG` bound to this (the reactor) thread.
fn start(program: &[u8], stack: &mut ChildStack, dev_null: RawFd) -> Result<Running, SpawnError> {
    let (ours, theirs) = sys::seqpacket_pair()?;
    let mut command = crate::command::Command::new([program.to_vec()]);
    command.stdin = crate::command::Input::Fd(theirs.as_raw_fd());
    command.stdout = crate::command::Output::Null;
    command.stderr = crate::command::Output::Inherit;
    command.group = crate::command::Group::Inherit;
    command.kill_group = false;
    command.pipe_size = 0;
    let spawned = spawn::spawn_direct(&command, stack, dev_null, None, libc::CLONE_FS)?;
    Ok(Running {
        pid: spawned.pid,
        pidfd: spawned.pidfd,
        socket: ours,
    })
}

/// The reactor thread's nice (what a directly spawned child would start with).
fn current_nice() -> i32 {
    // SAFETY: getpriority has no memory arguments; for PRIO_PROCESS 0 it is this thread's.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

fn current_rlimits() -> Vec<Limit> {
    (0..RLIMITS)
        .filter_map(|resource| {
            // SAFETY: rlimit is plain data, filled by getrlimit.
            let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
            // SAFETY: a valid pointer to an rlimit.
            let ret = unsafe { libc::getrlimit(resource as _, &mut limit) };
            (ret == 0).then_some((resource, limit.rlim_cur, limit.rlim_max))
        })
        .collect()
}

/// `(read, write)`: a close-on-exec pipe the child reports into.
fn report_pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid array of two ints.
    sys::cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: two fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Everything until end of file (at most a few bytes here).
fn read_to_end(fd: RawFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return out,
            n if n > 0 => out.extend_from_slice(&buf[..n as usize]),
            _ if Errno::last() == Errno::EINTR => continue,
            _ => return out,
        }
        if out.len() > 64 {
            return out;
        }
    }
}

/// Room for a control message of up to [`MAX_FDS`] descriptors, aligned as cmsghdr wants.
#[repr(C, align(8))]
struct Control([u8; 64]);

/// Sends one message with `fds` as `SCM_RIGHTS` (blocking).
pub(crate) fn send_with_fds(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> Result<(), Errno> {
    if fds.len() > MAX_FDS {
        return Err(Errno::EINVAL);
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = Control([0; 64]);
    // SAFETY: msghdr is plain data; zeroed is a valid value.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    if !fds.is_empty() {
        let size = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let (space, len) = unsafe { (libc::CMSG_SPACE(size), libc::CMSG_LEN(size)) };
        message.msg_control = control.0.as_mut_ptr().cast();
        message.msg_controllen = space as usize;
        // SAFETY: the 64-byte buffer holds a cmsghdr and MAX_FDS ints; the header comes from
        // CMSG_FIRSTHDR over that buffer.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = len as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(header).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    loop {
        // SAFETY: `message` points to live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(socket, &message, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Receives one message into `buf` and its descriptors (close-on-exec). `Ok((0, _))`: end of
/// file. A message or control data that did not fit is `EMSGSIZE` (its fds are closed).
pub(crate) fn receive_with_fds(
    socket: RawFd,
    buf: &mut [u8],
) -> Result<(usize, Vec<OwnedFd>), Errno> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = Control([0; 64]);
    loop {
        // SAFETY: msghdr is plain data; zeroed is a valid value.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.0.as_mut_ptr().cast();
        message.msg_controllen = control.0.len();
        // SAFETY: `message` points to live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(socket, &mut message, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
        let mut fds = Vec::new();
        // SAFETY: the kernel filled `message`; the CMSG_* walk stays inside its control buffer.
        unsafe {
            let mut header = libc::CMSG_FIRSTHDR(&message);
            while !header.is_null() {
                if (*header).cmsg_level == libc::SOL_SOCKET
                    && (*header).cmsg_type == libc::SCM_RIGHTS
                {
                    let data = libc::CMSG_DATA(header).cast::<RawFd>();
                    let bytes = (*header).cmsg_len as usize - (data as usize - header as usize);
                    for i in 0..bytes / std::mem::size_of::<RawFd>() {
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                header = libc::CMSG_NXTHDR(&message, header);
            }
        }
        if message.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err(Errno::EMSGSIZE);
        }
        return Ok((n as usize, fds));
    }
}

/// The spawner's answer: `Err(errno)` if the socket failed, `Ok(Err(()))` at end of file or for
/// a malformed answer.
#[allow(clippy::type_complexity)]
fn receive_response(socket: RawFd) -> Result<Result<(Response, Option<OwnedFd>), ()>, Errno> {
    let mut buf = [0u8; 16];
    let (n, mut fds) = receive_with_fds(socket, &mut buf)?;
    if n == 0 {
        return Ok(Err(()));
    }
    let Ok(response) = Response::decode(&buf[..n]) else {
        return Ok(Err(()));
    };
    let pidfd = fds.pop();
    if response.pid > 0 && response.errno == 0 && pidfd.is_none() {
        return Ok(Err(()));
    }
    Ok(Ok((response, pidfd)))
}

// ── The spawner's side ───────────────────────────────────────────────────────────────────────

/// What the spawner knows of itself, read once: children must not inherit it where it differs
/// from the VM's.
pub struct Own {
    pub oom_score_adj: Option<i32>,
    /// Where a child stores the errno of a failure: a `MAP_SHARED` page, so that it is seen
    /// here although the child runs in a copy of our memory.
    pub error: *const std::sync::atomic::AtomicI32,
}

/// The spawner program's main loop over the socket on `socket`: one request, one child, one
/// response. Returns (to exit) when the reactor closes its end.
pub fn serve(socket: RawFd) -> i32 {
    // The spawner is in the VM's process group: a terminal's ^C, ^\, ^Z or hangup is for the
    // VM, not for it (it exits when the VM's end closes). Children reset every signal.
    for signal in [
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGHUP,
        libc::SIGPIPE,
    ] {
        // SAFETY: SIG_IGN is a valid disposition for these signals.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    // The socket moves off fd 0 (to a close-on-exec fd), and 0 becomes /dev/null.
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd has no memory effects.
    let socket = unsafe { libc::fcntl(socket, libc::F_DUPFD_CLOEXEC, 3) };
    if socket < 0 {
        return 1;
    }
    // SAFETY: plain syscalls on descriptors we own.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
    }
    // SAFETY: an anonymous shared mapping of one page, never unmapped.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return 1;
    }
    let own = Own {
        oom_score_adj: std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok()),
        // A zeroed page is a valid AtomicI32 of 0, suitably aligned.
        error: page.cast(),
    };
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut stack = ChildStack::default();
    // Before each request our text leaves the resident set (the request path faults back in
    // what it runs) and the peak is reset, so a child sees only that small working set.
    let text = own_text();
    loop {
        drop_text(&text);
        reset_peak_rss();
        let (n, fds) = match receive_with_fds(socket, &mut buf) {
            Ok((0, _)) => return 0,
            Ok(received) => received,
            Err(Errno::EMSGSIZE) => {
                let response = Response {
                    pid: 0,
                    errno: libc::EMSGSIZE,
                };
                if send_with_fds(socket, &response.encode(), &[]).is_err() {
                    return 1;
                }
                continue;
            }
            Err(_) => return 1,
        };
        let (response, pidfd) = match Request::decode(&buf[..n]) {
            Ok(request) if request.fd_count as usize == fds.len() => {
                spawn::clone_request(&request, &fds, &own, &mut stack)
            }
            _ => (
                Response {
                    pid: 0,
                    errno: libc::EINVAL,
                },
                None,
            ),
        };
        drop(fds);
        let sent = match &pidfd {
            Some(pidfd) => send_with_fds(socket, &response.encode(), &[pidfd.as_raw_fd()]),
            None => send_with_fds(socket, &response.encode(), &[]),
        };
        if sent.is_err() {
            return 1;
        }
    }
}

/// The executable mappings of our own program, `(start, length)`: what [`drop_text`] drops.
fn own_text() -> Vec<(usize, usize)> {
    let exe = std::fs::read_link("/proc/self/exe").ok();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?;
            if perms != "r-xp" || exe.as_deref() != Some(std::path::Path::new(path)) {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let a = usize::from_str_radix(a, 16).ok()?;
            let b = usize::from_str_radix(b, 16).ok()?;
            Some((a, b - a))
        })
        .collect()
}

/// Drops our text from our resident set: what runs again (the request loop, the clone) faults
/// back in from the page cache.
fn drop_text(text: &[(usize, usize)]) {
    for &(start, len) in text {
        // SAFETY: an executable private file mapping is never written (no text relocations in
        // a PIE): dropping its pages loses nothing, they are read again from the file.
        unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    }
}

/// Resets our peak RSS to the current one: children share our memory until `execve`, and the
/// kernel folds that peak into their `max_rss` there. Opened each time: a descriptor kept
/// open would be copied into every clone's fd table.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", b"5");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Request {
        Request {
            strings: b"sh\0-c\0true\0A=1\0PATH=/bin\0/bin/sh\0".to_vec(),
            argc: 3,
            envc: 2,
            cwd: Some(b"/tmp".to_vec()),
            stdio: [0, TARGET_FILE, TARGET_OTHER],
            files: [
                None,
                Some(FileTarget {
                    path: b"out.log".to_vec(),
                    flags: libc::O_WRONLY | libc::O_CREAT,
                    mode: 0o644,
                }),
                None,
            ],
            controlling_tty: -1,
            cgroup_procs: Some(b"/sys/fs/cgroup/x/cgroup.procs".to_vec()),
            group: 0,
            pdeathsig: true,
            parent_pid: 1234,
            nice: Some(5),
            base_nice: 0,
            rlimits: vec![(7, 64, 128)],
            base_rlimits: vec![(0, u64::MAX, u64::MAX), (7, 1024, 4096)],
            oom_score_adj: Some(200),
            user: Some((65534, 65534)),
            groups: vec![65534, 100],
            capabilities: Some(Capabilities::Only(1 << 5 | 1 << 10)),
            report: 1,
            fd_count: 2,
        }
    }

    #[test]
    fn a_request_round_trips() {
        let request = sample();
        assert_eq!(Request::decode(&request.encode()), Ok(request));
        let minimal = Request {
            strings: b"/bin/true\0/bin/true\0".to_vec(),
            argc: 1,
            envc: 0,
            stdio: [TARGET_CLOSE; 3],
            controlling_tty: -1,
            report: -1,
            ..Request::default()
        };
        assert_eq!(Request::decode(&minimal.encode()), Ok(minimal.clone()));
        let all = Request {
            capabilities: Some(Capabilities::All),
            ..minimal
        };
        assert_eq!(Request::decode(&all.encode()), Ok(all));
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Request::decode(&bytes[..len]).is_err(), "length {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Request::decode(&longer), Err(DecodeError::TrailingBytes));
        let mut bad = bytes;
        bad[0] ^= 1;
        assert_eq!(Request::decode(&bad), Err(DecodeError::BadMagic));
    }

    #[test]
    fn indices_and_strings_are_validated() {
        let refused = |change: fn(&mut Request)| {
            let mut request = sample();
            change(&mut request);
            Request::decode(&request.encode()).is_err()
        };
        assert!(refused(|r| r.stdio[0] = 2)); // only 2 fds
        assert!(refused(|r| r.stdio[0] = -3)); // INHERIT is never sent
        assert!(refused(|r| r.stdio[1] = 0)); // a file without FILE
        assert!(refused(|r| r.files[2] = r.files[1].clone())); // OTHER with a file
        assert!(refused(|r| r.report = 5));
        assert!(refused(|r| r.controlling_tty = 2));
        assert!(refused(|r| r.fd_count = 9));
        assert!(refused(|r| r.argc = 0));
        assert!(refused(|r| r.envc = 3)); // no candidate left
        assert!(refused(|r| r.strings.pop().map(drop).unwrap()));
        assert!(refused(|r| r.strings.insert(0, 0)));
        assert!(refused(|r| r.cwd = Some(b"a\0b".to_vec())));
        assert!(refused(|r| r.cgroup_procs = Some(b"\0".to_vec())));
        assert!(!refused(|r| r.controlling_tty = 0));
    }

    #[test]
    fn responses_round_trip_and_are_checked() {
        for response in [
            Response { pid: 42, errno: 0 },
            Response {
                pid: 42,
                errno: libc::ENOENT,
            },
            Response {
                pid: 0,
                errno: libc::EINVAL,
            },
        ] {
            assert_eq!(Response::decode(&response.encode()), Ok(response));
        }
        assert!(Response::decode(&Response { pid: 0, errno: 0 }.encode()).is_err());
        assert!(Response::decode(&Response { pid: -1, errno: 0 }.encode()).is_err());
        assert!(Response::decode(&[0; 7]).is_err());
        assert!(Response::decode(&[0; 9]).is_err());
    }

    #[test]
    fn reports_tell_whether_a_child_exists() {
        assert_eq!(decode_report(&[]), Ok(Report::NoChild));
        assert_eq!(decode_report(&77i32.to_ne_bytes()), Ok(Report::Execed(77)));
        let mut failed = 77i32.to_ne_bytes().to_vec();
        failed.extend_from_slice(&2i32.to_ne_bytes());
        assert_eq!(decode_report(&failed), Ok(Report::Failed(77, 2)));
        assert!(decode_report(&[1, 2, 3]).is_err());
    }

    #[test]
    fn fds_travel_with_a_message() {
        let (a, b) = sys::seqpacket_pair().unwrap();
        let (read, write) = report_pipe().unwrap();
        send_with_fds(a.as_raw_fd(), b"hello", &[write.as_raw_fd()]).unwrap();
        drop(write);
        let mut buf = [0u8; 16];
        let (n, fds) = receive_with_fds(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        // SAFETY: F_GETFD on a valid fd.
        let flags = unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        sys::write(fds[0].as_raw_fd(), b"x").unwrap();
        drop(fds);
        assert_eq!(read_to_end(read.as_raw_fd()), b"x");
        drop(a);
        assert_eq!(receive_with_fds(b.as_raw_fd(), &mut buf).unwrap().0, 0);
    }

    #[test]
    fn our_text_can_be_dropped_and_our_peak_reset() {
        let status = |key: &str| -> u64 {
            let text = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = text.lines().find(|l| l.starts_with(key)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        let text = own_text();
        assert!(
            !text.is_empty(),
            "the test binary has an executable mapping"
        );
        // Raise the peak well above the current size, then shed.
        let big = vec![1u8; 64 << 20];
        assert_eq!(big.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
        drop(big);
        let peak = status("VmHWM:");
        drop_text(&text);
        reset_peak_rss();
        // Still running (the text came back), with a peak near the current size.
        assert!(status("VmHWM:") < peak - (32 << 10), "the peak was reset");
    }
}
