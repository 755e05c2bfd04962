//! The run spec: a `%Tether.Spec{}`, as `Tether.Options` builds it (already validated, typed
//! values only). Every field of the [`Command`] is decoded from it as given: the defaults are
//! written once, in `lib/tether/spec.ex`, and `Command::new`'s are not used here (the struct
//! literal in [`Spec::into_command`] makes a field the spec does not carry a compile error).
//! The struct's BEAM-side fields (`handlers`, `down_to`, `link`, `sync`, `timeout`, `node`) are
//! not read.

use crate::atoms;
use rustler::{Atom, Binary, LocalPid, NifResult, NifStruct, Term};
use std::time::Duration;
use tether_core::command::{rlimit_resource, Capabilities};
use tether_core::{Command, EnvChange, Group, Input, Output, Pty, Rlimit, StopAction, StopStep};

#[derive(NifStruct)]
#[module = "Tether.Spec"]
pub struct Spec<'a> {
    /// Lists are decoded by [`proper_list`]: rustler's `Vec` decoder panics on improper lists.
    argv: Term<'a>,
    executable: Option<Binary<'a>>,
    env: Term<'a>,
    cd: Option<Binary<'a>>,
    /// `:null | :pipe | :close | {:file, path}`
    stdin: Term<'a>,
    /// `:null | :close | :other | {:pipe, pid | :process} | {:file, path, append, mode}`
    stdout: Term<'a>,
    stderr: Term<'a>,
    /// `nil | {rows, cols, echo}`
    pty: Option<(u16, u16, bool)>,
    /// `:new | :inherit | pgid`
    group: Term<'a>,
    kill_group: bool,
    /// `[{:signal, number, wait_ms} | {:command, binary, wait_ms}]`
    stop: Term<'a>,
    detach: bool,
    nice: Option<i32>,
    user: Option<Binary<'a>>,
    /// `nil | :all | mask` (bit n: capability n)
    capabilities: Term<'a>,
    /// `[{name, soft, hard}]`
    rlimits: Term<'a>,
    idle_timeout_ms: Option<u64>,
    max_output: Option<u64>,
    monitor: Option<LocalPid>,
    /// Who kept background jobs live for, when not the owner (`{:background_jobs, {:keep, pid}}`).
    background_owner: Option<LocalPid>,
    /// An exit code reported as `:normal`, besides 0.
    success_exit_code: i32,
    /// Requested pipe size (0: the kernel's default).
    pipe_size: usize,
    /// Flow control: messages each stream may send before going passive (nil: no limit).
    stdout_credit: Option<u64>,
    stderr_credit: Option<u64>,
    /// After the exit, leave its background jobs running while the owner lives.
    keep_background: bool,
    /// `[{file, value}]`: cgroup interface files for the child's cgroup.
    cgroup_limits: Term<'a>,
}

/// Where one child's events go.
pub struct Routes {
    pub process: LocalPid,
    pub stdout: Option<LocalPid>,
    pub stderr: Option<LocalPid>,
    pub monitor: Option<LocalPid>,
    pub success_exit_code: i32,
    /// Kept background jobs live while this process does (`None`: the owner).
    pub background_owner: Option<LocalPid>,
}

/// The elements of a proper list, each decoded; `BadArg` for anything else (never a panic).
pub fn proper_list<'a, T: rustler::Decoder<'a>>(mut term: Term<'a>) -> NifResult<Vec<T>> {
    let mut items = Vec::new();
    while !term.is_empty_list() {
        let (head, tail) = term.list_get_cell()?;
        items.push(head.decode()?);
        term = tail;
    }
    Ok(items)
}

fn is_atom(term: Term, atom: Atom) -> bool {
    term.decode::<Atom>().ok() == Some(atom)
}

fn env_change(term: Term) -> NifResult<EnvChange> {
    if is_atom(term, atoms::clear()) {
        return Ok(EnvChange::Clear);
    }
    let (name, value): (Binary, Option<Binary>) = term.decode()?;
    Ok(match value {
        Some(value) => EnvChange::Set(name.to_vec(), value.to_vec()),
        None => EnvChange::Unset(name.to_vec()),
    })
}

fn input(term: Term) -> NifResult<Input> {
    if is_atom(term, atoms::null()) {
        Ok(Input::Null)
    } else if is_atom(term, atoms::pipe()) {
        Ok(Input::Pipe)
    } else if is_atom(term, atoms::close()) {
        Ok(Input::Close)
    } else {
        let (_, path): (Atom, Binary) = term.decode()?;
        Ok(Input::File(path.to_vec()))
    }
}

