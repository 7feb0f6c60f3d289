//! The same bundles under runc and under husk, compared: what the process
//! prints and sees, and how it ends. Both run in the same (test) host.
//! Each case also prints the kernel release, which proves where it ran:
//! the host's kernel under runc, husk's guest kernel (6.12) under husk.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use husk_tests::bundle::{busybox_bundle, write_config};
use husk_tests::{describe, husk_bin};

/// One case: the shell script the container runs, and changes to the spec.
struct Case {
    name: &'static str,
    script: &'static str,
    edit: fn(&mut serde_json::Value),
}

fn no_edit(_: &mut serde_json::Value) {}

/// What legitimately differs in a VM, rewritten before comparing:
/// nothing yet beyond the kernel line, which is checked separately.
fn normalise(out: &str) -> String {
    out.lines()
        .filter(|l| !l.starts_with("kernel="))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn run_under(runtime: &str, bundle: &Path, root: &Path, id: &str) -> Output {
    let bin = if runtime == "runc" {
        "runc".into()
    } else {
        husk_bin()
    };
    Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {runtime}: {e} (apt-get install runc)"))
}

const CASES: &[Case] = &[
    Case { name: "exit-code", script: "echo out; echo err >&2; exit 42", edit: no_edit },
    Case { name: "identity", script: "id; pwd; echo $HOME; echo \"$GREETING\"", edit: |s| {
        s["process"]["user"] = serde_json::json!({"uid": 65534, "gid": 65534, "additionalGids": [4, 24]});
        s["process"]["cwd"] = serde_json::json!("/tmp");
        s["process"]["env"] = serde_json::json!(["PATH=/bin", "HOME=/root", "GREETING=hello there"]);
    } },
    Case { name: "hostname", script: "hostname", edit: |s| s["hostname"] = serde_json::json!("diff-host") },
    Case { name: "readonly-rootfs", script: "touch /x 2>/dev/null && echo writable || echo readonly; touch /tmp/y 2>/dev/null && echo tmp-writable || echo tmp-readonly", edit: |s| {
        s["root"]["readonly"] = serde_json::json!(true);
    } },
    Case { name: "rlimits", script: "ulimit -n; ulimit -Hn", edit: |s| {
        s["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
    } },
    Case { name: "capabilities", script: "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status", edit: no_edit },
    Case { name: "no-new-privs", script: "grep NoNewPrivs /proc/self/status", edit: |s| {
        s["process"]["noNewPrivileges"] = serde_json::json!(true);
    } },
    Case { name: "pid-1", script: "echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo", edit: no_edit },
    Case { name: "sigkill", script: "kill -9 $$; echo not reached", edit: no_edit },
    Case { name: "umask", script: "umask", edit: |s| s["process"]["user"]["umask"] = serde_json::json!(63) },
];

#[test]
fn runc_and_husk_agree() {
    let runc_kernel =
        String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let mut failures = Vec::new();
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        let bundle = busybox_bundle(dir.path(), &[]);
        let script = format!("echo kernel=$(uname -r); {}", case.script);
        write_config(&bundle, &["sh", "-c", &script], case.edit);
        let root = tempfile::tempdir().unwrap();
        let runc = run_under("runc", &bundle, &root.path().join("runc"), case.name);
        let husk = run_under("husk", &bundle, &root.path().join("husk"), case.name);
        let runc_out = String::from_utf8_lossy(&runc.stdout).into_owned();
        let husk_out = String::from_utf8_lossy(&husk.stdout).into_owned();
        // Where each really ran.
        if !runc_out.contains(&format!("kernel={}", runc_kernel.trim())) {
            failures.push(format!(
                "{}: runc did not run the case\n{}",
                case.name,
                describe(&runc)
            ));
            continue;
        }
        if !husk_out.contains("kernel=6.12") {
            failures.push(format!(
                "{}: husk did not run it in its guest\n{}",
                case.name,
                describe(&husk)
            ));
            continue;
        }
        let same = runc.status.code() == husk.status.code()
            && normalise(&runc_out) == normalise(&husk_out)
            && runc.stderr == husk.stderr;
        if !same {
            failures.push(format!(
                "{}: runc and husk differ\n--- runc\n{}\n--- husk\n{}",
                case.name,
                describe(&runc),
                describe(&husk)
            ));
        } else {
            eprintln!(
                "{}: same under runc and husk (exit {:?})",
                case.name,
                husk.status.code()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}
