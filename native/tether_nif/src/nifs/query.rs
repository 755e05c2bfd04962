//! What the reactor knows: states, counters, children, helper programs, signal names.

use crate::encode::{no_process, ok_or_no_process};
use crate::listener::{self};
use crate::{atoms, reactor};
use rustler::{Encoder, Env, LocalPid, Term};
use tether_core::{signal, State};

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

/// Whether an rlimit name is known (for option validation).
#[rustler::nif]
fn rlimit_known(name: String) -> bool {
    tether_core::command::rlimit_resource(&name).is_some()
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
