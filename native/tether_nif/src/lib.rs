//! The NIF of Tether: decode → call `tether_core` → encode. No process logic lives here.
//!
//! Every NIF returns at once (it queues work for the reactor, reads the registry under a short
//! lock, or makes one non-blocking write of at most 64 KiB to a child's stdin), so all run on
//! normal schedulers. Events reach the BEAM from the reactor thread through
//! [`listener::BeamListener`].

mod atoms;
mod bytes;
mod handle;
mod listener;
mod spec;

use handle::Handle;
use listener::BeamListener;
use rustler::{Atom, Encoder, Env, LocalPid, ResourceArc, Term};
use std::sync::{Arc, OnceLock};
use tether_core::{signal, Reactor, State, WriteError};

pub(crate) static REACTOR: OnceLock<Reactor> = OnceLock::new();

fn reactor() -> &'static Reactor {
    REACTOR.get().expect("the reactor starts in load")
}

fn load(_env: Env, _info: Term) -> bool {
    if REACTOR.get().is_some() {
        return true;
    }
    match Reactor::start(tether_core::Options::default()) {
        Ok(reactor) => REACTOR.set(reactor).is_ok(),
        Err(_) => false,
    }
}

/// Queues a spawn. The outcome, `{:ok, os_pid} | {:error, reason}`, reaches the owner as
/// `{:tether_spawned, reply_ref, outcome}` and `process` as `{:tether_spawned, outcome}`, straight
/// from the event loop. `process` keeps the returned handle: dropping it stops the OS process.
/// The owner is monitored: when it dies, the OS process is stopped.
#[rustler::nif]
fn start<'a>(
    env: Env<'a>,
    spec: Term<'a>,
    owner: LocalPid,
    process: LocalPid,
    reply_ref: Term<'a>,
) -> rustler::NifResult<ResourceArc<Handle>> {
    start_or_adopt(env, None, spec, (owner, reply_ref), process)
}

/// Like `start`, for a process started elsewhere (`Tether.manage/2`).
#[rustler::nif]
fn adopt<'a>(
    env: Env<'a>,
    os_pid: u32,
    spec: Term<'a>,
    owner: LocalPid,
    process: LocalPid,
    reply_ref: Term<'a>,
) -> rustler::NifResult<ResourceArc<Handle>> {
    let pid = i32::try_from(os_pid).map_err(|_| rustler::Error::BadArg)?;
    start_or_adopt(env, Some(pid), spec, (owner, reply_ref), process)
}

fn start_or_adopt<'a>(
    env: Env<'a>,
    adopt: Option<i32>,
    spec: Term<'a>,
    (owner, reply_ref): (LocalPid, Term<'a>),
    process: LocalPid,
) -> rustler::NifResult<ResourceArc<Handle>> {
    let spec: spec::Spec = spec.decode().map_err(|_| rustler::Error::BadArg)?;
    let (command, routes) = spec.into_command(process)?;
    let detach = command.detach;
    let reply = listener::Reply::new(owner, reply_ref);
    let listener = Box::new(BeamListener::new(routes, reply, owner));
    let id = match adopt {
        None => reactor().spawn(command, listener, Arc::new(process)),
        Some(pid) => reactor().adopt(pid, command, listener, Arc::new(process)),
    };
    let handle = ResourceArc::new(Handle {
        id,
        detach,
        reactor: reactor().clone(),
    });
    if !detach && handle.monitor(Some(env), &owner).is_none() {
        // The owner is already gone: stop the process as soon as it exists.
        reactor().stop(id);
    }
    Ok(handle)
}

fn no_process(env: Env) -> Term {
    (atoms::error(), atoms::no_process()).encode(env)
}

fn ok_or_no_process<T: Encoder>(env: Env, result: Result<T, tether_core::NoProcess>) -> Term {
    match result {
        Ok(value) => value.encode(env),
        Err(_) => no_process(env),
    }
}

#[rustler::nif]
fn stop(env: Env, os_pid: u32) -> Term {
    let result = reactor().stop_os_pid(os_pid).map(|()| atoms::ok());
    ok_or_no_process(env, result)
}

