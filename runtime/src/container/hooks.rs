//! OCI hooks, run on the host as runc runs them.
//!
//! * `prestart` and `createRuntime`: by the monitor during `create`, once
//!   the container's network namespace exists and before the VM boots (so
//!   Docker's `libnetwork-setkey` can move the container's veth into
//!   `/proc/<pid>/ns/net`). A failure fails `create`.
//! * `poststart`: by `start`, once the process runs; `poststop`: by
//!   `delete`. A failure there is a warning, as under runc.
//! * `createContainer` and `startContainer` are refused: they run inside
//!   the container's namespaces, which are in the guest, where no host
//!   binary can run.
//!
//! Each hook gets the runtime-spec state on stdin, its `args` (the first
//! is its `argv[0]`), its `env` (or, without one, ours), and is killed
//! when its `timeout` runs out. It runs in the host's network namespace
//! even when the monitor has made its own (see [`HookRunner::in_netns`]).
//! Its output is kept for the error message, never mixed into the
//! container's stdio (the monitor's).
//!
//! The hooks of a container are saved in its directory at `create`
//! (`hooks.json`), so `start` and `delete` run what `create` accepted
//! even if the bundle changed or went.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};
use serde::{Deserialize, Serialize};

use super::state::{ContainerState, Status};

/// The name of the hooks file in a container's directory.
const HOOKS_FILE: &str = "hooks.json";
/// How much of a hook's output is kept for its error message.
const MAX_OUTPUT: usize = 16 * 1024;
/// How often a running hook is checked on.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// How long a hook's output may still come after it exited (a child of
/// the hook may hold the pipe).
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPhase {
    /// During create, after the namespaces exist (deprecated in the spec,
    /// still what Docker uses).
    Prestart,
    /// During create, right after `prestart`.
    CreateRuntime,
    /// After start.
    Poststart,
    /// On delete.
    Poststop,
}

impl std::fmt::Display for HookPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookPhase::Prestart => "prestart",
            HookPhase::CreateRuntime => "createRuntime",
            HookPhase::Poststart => "poststart",
            HookPhase::Poststop => "poststop",
        })
    }
}

/// The hook kinds husk runs, as `husk features` lists them.
pub const SUPPORTED_HOOKS: &[&str] = &["prestart", "createRuntime", "poststart", "poststop"];

/// Why a spec's hooks were refused.
#[derive(Debug, thiserror::Error)]
pub enum HookSpecError {
    /// A hook kind that would run inside the container's namespaces.
    #[error(
        "{kind} hooks are not supported: they run in the container's namespaces, which are \
         inside the microVM, where host binaries cannot run (husk runs prestart, \
         createRuntime, poststart and poststop hooks on the host)"
    )]
    InContainer {
        /// `createContainer` or `startContainer`.
        kind: &'static str,
    },
    /// A timeout that is not positive.
    #[error("{phase} hook {path:?}: timeout {timeout} must be greater than zero")]
    Timeout {
        /// The hook's phase.
        phase: HookPhase,
        /// The hook.
        path: PathBuf,
        /// The timeout given.
        timeout: i64,
    },
}

