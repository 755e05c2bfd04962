//! Sends a child's events to the BEAM, from the reactor thread.
//!
//! Messages to one receiver leave in the order the reactor produces them, so every output
//! message precedes the `:DOWN` of the same process.

use crate::atoms;
use crate::spec::Routes;
use rustler::{Atom, Encoder, Env, LocalPid, OwnedBinary, OwnedEnv, Term};
use std::cell::RefCell;
use tether_core::{signal, Counters, ExitStatus, Listener, SpawnError, Stream, Usage};

thread_local! {
    /// One message environment for the reactor thread, cleared after every send.
    static ENV: RefCell<OwnedEnv> = RefCell::new(OwnedEnv::new());
}

/// Sends one message built by `build` (a dead receiver is not an error).
pub fn send<F>(to: &LocalPid, build: F)
where
    F: for<'a> FnOnce(Env<'a>) -> Term<'a>,
{
    ENV.with(|env| {
        let _ = env.borrow_mut().send_and_clear(to, build);
    });
}

/// `:normal` | `{:exit_status, code}` | `{:signal, name_or_number, core_dumped}` | `:unknown`.
/// Exit code 0 and `success` are `:normal`.
pub fn encode_reason<'a>(env: Env<'a>, status: Option<ExitStatus>, success: i32) -> Term<'a> {
    match status {
        None => atoms::unknown().encode(env),
        Some(ExitStatus::Exited(code)) if code == 0 || code == success => {
            atoms::normal().encode(env)
        }
        Some(ExitStatus::Exited(code)) => (atoms::exit_status(), code).encode(env),
        Some(ExitStatus::Signaled {
            signal: signum,
            core_dumped,
        }) => {
            let name = signal::name(signum).and_then(|n| Atom::from_str(env, n).ok());
            match name {
                Some(name) => (atoms::signal(), name, core_dumped).encode(env),
                None => (atoms::signal(), signum, core_dumped).encode(env),
            }
        }
    }
}

/// `%{stdout_bytes: n, stderr_bytes: n, stdin_bytes: n}` and, when known,
/// `user_time_us`, `system_time_us` and `max_rss` (bytes).
fn encode_exit_info(env: Env, usage: Option<Usage>, counters: Counters) -> Term {
    let map = rustler::term_map!(env, {
        atoms::stdout_bytes() => counters.stdout_bytes,
        atoms::stderr_bytes() => counters.stderr_bytes,
        atoms::stdin_bytes() => counters.stdin_bytes,
    });
    match usage {
        None => map,
        Some(usage) => map
            .map_put(atoms::user_time_us(), usage.user_time.as_micros() as u64)
            .and_then(|m| {
                m.map_put(
                    atoms::system_time_us(),
                    usage.system_time.as_micros() as u64,
                )
            })
            .and_then(|m| m.map_put(atoms::max_rss(), usage.max_rss))
            .unwrap_or(map),
    }
}

pub struct BeamListener {
    routes: Routes,
}

impl BeamListener {
    pub fn new(routes: Routes) -> BeamListener {
        BeamListener { routes }
    }
}

impl Listener for BeamListener {
    fn spawned(&mut self, result: Result<u32, SpawnError>) {
        send(&self.routes.process, |env| {
            let result = match result {
                Ok(os_pid) => (atoms::ok(), os_pid).encode(env),
                Err(error) => {
                    let reason = Atom::from_str(env, &error.name()).unwrap_or(atoms::error());
                    (atoms::error(), reason).encode(env)
                }
            };
            (atoms::tether_spawned(), result).encode(env)
        });
    }

    fn output(&mut self, stream: Stream, os_pid: u32, data: &[u8]) {
        let (tag, to) = match stream {
            Stream::Stdout => (atoms::stdout(), self.routes.stdout),
            Stream::Stderr => (atoms::stderr(), self.routes.stderr),
        };
        let Some(to) = to else { return };
        let mut binary = OwnedBinary::new(data.len());
        binary.as_mut_slice().copy_from_slice(data);
        send(&to, move |env| {
            (tag, os_pid, binary.release(env)).encode(env)
        });
    }

    fn passive(&mut self, stream: Stream, os_pid: u32) {
        let (tag, to) = match stream {
            Stream::Stdout => (atoms::stdout(), self.routes.stdout),
            Stream::Stderr => (atoms::stderr(), self.routes.stderr),
        };
        if let Some(to) = to {
            send(&to, move |env| {
                (atoms::tether_passive(), os_pid, tag).encode(env)
            });
        }
    }

    fn exited(
        &mut self,
        os_pid: u32,
        status: Option<ExitStatus>,
        usage: Option<Usage>,
        counters: Counters,
    ) {
        let process = self.routes.process;
        let success = self.routes.success_exit_code;
        if let Some(monitor) = self.routes.monitor {
            send(&monitor, |env| {
                let reason = encode_reason(env, status, success);
                (atoms::down(), os_pid, atoms::process(), process, reason).encode(env)
            });
        }
        send(&process, |env| {
            let info = encode_exit_info(env, usage, counters);
            (
                atoms::tether_exit(),
                os_pid,
                encode_reason(env, status, success),
                info,
            )
                .encode(env)
        });
    }
}
