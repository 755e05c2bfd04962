//! Both sides of a spawn through the spawner: the reactor's request for a child, and the
//! spawner's clone of it.

use super::*;
use crate::command::Command;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;

/// The spawner's request for a child, and the descriptors it carries (the request's indices).
pub(super) fn request_of(
    command: &Command,
    prepared: &Prepared,
    stdio: &Stdio,
    cgroup: Option<CgroupTarget>,
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
        cgroup_procs: cgroup.map(|c| c.procs.to_bytes().to_vec()),
        cgroup_dir: match cgroup {
            Some(c) if c.dir >= 0 => index(&mut fds, c.dir),
            _ => -1,
        },
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
    let mut context = ChildContext {
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
        reset_signals: own.reset_signals,
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
    // `raw(-1)` is -1: no directory, the child joins by writing to `cgroup.procs`.
    match clone_child(&mut context, stack, flags, raw(request.cgroup_dir)) {
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
