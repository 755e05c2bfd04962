//! Everything a child needs, prepared before the clone (the child may not allocate): argv,
//! the environment, the `PATH` candidates of `execvp`, the working directory, and the user.

use super::*;
use crate::command::{Command, EnvChange};
use nix::errno::Errno;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

/// argv, envp and the exec candidates as C arrays, owned here for the duration of the spawn.
pub(super) struct Prepared {
    pub(super) _strings: Strings,
    pub(super) candidates: Vec<*const libc::c_char>,
    pub(super) argv: Vec<*const libc::c_char>,
    pub(super) envp: Vec<*const libc::c_char>,
    pub(super) cwd: Option<CString>,
}

pub(super) fn cstring(bytes: &[u8]) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError::InvalidCommand)
}

/// NUL-terminated strings packed in one allocation: a spawn's argv, envp and exec candidates
/// cost a few allocations, not one per string.
#[derive(Default)]
pub(super) struct Strings {
    pub(super) bytes: Vec<u8>,
    pub(super) starts: Vec<usize>,
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
pub(super) fn own_environment(strings: &mut Strings) -> Result<(), SpawnError> {
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
pub(super) fn candidates(program: &[u8], path: Option<Vec<u8>>) -> Vec<Vec<u8>> {
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

pub(super) fn prepare(command: &Command, user: Option<&User>) -> Result<Prepared, SpawnError> {
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
pub(super) unsafe fn passwd_field(field: *const libc::c_char) -> Vec<u8> {
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
pub(super) fn lookup_user(name: &[u8]) -> Result<User, SpawnError> {
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
}
