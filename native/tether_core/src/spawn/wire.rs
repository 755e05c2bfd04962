//! The spawner's wire format: a request (everything a child needs; its descriptors travel
//! beside it as `SCM_RIGHTS`), a response, and the report a child writes. Decoding checks
//! every length and index: a bad message is refused, never trusted.

use crate::command::Capabilities;

/// The largest request sent to the spawner (a `SOCK_SEQPACKET` message must fit the socket's
/// send buffer); bigger ones (huge argv or environment) are spawned directly.
pub const MAX_REQUEST: usize = 160 * 1024;

/// The most descriptors one request carries (what one message can).
pub use crate::sys::MAX_FDS;

/// The rlimits that are sent, `0..RLIMITS` (RLIMIT_CPU … RLIMIT_RTTIME).
pub const RLIMITS: u32 = 16;

pub(super) const MAGIC: u32 = 0x7e7e_0003;

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
    /// Index of the cgroup's directory, to clone the child into it, or -1.
    pub cgroup_dir: i32,
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

pub(super) struct Writer(Vec<u8>);

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

pub(super) struct Reader<'a>(&'a [u8]);

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
        w.i32(self.cgroup_dir);
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
        let cgroup_dir = r.i32()?;
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
            cgroup_dir,
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
        // A directory without the file to fall back on would leave the child outside.
        if self.cgroup_dir != -1 && (!index(self.cgroup_dir) || self.cgroup_procs.is_none()) {
            return Err(DecodeError::Invalid("cgroup dir"));
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

/// What the spawner knows of itself, read once: children must not inherit it where it differs
/// from the VM's.
pub struct Own {
    pub oom_score_adj: Option<i32>,
    /// Our signals whose disposition is not the default (bit `n - 1` for signal `n`): all a
    /// child has to reset.
    pub reset_signals: u64,
    /// Where a child stores the errno of a failure: a `MAP_SHARED` page, so that it is seen
    /// here although the child runs in a copy of our memory.
    pub error: *const std::sync::atomic::AtomicI32,
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
            cgroup_dir: 1,
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
            cgroup_dir: -1,
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
        assert!(refused(|r| r.cgroup_dir = 2));
        assert!(refused(|r| r.cgroup_procs = None)); // a directory and nothing to fall back on
        assert!(!refused(|r| r.cgroup_dir = -1));
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
}
