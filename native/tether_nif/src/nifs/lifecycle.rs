//! Starting, adopting, stopping and signalling children, and configuring the reactor.

use crate::encode::{no_process, ok_or_no_process};
use crate::handle::Handle;
use crate::listener::{self, BeamListener};
use crate::{atoms, reactor, spec};
use rustler::{Atom, Encoder, Env, LocalPid, ResourceArc, Term};
use std::sync::Arc;
use tether_core::signal;

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
    let keeper = routes.background_owner.unwrap_or(owner);
    let listener = Box::new(BeamListener::new(routes, reply, keeper));
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
            let reason = crate::encode::spawn_error_name(&tether_core::SpawnError::Os(errno));
            let reason = Atom::from_str(env, &reason).unwrap_or(atoms::error());
            (atoms::error(), reason).encode(env)
        }
    })
}

/// Stops every child; `:tether_all_stopped` reaches `reply_to` once none is left.
#[rustler::nif]
fn stop_all(reply_to: LocalPid) -> Atom {
    reactor().stop_all(Box::new(move || {
        listener::send(&reply_to, |env| atoms::tether_all_stopped().encode(env));
    }));
    atoms::ok()
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