#[rustler::nif]
fn kill(env: Env, os_pid: u32, signal: i32) -> rustler::NifResult<Term> {
    if !signal::is_valid(signal) {
        return Err(rustler::Error::BadArg);
    }
    Ok(match reactor().kill(os_pid, signal) {
        Ok(()) => atoms::ok().encode(env),
        Err(tether_core::KillError::NoProcess) => no_process(env),
        Err(tether_core::KillError::Os(errno)) => {
            let reason = tether_core::SpawnError::Os(errno).name();
            let reason = Atom::from_str(env, &reason).unwrap_or(atoms::error());
            (atoms::error(), reason).encode(env)
        }
    })
}

#[rustler::nif]
fn status(env: Env, os_pid: u32) -> Term {
    let result = reactor().registry().state(os_pid).map(|state| {
        let state = match state {
            State::Running => atoms::running(),
            State::Stopping => atoms::stopping(),
            State::Stopped => atoms::stopped(),
        };
        (atoms::status(), state)
    });
    ok_or_no_process(env, result)
}

/// Writes a binary to the child's stdin, or queues it (no copy, never blocks).
#[rustler::nif]
fn write<'a>(env: Env<'a>, os_pid: u32, data: Term<'a>) -> rustler::NifResult<Term<'a>> {
    let bytes = bytes::keep(data)?;
    Ok(write_result(env, reactor().write(os_pid, Box::new(bytes))))
}

/// Closes the child's stdin after what is queued.
#[rustler::nif]
fn close_stdin(env: Env, os_pid: u32) -> Term {
    write_result(env, reactor().close_stdin(os_pid))
}

fn write_result(env: Env, result: Result<(), WriteError>) -> Term {
    match result {
        Ok(()) => atoms::ok().encode(env),
        Err(WriteError::NoProcess) => (atoms::error(), atoms::no_process()).encode(env),
        Err(WriteError::Closed) => (atoms::error(), atoms::closed()).encode(env),
    }
}

/// Asks to be told when the child's stdin queue is written out:
/// `{:tether_stdin_flushed, ref, written?}` reaches `reply_to`.
#[rustler::nif]
fn stdin_flushed<'a>(
    env: Env<'a>,
    os_pid: u32,
    reply_to: LocalPid,
    reference: Term<'a>,
) -> Term<'a> {
    let reply = listener::Reply::new(reply_to, reference);
    let result = reactor().when_stdin_flushed(
        os_pid,
        Box::new(move |written| {
            reply.send(atoms::tether_stdin_flushed(), |env| written.encode(env));
        }),
    );
    write_result(env, result)
}

#[rustler::nif]
fn winsz(env: Env, os_pid: u32, rows: u16, cols: u16) -> Term {
    let result = reactor()
        .set_window_size(os_pid, rows, cols)
        .map(|()| atoms::ok());
    ok_or_no_process(env, result)
}

/// Asks for a child's byte counters: `{:tether_counters, ref, map}` reaches `reply_to`.
#[rustler::nif]
fn counters<'a>(env: Env<'a>, os_pid: u32, reply_to: LocalPid, reference: Term<'a>) -> Term<'a> {
    let reply = listener::Reply::new(reply_to, reference);
    let result = reactor()
        .counters(
            os_pid,
            Box::new(move |counters| {
                reply.send(atoms::tether_counters(), |env| {
                    let map = counters.map(|c| {
                        rustler::term_map!(env, {
                            atoms::stdout_bytes() => c.stdout_bytes,
                            atoms::stderr_bytes() => c.stderr_bytes,
                            atoms::stdin_bytes() => c.stdin_bytes,
                        })
                    });
                    map.encode(env)
                });
            }),
        )
        .map(|()| atoms::ok());
    ok_or_no_process(env, result)
}

/// Grants flow-control credit: `stream` is `:stdout`, `:stderr` or nil (both); `credit` a
/// count of messages, or nil to read freely.
#[rustler::nif]
fn activate(
    env: Env,
    os_pid: u32,
    stream: Option<Atom>,
    credit: Option<u64>,
) -> rustler::NifResult<Term> {
    // `nil` is an atom, so it decodes as `Some(nil)`.
    let stream = match stream {
        None => None,
        Some(s) if s == atoms::nil() => None,
        Some(s) if s == atoms::stdout() => Some(tether_core::Stream::Stdout),
        Some(s) if s == atoms::stderr() => Some(tether_core::Stream::Stderr),
        Some(_) => return Err(rustler::Error::BadArg),
    };
    let result = reactor()
        .activate(os_pid, stream, credit)
        .map(|()| atoms::ok());
    Ok(ok_or_no_process(env, result))
}

