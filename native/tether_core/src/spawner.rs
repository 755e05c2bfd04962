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
//! the child's peak RSS until `execve` is the spawner's, so the spawner keeps that small: it
//! drops its own text from its resident set whenever that set grew past what one request
//! needs (the request path faults back in what it runs, from the page cache, once; dropping
//! before every request cost each spawn 30–40 µs of faults), and it resets its peak
//! (`/proc/self/clear_refs`) before each request. Idle, it is then ~0.75 MB resident;
//! `/bin/true` run through it reports its own ~1 MB (measured: 984–1,028 KiB against
//! `time -v`'s 968–1,032). Without the shedding a child showed the spawner's 1.2–1.3 MB;
//! without `CLONE_VM` (a copy of the spawner's address space) each spawn cost ~100 µs more.
//! Its children reset only the signals whose disposition the spawner changed (the terminal's,
//! SIGPIPE, the runtime's handlers), not all 64: the rest are already the default.
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

use crate::spawn::{self, ChildStack, SpawnError};
use crate::spawn::{
    decode_report, Limit, Own, Report, Request, Response, MAX_FDS, MAX_REQUEST, RLIMITS,
};
use crate::sys::{self, receive_with_fds, send_with_fds};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// After a failed start, the spawner is not tried again for this long (direct spawns meanwhile).
const START_BACKOFF: Duration = Duration::from_secs(1);

/// While a request is pending, whether the spawner was stopped is checked this often (ms).
const STOPPED_CHECK_MS: libc::c_int = 200;

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
            // A stopped spawner never reads the end of file: it would stay, stopped, until the
            // VM exits. It is ours and has nothing left to do (a child it was cloning holds the
            // memory it shares), so it is killed; the report pipe tells what became of a child.
            let _ = crate::guard::send(
                crate::guard::Target::Process {
                    pid: running.pid,
                    pidfd: running.pidfd.as_raw_fd(),
                },
                libc::SIGKILL,
            );
            self.retired.push((running.pid, running.pidfd));
        }
        self.reap_retired();
    }

    /// The spawner's answer to the request just sent. A spawner that is stopped (SIGSTOP, a
    /// debugger) would hold the reactor thread, and with it every child's output and exit:
    /// the wait is cut into slices, and after each one a stopped spawner counts as lost. A
    /// running one is waited for (a child being cloned may take its time before `execve`, as
    /// it would in a direct spawn).
    #[allow(clippy::type_complexity)]
    fn await_response(
        &self,
        socket: RawFd,
    ) -> Result<Result<(Response, Option<OwnedFd>), ()>, Errno> {
        let pid = self.running.as_ref().map_or(0, |r| r.pid);
        loop {
            let mut poll = libc::pollfd {
                fd: socket,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, STOPPED_CHECK_MS) };
            if ready != 0 {
                // Readable, closed, or a poll error: the receive tells which.
                return receive_response(socket);
            }
            // Our unreaped child: its pid cannot have been reused.
            if matches!(sys::proc_state(pid), Some(b'T' | b't')) {
                return Ok(Err(()));
            }
        }
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
}

impl spawn::Delegate for Client {
    fn spawn(
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
                Ok(()) => self.await_response(socket),
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

/// The spawner program's main loop over the socket on `socket`: one request, one child, one
/// response. Returns (to exit) when the reactor closes its end.
pub fn serve(socket: RawFd) -> i32 {
    // The spawner is in the VM's process group: a terminal's ^C, ^\, ^Z or hangup is for the
    // VM, not for it (it exits when the VM's end closes). Children reset these, and every
    // other signal whose disposition is not the default here (`non_default_signals`).
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
        reset_signals: non_default_signals(),
        // A zeroed page is a valid AtomicI32 of 0, suitably aligned.
        error: page.cast(),
    };
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut stack = ChildStack::default();
    // Our text leaves the resident set (the request path faults back in what it runs) whenever
    // we have grown past what one request needs, and the peak is reset before each request, so
    // a child sees only that small working set. Dropping before every request cost each spawn
    // 30–40 µs of faults; the request path's own pages stay resident from one to the next.
    let text = own_text();
    let mut ceiling: Option<usize> = None;
    loop {
        let after_drop = match (ceiling, resident_pages()) {
            (Some(ceiling), Some(now)) if now <= ceiling => false,
            _ => {
                drop_text(&text);
                true
            }
        };
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
        if after_drop {
            ceiling = resident_pages().map(|pages| pages + RESIDENT_SLACK_PAGES);
        }
    }
}

/// Growth of our resident set past what a request after a drop left that triggers the next
/// drop (a big request's buffers, a rare path).
const RESIDENT_SLACK_PAGES: usize = 8;

/// Our resident set in pages (`/proc/self/statm`).
fn resident_pages() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// Our signals whose disposition is not the default (bit `n - 1` for signal `n`): the ones we
/// ignore, and the handlers the runtime installed. A child resets only these.
fn non_default_signals() -> u64 {
    let mut mask = 0u64;
    for signal in 1..=crate::signal::MAX {
        // The kernel's struct sigaction: handler, flags, restorer, mask.
        let mut old = [0u64; 4];
        // SAFETY: a query (no new action) into a buffer of the kernel's sigaction size.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                std::ptr::null::<u64>(),
                old.as_mut_ptr(),
                8,
            )
        };
        // A failed query (32 and 33 may be refused) counts as not the default: reset it.
        if ret != 0 || old[0] != libc::SIG_DFL as u64 {
            mask |= 1 << (signal - 1);
        }
    }
    mask
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