/// Why the hooks file could not be saved or read.
#[derive(Debug, thiserror::Error)]
pub enum HooksFileError {
    /// Reading or writing it.
    #[error("hooks file {0:?}")]
    Io(PathBuf, #[source] std::io::Error),
    /// It is damaged.
    #[error("hooks file {0:?} is damaged")]
    Parse(PathBuf, #[source] serde_json::Error),
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum RunHookError {
    /// It could not be started.
    #[error("{phase} hook {path:?} could not be started")]
    Spawn {
        /// The hook's phase.
        phase: HookPhase,
        /// The hook.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for it failed.
    #[error("{phase} hook {path:?}: cannot wait for it")]
    Wait {
        /// The hook's phase.
        phase: HookPhase,
        /// The hook.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It ended with a failure.
    #[error("{phase} hook {path:?} failed ({status}){}", output_suffix(output))]
    Failed {
        /// The hook's phase.
        phase: HookPhase,
        /// The hook.
        path: PathBuf,
        /// How it ended.
        status: ExitStatus,
        /// Its stdout and stderr (the start of them).
        output: String,
    },
    /// It outlived its timeout and was killed.
    #[error(
        "{phase} hook {path:?} did not end within its timeout of {timeout} s: killed{}",
        output_suffix(output)
    )]
    TimedOut {
        /// The hook's phase.
        phase: HookPhase,
        /// The hook.
        path: PathBuf,
        /// The timeout, in seconds.
        timeout: i64,
        /// Its stdout and stderr until then.
        output: String,
    },
}

fn output_suffix(output: &str) -> String {
    let output = output.trim();
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

/// The runtime-spec state a hook reads on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookState {
    /// Runtime-spec version.
    pub oci_version: String,
    /// The container id.
    pub id: String,
    /// Its status when the hook runs.
    pub status: Status,
    /// The pid standing for the container (the monitor's).
    pub pid: i32,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The spec's annotations.
    pub annotations: HashMap<String, String>,
}

impl HookState {
    /// The state of `state`'s container, `status` and with `pid`.
    pub fn of(state: &ContainerState, status: Status, pid: i32) -> Self {
        Self {
            oci_version: state.oci_version.clone(),
            id: state.id.clone(),
            status,
            pid,
            bundle: state.bundle.clone(),
            annotations: state.annotations.clone(),
        }
    }
}

/// The hooks of one container that husk runs, in spec order per phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerHooks {
    /// `prestart`.
    #[serde(default)]
    pub prestart: Vec<Hook>,
    /// `createRuntime`.
    #[serde(default)]
    pub create_runtime: Vec<Hook>,
    /// `poststart`.
    #[serde(default)]
    pub poststart: Vec<Hook>,
    /// `poststop`.
    #[serde(default)]
    pub poststop: Vec<Hook>,
}

impl ContainerHooks {
    /// The spec's hooks, refusing those husk cannot run.
    pub fn from_spec(spec: &Spec) -> Result<Self, HookSpecError> {
        let Some(hooks) = spec.hooks() else {
            return Ok(Self::default());
        };
        let present = |h: &Option<Vec<Hook>>| h.as_ref().is_some_and(|h| !h.is_empty());
        if present(hooks.create_container()) {
            return Err(HookSpecError::InContainer {
                kind: "createContainer",
            });
        }
        if present(hooks.start_container()) {
            return Err(HookSpecError::InContainer {
                kind: "startContainer",
            });
        }
        #[allow(deprecated)] // Docker 20.10 sets up its networks in prestart.
        let prestart = hooks.prestart().clone().unwrap_or_default();
        let this = Self {
            prestart,
            create_runtime: hooks.create_runtime().clone().unwrap_or_default(),
            poststart: hooks.poststart().clone().unwrap_or_default(),
            poststop: hooks.poststop().clone().unwrap_or_default(),
        };
        for (phase, hook) in this.all() {
            if let Some(timeout) = hook.timeout().filter(|t| *t <= 0) {
                return Err(HookSpecError::Timeout {
                    phase,
                    path: hook.path().clone(),
                    timeout,
                });
            }
        }
        Ok(this)
    }

    fn all(&self) -> impl Iterator<Item = (HookPhase, &Hook)> {
        fn phase(phase: HookPhase, hooks: &[Hook]) -> impl Iterator<Item = (HookPhase, &Hook)> {
            hooks.iter().map(move |h| (phase, h))
        }
        phase(HookPhase::Prestart, &self.prestart)
            .chain(phase(HookPhase::CreateRuntime, &self.create_runtime))
            .chain(phase(HookPhase::Poststart, &self.poststart))
            .chain(phase(HookPhase::Poststop, &self.poststop))
    }

    /// Whether there is no hook at all.
    pub fn is_empty(&self) -> bool {
        self.all().next().is_none()
    }

    /// Saves them in the container directory `dir` (nothing if there are none).
    pub fn save(&self, dir: &Path) -> Result<(), HooksFileError> {
        if self.is_empty() {
            return Ok(());
        }
        let path = dir.join(HOOKS_FILE);
        let json = serde_json::to_vec(self).expect("hooks serialize");
        std::fs::write(&path, json).map_err(|e| HooksFileError::Io(path, e))
    }

    /// The hooks saved in the container directory `dir` (none if it has no file).
    pub fn load(dir: &Path) -> Result<Self, HooksFileError> {
        let path = dir.join(HOOKS_FILE);
        match std::fs::read(&path) {
            Ok(json) => serde_json::from_slice(&json).map_err(|e| HooksFileError::Parse(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(HooksFileError::Io(path, e)),
        }
    }
}

/// Runs hooks, in a given network namespace or in ours.
#[derive(Debug, Clone, Copy, Default)]
pub struct HookRunner<'a> {
    netns: Option<BorrowedFd<'a>>,
}

impl<'a> HookRunner<'a> {
    /// Runs hooks in the caller's namespaces.
    pub fn new() -> Self {
        Self { netns: None }
    }

    /// Runs hooks in the network namespace `netns` (the host's, when the
    /// monitor has moved into the container's, as runc runs them).
    pub fn in_netns(netns: BorrowedFd<'a>) -> Self {
        Self { netns: Some(netns) }
    }

    /// Runs `prestart`, then `createRuntime` hooks; stops at the first
    /// that fails.
    pub fn run_create_hooks(
        &self,
        hooks: &ContainerHooks,
        state: &HookState,
    ) -> Result<(), RunHookError> {
        let state = state_json(state);
        for hook in &hooks.prestart {
            self.run(HookPhase::Prestart, hook, &state)?;
        }
        for hook in &hooks.create_runtime {
            self.run(HookPhase::CreateRuntime, hook, &state)?;
        }
        Ok(())
    }

    /// Runs the `poststart` hooks; a failure is a warning (runc's way).
    pub fn run_poststart_hooks(&self, hooks: &ContainerHooks, state: &HookState) {
        self.run_warning(HookPhase::Poststart, &hooks.poststart, state);
    }

    /// Runs the `poststop` hooks; a failure is a warning (runc's way).
    pub fn run_poststop_hooks(&self, hooks: &ContainerHooks, state: &HookState) {
        self.run_warning(HookPhase::Poststop, &hooks.poststop, state);
    }

    fn run_warning(&self, phase: HookPhase, hooks: &[Hook], state: &HookState) {
        let state = state_json(state);
        for hook in hooks {
            if let Err(e) = self.run(phase, hook, &state) {
                log::warn!("{}", crate::error_chain(&e));
            }
        }
    }

    /// Runs one hook with `state` on its stdin and waits for it.
    pub fn run(&self, phase: HookPhase, hook: &Hook, state: &[u8]) -> Result<(), RunHookError> {
        let path = hook.path().clone();
        let mut command = Command::new(&path);
        if let Some((argv0, rest)) = hook.args().as_deref().and_then(|a| a.split_first()) {
            command.arg0(argv0).args(rest);
        }
        if let Some(env) = hook.env() {
            command.env_clear();
            for entry in env {
                let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
                command.env(key, value);
            }
        }
        let (output_read, output_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|errno| RunHookError::Spawn {
                phase,
                path: path.clone(),
                source: errno.into(),
            })?;
        let output_write_too = output_write
            .try_clone()
            .map_err(|source| RunHookError::Spawn {
                phase,
                path: path.clone(),
                source,
            })?;
        command
            .stdin(Stdio::piped())
            .stdout(output_write)
            .stderr(output_write_too)
            // Its own group, so a timeout kills what it started too.
            .process_group(0);
        if let Some(netns) = self.netns {
            let fd = netns.as_raw_fd();
            let enter = move || {
                // SAFETY: setns takes a descriptor we hold open and a flag.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            // SAFETY: the closure makes one raw system call (setns).
            unsafe { command.pre_exec(enter) };
        }
        log::debug!("running {phase} hook {path:?}");
        let mut child = command.spawn().map_err(|source| RunHookError::Spawn {
            phase,
            path: path.clone(),
            source,
        })?;
        // Our copies of the write ends are in `command`: gone with it, so
        // the output ends when the hook (and its children) close theirs.
        drop(command);
        let output = collect_output(std::fs::File::from(output_read));
        if let Some(mut stdin) = child.stdin.take() {
            let state = state.to_vec();
            // A hook need not read its stdin: a full pipe must not block us.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&state);
            });
        }
        let deadline = hook
            .timeout()
            .map(|t| Instant::now() + Duration::from_secs(t.max(0) as u64));
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(source) => {
                    kill_group(child.id());
                    let _ = child.wait();
                    return Err(RunHookError::Wait {
                        phase,
                        path,
                        source,
                    });
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                kill_group(child.id());
                let _ = child.wait();
                return Err(RunHookError::TimedOut {
                    phase,
                    path,
                    timeout: hook.timeout().unwrap_or(0),
                    output: output.take(),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        if status.success() {
            return Ok(());
        }
        Err(RunHookError::Failed {
            phase,
            path,
            status,
            output: output.take(),
        })
    }
}

fn state_json(state: &HookState) -> Vec<u8> {
    serde_json::to_vec(state).expect("state serializes")
}

/// Kills the process group led by `pid` (a hook's).
fn kill_group(pid: u32) {
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
}

/// A hook's output, read on a thread as it comes.
struct CollectedOutput {
    bytes: Arc<Mutex<Vec<u8>>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl CollectedOutput {
    /// What came, once the pipe closed or [`OUTPUT_GRACE`] passed.
    fn take(&self) -> String {
        let _ = self.done.recv_timeout(OUTPUT_GRACE);
        let bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn collect_output(mut pipe: std::fs::File) -> CollectedOutput {
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, done) = std::sync::mpsc::channel();
    let kept = Arc::clone(&bytes);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
            let room = MAX_OUTPUT.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..n.min(room)]);
        }
        let _ = done_tx.send(());
    });
    CollectedOutput { bytes, done }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{HookBuilder, HooksBuilder, SpecBuilder};

    fn state() -> HookState {
        HookState {
            oci_version: "1.0.2".into(),
            id: "c1".into(),
            status: Status::Creating,
            pid: 4242,
            bundle: "/bundles/c1".into(),
            annotations: HashMap::from([("a".to_string(), "b".to_string())]),
        }
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn hook(path: &Path, args: &[&str], env: &[&str], timeout: Option<i64>) -> Hook {
        let mut hook = HookBuilder::default()
            .path(path)
            .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .env(env.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap();
        hook.set_timeout(timeout);
        hook
    }

    #[test]
    fn a_hook_reads_the_state_and_gets_its_args_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let path = script(
            dir.path(),
            "record",
            r#"cat > "$OUT.state"; echo "$1 $2 $GREETING" > "$OUT.args"; tr '\0' ' ' < /proc/$$/cmdline > "$OUT.argv""#,
        );
        let out_env = format!("OUT={}", out.display());
        let hooks = ContainerHooks {
            prestart: vec![hook(
                &path,
                &["setkey", "one", "two"],
                &[&out_env, "GREETING=hello"],
                Some(5),
            )],
            ..ContainerHooks::default()
        };
        HookRunner::new()
            .run_create_hooks(&hooks, &state())
            .unwrap();
        let seen: HookState =
            serde_json::from_slice(&std::fs::read(out.with_extension("state")).unwrap()).unwrap();
        assert_eq!(seen, state());
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.with_extension("state")).unwrap()).unwrap();
        assert_eq!(raw["ociVersion"], "1.0.2");
        assert_eq!(raw["status"], "creating");
        assert_eq!(raw["pid"], 4242);
        let args = std::fs::read_to_string(out.with_extension("args")).unwrap();
        assert_eq!(args.trim(), "one two hello");
        // A script's interpreter gets the path; argv[0] was `setkey`.
        let argv = std::fs::read_to_string(out.with_extension("argv")).unwrap();
        assert!(argv.ends_with(" one two "), "{argv}");
    }

    #[test]
    fn a_failing_hook_names_itself_its_status_and_output_and_stops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let failing = script(dir.path(), "fail", "echo 'no such network' >&2; exit 3");
        let marker = dir.path().join("ran");
        let after = script(dir.path(), "after", &format!("touch {}", marker.display()));
        let hooks = ContainerHooks {
            prestart: vec![hook(&failing, &[], &[], None)],
            create_runtime: vec![hook(&after, &[], &[], None)],
            ..ContainerHooks::default()
        };
        let err = HookRunner::new()
            .run_create_hooks(&hooks, &state())
            .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, RunHookError::Failed { .. }), "{message}");
        assert!(message.contains("prestart hook"), "{message}");
        assert!(
            message.contains(&failing.display().to_string()),
            "{message}"
        );
        assert!(message.contains("exit status: 3"), "{message}");
        assert!(message.contains("no such network"), "{message}");
        assert!(!marker.exists(), "a hook after a failed one ran");
    }

    #[test]
    fn a_missing_hook_fails_to_start() {
        let hooks = ContainerHooks {
            create_runtime: vec![hook(Path::new("/nonexistent/hook"), &[], &[], None)],
            ..ContainerHooks::default()
        };
        let err = HookRunner::new()
            .run_create_hooks(&hooks, &state())
            .unwrap_err();
        assert!(matches!(err, RunHookError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/hook"), "{err}");
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let slow = script(dir.path(), "slow", "echo started; sleep 30");
        let started = Instant::now();
        let err = HookRunner::new()
            .run(
                HookPhase::CreateRuntime,
                &hook(&slow, &[], &[], Some(1)),
                b"{}",
            )
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(matches!(err, RunHookError::TimedOut { .. }), "{err}");
        assert!(err.to_string().contains("started"), "{err}");
    }

    #[test]
    fn poststop_failures_are_only_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let failing = script(dir.path(), "fail", "exit 1");
        let marker = dir.path().join("ran");
        let after = script(dir.path(), "after", &format!("touch {}", marker.display()));
        let hooks = ContainerHooks {
            poststop: vec![hook(&failing, &[], &[], None), hook(&after, &[], &[], None)],
            ..ContainerHooks::default()
        };
        HookRunner::new().run_poststop_hooks(&hooks, &state());
        assert!(
            marker.exists(),
            "the hooks after a failed poststop hook run"
        );
    }

    #[test]
    fn hooks_that_run_inside_the_container_are_refused() {
        let in_container = HooksBuilder::default()
            .start_container(vec![HookBuilder::default()
                .path("/bin/true")
                .build()
                .unwrap()])
            .build()
            .unwrap();
        let spec = SpecBuilder::default().hooks(in_container).build().unwrap();
        let err = ContainerHooks::from_spec(&spec).unwrap_err();
        assert!(err.to_string().contains("startContainer"), "{err}");
    }

    #[test]
    fn hooks_round_trip_through_the_container_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            ContainerHooks::load(dir.path()).unwrap(),
            ContainerHooks::default()
        );
        let hooks = ContainerHooks {
            poststop: vec![hook(Path::new("/bin/true"), &["true"], &[], Some(3))],
            ..ContainerHooks::default()
        };
        hooks.save(dir.path()).unwrap();
        assert_eq!(ContainerHooks::load(dir.path()).unwrap(), hooks);
    }
}
