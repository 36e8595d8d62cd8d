//! Attaching probe families. Each family's table says which program goes where and which
//! attach points are optional; what could not be attached is reported, never hidden.
pub mod btf;
pub mod kernel;
pub mod pthread;
pub mod task;

use std::fmt;

/// What a trace session attached, and what it could not, with the reason.
#[derive(Debug, Default)]
pub struct AttachReport {
    pub attached: Vec<String>,
    pub skipped: Vec<(String, String)>,
}

impl AttachReport {
    pub fn attached(&mut self, what: impl Into<String>) {
        self.attached.push(what.into());
    }

    pub fn skipped(&mut self, what: impl Into<String>, why: impl fmt::Display) {
        self.skipped.push((what.into(), why.to_string()));
    }
}
