//! The cases one `run` each answers: a script, changes to runc's default
//! spec, and the normalisation rules (beyond the kernel line) it needs.

use serde_json::{json, Value};

/// One case: the shell script the container runs (after the kernel line),
/// more arguments to `sh -c` (`$0`, `$1`, ...), changes to the spec, and
/// the rules applied to stdout before comparing.
pub(super) struct Case {
    pub name: &'static str,
    pub script: &'static str,
    pub args: &'static [&'static str],
    pub edit: fn(&mut Value),
    pub rules: &'static [fn(&str) -> String],
}

fn no_edit(_: &mut Value) {}

const fn case(name: &'static str, script: &'static str, edit: fn(&mut Value)) -> Case {
    Case {
        name,
        script,
        args: &[],
        edit,
        rules: &[],
    }
}

/// Every masked path of runc's default spec: `absent`, `masked` (there but
/// nothing to read or list) or `visible`.
const MASKED: &str = r#"for p in /proc/acpi /proc/asound /proc/kcore /proc/keys /proc/latency_stats /proc/timer_list /proc/timer_stats /proc/sched_debug /proc/scsi /sys/firmware; do
  if [ ! -e $p ]; then s=absent
  elif [ -d $p ]; then [ -z "$(ls -A $p)" ] && s=masked || s=visible
  else [ -z "$(head -c 1 $p 2>/dev/null)" ] && s=masked || s=visible
  fi
  echo "$p $s"
done"#;

/// The read-only paths of the default spec that both kernels have: their
/// mount options, and whether a write gets through.
const READONLY: &str = r#"for p in /proc/bus /proc/fs /proc/irq /proc/sys; do
  echo "$p $(awk -v p=$p '$5 == p {print $6}' /proc/self/mountinfo)"
done
echo 1 > /proc/sys/kernel/shm_rmid_forced && echo sysctl-written || echo sysctl-refused
mkdir /proc/fs/x && echo fs-written || echo fs-refused"#;

/// Only CAP_NET_BIND_SERVICE and CAP_KILL, nothing ambient.
fn reduced_caps(s: &mut Value) {
    let set = json!(["CAP_NET_BIND_SERVICE", "CAP_KILL"]);
    s["process"]["capabilities"] = json!({
        "bounding": set, "effective": set, "permitted": set, "inheritable": set, "ambient": []
    });
}

/// A non-root user (app, 1001:1002) that keeps CAP_NET_BIND_SERVICE
/// through the ambient set.
fn ambient_caps(s: &mut Value) {
    let set = json!(["CAP_NET_BIND_SERVICE"]);
    s["process"]["user"] = json!({"uid": 1001, "gid": 1002});
    s["process"]["capabilities"] = json!({
        "bounding": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"], "effective": set,
        "permitted": set, "inheritable": set, "ambient": set
    });
}

/// The capabilities `runc spec` writes: ambient ones asked for, no
/// inheritable set, so none can be raised.
fn runc_spec_caps(s: &mut Value) {
    let set = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    s["process"]["capabilities"] = json!({
        "bounding": set, "effective": set, "permitted": set, "ambient": set
    });
}

pub(super) const CASES: &[Case] = &[
    case("exit-code", "echo out; echo err >&2; exit 42", no_edit),
    case("identity", "id; pwd; echo $HOME; echo \"$GREETING\"", |s| {
        s["process"]["user"] = json!({"uid": 65534, "gid": 65534, "additionalGids": [4, 24]});
        s["process"]["cwd"] = json!("/tmp");
        s["process"]["env"] = json!(["PATH=/bin", "HOME=/root", "GREETING=hello there"]);
    }),
    case("hostname", "hostname", |s| s["hostname"] = json!("diff-host")),
    case(
        "readonly-rootfs",
        "touch /x 2>/dev/null && echo writable || echo readonly; touch /tmp/y 2>/dev/null && echo tmp-writable || echo tmp-readonly",
        |s| s["root"]["readonly"] = json!(true),
    ),
    case("rlimits", "ulimit -n; ulimit -Hn", |s| {
        s["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
    }),
    case("capabilities", "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status", no_edit),
    case("no-new-privs", "grep NoNewPrivs /proc/self/status", |s| {
        s["process"]["noNewPrivileges"] = json!(true);
    }),
    case("pid-1", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo", no_edit),
    // A child killed by SIGKILL ends with 137; pid 1 of the container's
    // pid namespace is not killed by a signal sent from inside it.
    case(
        "sigkill",
        "sh -c 'kill -9 $$; echo not reached'; echo child $?; kill -9 $$; echo pid 1 lives",
        no_edit,
    ),
    case("umask", "umask", |s| s["process"]["user"]["umask"] = json!(63)),
    Case {
        rules: &[super::absent_is_masked],
        ..case("masked-paths", MASKED, no_edit)
    },
    case("readonly-paths", READONLY, no_edit),
    case("capabilities-reduced", "grep ^Cap /proc/self/status", reduced_caps),
    case(
        "capabilities-ambient-non-root",
        "id; grep ^Cap /proc/self/status",
        ambient_caps,
    ),
    case(
        "capabilities-runc-spec-default",
        "grep ^Cap /proc/self/status",
        runc_spec_caps,
    ),
    case(
        "sysctls",
        "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/msgmax",
        |s| {
            s["linux"]["sysctl"] = json!({
                "kernel.shm_rmid_forced": "1",
                "net.ipv4.ip_unprivileged_port_start": "80",
                "kernel/msgmax": "4096"
            });
        },
    ),
    case("oom-score-adj", "cat /proc/self/oom_score_adj", |s| {
        s["process"]["oomScoreAdj"] = json!(500);
    }),
    Case {
        args: &[
            "zero",
            "two words",
            "it's \"quoted\"",
            "",
            "tab\there",
            "back\\slash $HOME",
            "line\nbreak",
        ],
        ..case(
            "args",
            "echo \"0=[$0] n=$#\"; for a in \"$@\"; do printf '[%s]\\n' \"$a\"; done",
            no_edit,
        )
    },
    // What execve gave the shell, before it reads and re-exports it (a
    // command after tr keeps the shell from exec'ing tr in its place).
    case("env", "tr '\\0' '\\n' < /proc/$$/environ; echo end", |s| {
        s["process"]["env"] = json!([
            "PATH=/bin",
            "HOME=",
            "EQ=a=b==c=",
            "EMPTY=",
            "SPACES=  two  spaces ",
            "QUOTES=it's \"q\"",
            "DUP=first",
            "DUP=second"
        ]);
    }),
    case("cwd-created", "pwd; stat -c '%a %u:%g' .", |s| {
        s["process"]["cwd"] = json!("/new dir/sub");
    }),
];