/// The OS side of an output and, for a pipe, where its data goes.
fn output(term: Term, process: LocalPid) -> NifResult<(Output, Option<LocalPid>)> {
    if is_atom(term, atoms::null()) {
        return Ok((Output::Null, None));
    }
    if is_atom(term, atoms::close()) {
        return Ok((Output::Close, None));
    }
    if is_atom(term, atoms::other()) {
        return Ok((Output::Other, None));
    }
    if is_atom(term, atoms::inherit()) {
        return Ok((Output::Inherit, None));
    }
    if let Ok((tag, to)) = term.decode::<(Atom, Term)>() {
        if tag == atoms::pipe() {
            let to = if is_atom(to, atoms::process()) {
                process
            } else {
                to.decode()?
            };
            return Ok((Output::Pipe, Some(to)));
        }
    }
    let (_, path, append, mode): (Atom, Binary, bool, u32) = term.decode()?;
    let path = path.to_vec();
    Ok((Output::File { path, append, mode }, None))
}

fn group(term: Term) -> NifResult<Group> {
    if is_atom(term, atoms::new()) {
        Ok(Group::New)
    } else if is_atom(term, atoms::inherit()) {
        Ok(Group::Inherit)
    } else {
        Ok(Group::Join(term.decode()?))
    }
}

fn stop_step(term: Term) -> NifResult<StopStep> {
    let (kind, what, wait_ms): (Atom, Term, u64) = term.decode()?;
    let action = if kind == atoms::signal() {
        StopAction::Signal(what.decode()?)
    } else {
        StopAction::Command(what.decode::<Binary>()?.to_vec())
    };
    Ok(StopStep {
        action,
        wait: Duration::from_millis(wait_ms),
    })
}

fn capabilities(term: Term) -> NifResult<Option<Capabilities>> {
    if is_atom(term, atoms::nil()) {
        Ok(None)
    } else if is_atom(term, atoms::all()) {
        Ok(Some(Capabilities::All))
    } else {
        Ok(Some(Capabilities::Only(term.decode()?)))
    }
}

fn rlimit(term: Term) -> NifResult<Rlimit> {
    let (name, soft, hard): (String, u64, u64) = term.decode()?;
    let resource = rlimit_resource(&name).ok_or(rustler::Error::BadArg)?;
    Ok(Rlimit {
        resource,
        soft,
        hard,
    })
}

impl Spec<'_> {
    pub fn into_command(self, process: LocalPid) -> NifResult<(Command, Routes)> {
        let argv: Vec<Binary> = proper_list(self.argv)?;
        let env: Vec<Term> = proper_list(self.env)?;
        let stop: Vec<Term> = proper_list(self.stop)?;
        let rlimits: Vec<Term> = proper_list(self.rlimits)?;
        let cgroup_limits: Vec<(String, String)> = proper_list(self.cgroup_limits)?;
        let (stdout, stdout_to) = output(self.stdout, process)?;
        let (stderr, stderr_to) = output(self.stderr, process)?;
        let command = Command {
            argv: argv.iter().map(|a| a.to_vec()).collect(),
            executable: self.executable.map(|e| e.to_vec()),
            env: env.into_iter().map(env_change).collect::<Result<_, _>>()?,
            cwd: self.cd.map(|d| d.to_vec()),
            stdin: input(self.stdin)?,
            stdout,
            stderr,
            pty: self.pty.map(|(rows, cols, echo)| Pty { rows, cols, echo }),
            group: group(self.group)?,
            kill_group: self.kill_group,
            stop: stop.into_iter().map(stop_step).collect::<Result<_, _>>()?,
            detach: self.detach,
            pipe_size: self.pipe_size,
            nice: self.nice,
            user: self.user.map(|u| u.to_vec()),
            capabilities: capabilities(self.capabilities)?,
            rlimits: rlimits.into_iter().map(rlimit).collect::<Result<_, _>>()?,
            keep_background: self.keep_background,
            cgroup_limits,
            idle_timeout: self.idle_timeout_ms.map(Duration::from_millis),
            max_output: self.max_output,
            stdout_credit: self.stdout_credit,
            stderr_credit: self.stderr_credit,
        };
        let routes = Routes {
            process,
            stdout: stdout_to,
            // With a pty both streams arrive on the master, reported as stdout.
            stderr: stderr_to,
            monitor: self.monitor,
            success_exit_code: self.success_exit_code,
            background_owner: self.background_owner,
        };
        Ok((command, routes))
    }
}
