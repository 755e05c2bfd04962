//! The NIFs, by topic. Each decodes its arguments, calls `tether_core`, and encodes the
//! result; rustler registers every `#[rustler::nif]` function of the crate.

mod io;
mod lifecycle;
mod query;
