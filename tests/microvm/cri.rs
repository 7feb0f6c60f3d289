//! Kubernetes' CRI drives husk: containerd with its CRI plugin on, a pod
//! network from a CNI bridge config, a pause image built locally, and the
//! `husk-cri-e2e` client calling CRI as kubelet does (tests/cri).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use husk_tests::containerd::{Containerd, RUNTIME};
use husk_tests::image::busybox_image_archive_with;
use husk_tests::{describe, husk_bin};

const IMAGE: &str = "docker.io/library/husk-busybox:latest";
/// The sandbox (pause) image: busybox sleeping until it is killed.
const PAUSE_IMAGE: &str = "docker.io/library/husk-pause:latest";
/// The CRI client's binary (built by `cargo build -p husk-cri-tests`).
const CLIENT_BIN: &str = "husk-cri-e2e";
/// A private subnet for the pod bridge; nothing is ever sent over it
/// beyond the namespaces the test makes.
const POD_SUBNET: &str = "10.244.77.0/24";

/// The CRI client: `HUSK_CRI_E2E`, else next to the husk binary.
fn client_bin() -> PathBuf {
    std::env::var_os("HUSK_CRI_E2E")
        .map(PathBuf::from)
        .unwrap_or_else(|| husk_bin().with_file_name(CLIENT_BIN))
}

/// containerd's CRI settings (docs/containerd.md shows the same, minus
/// the test's paths). A config that names runtimes replaces containerd's
/// list, so runc (the default runtime) is named too.
fn cri_config(cni_conf_dir: &Path) -> String {
    format!(
        r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.husk]
    runtime_type = "{RUNTIME}"
    pod_annotations = ["io.husk.*"]
    container_annotations = ["io.husk.*"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = {cni_conf_dir:?}
"#
    )
}

/// A bridge network on [`POD_SUBNET`] whose bridge holds the gateway
/// address (so the host reaches pods), with no masquerading: nothing
/// routes beyond the test host.
fn write_cni_config(conf_dir: &Path, ipam_dir: &Path) {
    std::fs::create_dir_all(conf_dir).unwrap();
    let conflist = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "husk-pods",
        "plugins": [{
            "type": "bridge",
            "bridge": "husk-cri0",
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_SUBNET}]],
                "dataDir": ipam_dir,
            },
        }],
    });
    std::fs::write(
        conf_dir.join("10-husk-pods.conflist"),
        serde_json::to_vec_pretty(&conflist).unwrap(),
    )
    .unwrap();
}

/// What the run may not leave: shims, VMMs, pod directories, pod network
/// namespaces and their addresses.
fn leftovers(c: &Containerd, ipam_dir: &Path) -> Vec<String> {
    let mut left = c.pod_leftovers("k8s.io", Duration::from_secs(30));
    // containerd's pod network namespaces are bind-mounted there.
    let netns: Vec<_> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("cni-"))
                .collect()
        })
        .unwrap_or_default();
    if !netns.is_empty() {
        left.push(format!("pod network namespaces: {netns:?}"));
    }
    // host-local keeps one file per address it handed out.
    let leases: Vec<_> = std::fs::read_dir(ipam_dir.join("husk-pods"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    if !leases.is_empty() {
        left.push(format!("pod addresses still leased: {leases:?}"));
    }
    left
}

#[test]
fn cri_runs_a_pod_of_two_containers_in_one_vm() {
    let client = client_bin();
    assert!(
        client.exists(),
        "{client:?} is missing: cargo build --release -p husk-cri-tests"
    );
    let work = tempfile::Builder::new()
        .prefix("husk-cri.")
        .tempdir_in("/run")
        .unwrap();
    let (cni_conf, ipam) = (work.path().join("cni"), work.path().join("ipam"));
    write_cni_config(&cni_conf, &ipam);
    let c = Containerd::start_cri(&cri_config(&cni_conf));
    for (dir, name, entrypoint) in [
        ("image", IMAGE, &[][..]),
        ("pause", PAUSE_IMAGE, &["sleep", "2147483647"][..]),
    ] {
        let dir = work.path().join(dir);
        std::fs::create_dir(&dir).unwrap();
        let archive = busybox_image_archive_with(&dir, name, entrypoint).unwrap();
        c.ok(&[
            "-n",
            "k8s.io",
            "image",
            "import",
            &archive.display().to_string(),
        ]);
    }
    let logs = work.path().join("logs");
    let started = Instant::now();
    let out = Command::new(&client)
        .arg("--socket")
        .arg(&c.address)
        .args(["--image", IMAGE, "--log-dir"])
        .arg(&logs)
        .args(["pod", "oom"])
        .stdin(Stdio::null())
        .output()
        .expect("run the CRI client");
    eprintln!(
        "CRI client ({:.1} s):\n{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout)
    );
    let left = leftovers(&c, &ipam);
    assert!(
        out.status.success() && left.is_empty(),
        "CRI scenarios: {}\nleft behind: {left:?}\n--- containerd log (end)\n{}",
        describe(&out),
        husk_tests::last_lines(&c.log(), 80)
    );
}
