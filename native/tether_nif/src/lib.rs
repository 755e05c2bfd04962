//! The NIF of Tether: decode → call `tether_core` → encode. No process logic lives here.
//!
//! Every NIF returns at once (it queues work for the reactor, reads the registry under a short
//! lock, or makes one non-blocking write of at most 64 KiB to a child's stdin), so all run on
//! normal schedulers. Events reach the BEAM from the reactor thread through
//! [`listener::BeamListener`].

mod atoms;
mod bytes;
mod encode;
mod handle;
mod listener;
mod nifs;
mod spec;

use rustler::{Env, Term};
use std::sync::OnceLock;
use tether_core::Reactor;

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

rustler::init!("Elixir.Tether.Native", load = load);
