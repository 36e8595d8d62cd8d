#![no_std]

// This file exists so that tracer-user can name this crate as a build dependency (cargo
// rebuilds locktrace when the eBPF sources change).