/// Whether an rlimit name is known (for option validation).
#[rustler::nif]
fn rlimit_known(name: String) -> bool {
    tether_core::command::rlimit_resource(&name).is_some()
}

/// Sets the runtime limits (from `config :tether`) and starts the watchdog program;
/// sets the spawner program.
#[rustler::nif]
fn configure(
    max_children: usize,
    read_chunk: usize,
    busy_poll_us: u64,
    watchdog: Option<rustler::Binary>,
    spawner: Option<rustler::Binary>,
) -> Atom {
    let busy_poll = std::time::Duration::from_micros(busy_poll_us);
    reactor().configure(max_children, read_chunk, busy_poll);
    if let Some(path) = watchdog {
        reactor().set_watchdog(path.as_slice().to_vec());
    }
    // nil: children are cloned from the reactor thread itself.
    reactor().set_spawner(spawner.map(|path| path.as_slice().to_vec()));
    atoms::ok()
}

/// The number of running children.
#[rustler::nif]
fn count() -> usize {
    reactor().registry().len()
}

/// `{exited, draining}`: children that exited and still owe output to a passive stream, and
/// exited children whose background jobs are still alive.
#[rustler::nif]
fn leftovers() -> (usize, Vec<u32>) {
    (reactor().registry().exited_len(), reactor().draining())
}

/// Chooses cgroup containment (`mode`: `:auto`, `:required` or `:off`; `base`: nil for the VM's
/// own cgroup). `{:ok, path | nil}` or `{:error, reason}` (a string) when required and
/// impossible.
#[rustler::nif]
fn configure_cgroups<'a>(
    env: Env<'a>,
    mode: Atom,
    base: Option<String>,
) -> rustler::NifResult<Term<'a>> {
    let mode = if mode == atoms::auto() {
        tether_core::cgroup::Mode::Auto
    } else if mode == atoms::required() {
        tether_core::cgroup::Mode::Required
    } else if mode == atoms::off() {
        tether_core::cgroup::Mode::Off
    } else {
        return Err(rustler::Error::BadArg);
    };
    let path_string = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    Ok(
        match reactor().configure_cgroups(mode, base.map(Into::into)) {
            Ok(path) => (atoms::ok(), path.map(path_string)).encode(env),
            Err(reason) => (atoms::error(), reason).encode(env),
        },
    )
}

/// `{:ok, path}` where child cgroups are made, or `{:error, reason}` (a string) why none are.
#[rustler::nif]
fn cgroups(env: Env) -> Term {
    match reactor().cgroups() {
        Ok(path) => (atoms::ok(), path.to_string_lossy().into_owned()).encode(env),
        Err(reason) => (atoms::error(), reason).encode(env),
    }
}

#[rustler::nif]
fn which() -> Vec<u32> {
    reactor().registry().os_pids()
}

#[rustler::nif]
fn process_of(env: Env, os_pid: u32) -> Term {
    let pid = reactor()
        .registry()
        .tag(os_pid)
        .and_then(|tag| tag.downcast_ref::<LocalPid>().copied());
    match pid {
        Some(pid) => (atoms::ok(), pid).encode(env),
        None => no_process(env),
    }
}

/// Stops every child; `:tether_all_stopped` reaches `reply_to` once none is left.
#[rustler::nif]
fn stop_all(reply_to: LocalPid) -> Atom {
    reactor().stop_all(Box::new(move || {
        listener::send(&reply_to, |env| atoms::tether_all_stopped().encode(env));
    }));
    atoms::ok()
}

/// The spawner program's os_pid, or nil when none runs (it starts with the first spawn).
#[rustler::nif]
fn spawner_os_pid() -> Option<u32> {
    reactor().spawner_pid()
}

/// The watchdog program's os_pid, or nil when none runs.
#[rustler::nif]
fn watchdog_os_pid() -> Option<u32> {
    reactor().watchdog_pid()
}

#[rustler::nif]
fn signal_number(name: String) -> Option<i32> {
    signal::number(&name)
}

rustler::init!("Elixir.Tether.Native", load = load);
