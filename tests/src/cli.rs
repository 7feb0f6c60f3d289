//! The `husk` CLI driven as runc would be, with a runtime root per test.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::{describe, husk_bin, husk_processes_with, output_within, wait_until, CALL_TIMEOUT};

/// A runtime root of its own per test, removed at the end.
pub struct Runtime {
    /// The `--root` directory.
    pub root: tempfile::TempDir,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// A fresh root.
    pub fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
        }
    }

    /// `husk --root ROOT ARGS`, not started.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(husk_bin());
        c.arg("--root").arg(self.root.path()).args(args);
        c
    }

    /// `husk ARGS`, run to the end with stdin from /dev/null, its output
    /// in files (a verb that leaves a container behind, `create` or
    /// `run --detach`, leaves its monitor holding the stdio it was given).
    pub fn husk(&self, args: &[&str]) -> Output {
        output_within(&mut self.cmd(args), None, CALL_TIMEOUT, String::new)
    }

    /// `husk ARGS`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.husk(args);
        assert!(out.status.success(), "husk {args:?}: {}", describe(&out));
        out
    }

    /// `husk state ID`, which must succeed, as JSON.
    pub fn state(&self, id: &str) -> serde_json::Value {
        let out = self.husk(&["state", id]);
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Nothing of the runtime is left: no container directory, no VMM.
    pub fn assert_clean(&self) {
        let left: Vec<PathBuf> = std::fs::read_dir(self.root.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left in the root: {left:?}");
        let root = self.root.path().to_str().unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || husk_processes_with(root)
                .is_empty()),
            "husk processes left: {:?}",
            husk_processes_with(root)
        );
    }
}
