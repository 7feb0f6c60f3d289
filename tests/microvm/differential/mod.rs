//! The same bundles under runc and under husk, compared: what the process
//! prints and sees, and how it ends. Both run in the same (test) host.
//! Each case also prints the kernel release, which proves where it ran:
//! the host's kernel under runc, husk's guest kernel (6.12) under husk.
//!
//! Outputs are compared exactly (stdout, stderr, exit code) after the
//! normalisation rules a case names. Every rule is written down beside the
//! function that applies it, with why it differs in a VM:
//!
//! - [`drop_kernel_line`]: the `kernel=` proof line (checked on its own).
//! - [`absent_is_masked`]: a masked path the guest kernel lacks.
//! - [`mounts::normalise`]: mount ids and device numbers, the host's files
//!   reached over virtio-fs, the host's cgroup layout, tmpfs's `inode64`,
//!   the sysfs superblock of the guest's network namespace, and masked or
//!   read-only paths that only one kernel has.
//!
//! The cases: [`cases`] (one `run` each), [`mounts`] (bind mounts and the
//! mount table), [`signals`] (signals through `kill` into a started
//! container).

mod cases;
mod mounts;
mod signals;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use husk_tests::bundle::{busybox_bundle, write_config};
use husk_tests::{describe, husk_bin};

/// The two runtimes compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runtime {
    Runc,
    Husk,
}

impl Runtime {
    fn bin(self) -> PathBuf {
        match self {
            Runtime::Runc => "runc".into(),
            Runtime::Husk => husk_bin(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Husk => "husk",
        }
    }

    /// `<runtime> --root <root>/<name> ARGS`.
    fn cmd(self, root: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin());
        c.arg("--root").arg(root.join(self.name())).args(args);
        c
    }

    /// `run --bundle B ID` in the foreground, stdin closed.
    fn run(self, bundle: &Path, root: &Path, id: &str) -> Output {
        self.cmd(root, &["run", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e} (apt-get install runc)", self.name()))
    }
}

/// The line every case's script starts with.
const KERNEL_LINE: &str = "echo kernel=$(uname -r)";

/// The host's kernel release (what runc's containers see).
fn host_kernel() -> String {
    let out = Command::new("uname").arg("-r").output().expect("uname");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Rule: the `kernel=` line is the proof of where each side ran, checked
/// by [`where_it_ran`]; it differs by design (host kernel against guest
/// kernel), so it is dropped before comparing.
fn drop_kernel_line(out: &str) -> String {
    out.lines()
        .filter(|l| !l.starts_with("kernel="))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Rule (masked paths only): `absent` becomes `masked`. The default spec
/// masks paths such as /proc/kcore, /proc/keys and /proc/scsi; the guest
/// kernel is built small and has none of them, so under husk they are
/// absent where runc masks them. Either way the process reads nothing
/// there; a path that exists and shows content stays `visible` and is a
/// difference.
fn absent_is_masked(out: &str) -> String {
    out.lines()
        .map(|l| match l.strip_suffix(" absent") {
            Some(path) => format!("{path} masked\n"),
            None => format!("{l}\n"),
        })
        .collect()
}

/// Fails unless runc's output shows the host's kernel and husk's the
/// guest's: each runtime really ran the case.
fn where_it_ran(name: &str, runc: &Output, husk: &Output) -> Result<(), String> {
    let runc_out = String::from_utf8_lossy(&runc.stdout);
    if !runc_out.contains(&format!("kernel={}\n", host_kernel())) {
        return Err(format!(
            "{name}: runc did not run the case\n{}",
            describe(runc)
        ));
    }
    if !String::from_utf8_lossy(&husk.stdout).contains("kernel=6.12") {
        return Err(format!(
            "{name}: husk did not run it in its guest\n{}",
            describe(husk)
        ));
    }
    Ok(())
}

/// Compares two outputs after `rules`; prints the case's line when they
/// agree.
fn compare(
    name: &str,
    runc: &Output,
    husk: &Output,
    rules: &[fn(&str) -> String],
) -> Result<(), String> {
    where_it_ran(name, runc, husk)?;
    let apply = |bytes: &[u8]| {
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        for rule in rules {
            text = rule(&text);
        }
        text
    };
    let same = runc.status.code() == husk.status.code()
        && apply(&runc.stdout) == apply(&husk.stdout)
        && runc.stderr == husk.stderr;
    if !same {
        return Err(format!(
            "{name}: runc and husk differ\n--- runc\n{}\n--- husk\n{}",
            describe(runc),
            describe(husk)
        ));
    }
    eprintln!(
        "{name}: same under runc and husk (exit {:?})",
        husk.status.code()
    );
    Ok(())
}

/// A fresh bundle in `dir` running `sh -c "<kernel line>; <script>" extra...`,
/// with `edit` applied to the spec.
fn case_bundle(
    dir: &Path,
    script: &str,
    extra_args: &[&str],
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let bundle = busybox_bundle(dir, &[]);
    let script = format!("{KERNEL_LINE}; {script}");
    let mut args = vec!["sh", "-c", &script];
    args.extend_from_slice(extra_args);
    write_config(&bundle, &args, edit);
    bundle
}

/// Fails with every failure listed, or passes.
fn report(failures: &[String], total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn runc_and_husk_agree() {
    let mut failures = Vec::new();
    for case in cases::CASES {
        let dir = tempfile::tempdir().unwrap();
        let bundle = case_bundle(dir.path(), case.script, case.args, case.edit);
        let root = tempfile::tempdir().unwrap();
        let runc = Runtime::Runc.run(&bundle, root.path(), case.name);
        let husk = Runtime::Husk.run(&bundle, root.path(), case.name);
        let mut rules: Vec<fn(&str) -> String> = vec![drop_kernel_line];
        rules.extend_from_slice(case.rules);
        if let Err(e) = compare(case.name, &runc, &husk, &rules) {
            failures.push(e);
        }
    }
    report(&failures, cases::CASES.len());
}

#[cfg(test)]
mod rules {
    use super::*;

    #[test]
    fn absent_is_masked_only_rewrites_absent() {
        assert_eq!(
            absent_is_masked(
                "/proc/kcore absent\n/proc/timer_list visible\n/sys/firmware masked\n"
            ),
            "/proc/kcore masked\n/proc/timer_list visible\n/sys/firmware masked\n"
        );
    }

    #[test]
    fn the_kernel_line_is_dropped() {
        assert_eq!(drop_kernel_line("kernel=6.12.1\nout\n"), "out\n");
    }
}
