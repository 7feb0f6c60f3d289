//! What a benchmark ran on: cores, memory, kernel, CPU, and which kind of
//! KVM, because that decides which figures mean anything.

use std::path::Path;

/// The kind of `/dev/kvm` a machine has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmKind {
    /// VT-x or AMD-V on bare metal.
    Hardware,
    /// VT-x or AMD-V handed down by a hypervisor that itself uses hardware
    /// virtualization (a cloud VM with nested virtualization).
    NestedHardware,
    /// KVM inside a host that QEMU emulates in software (TCG): everything
    /// runs many times slower; tests/kvm-host is such a host.
    NestedEmulated,
    /// PVM (`kvm_pvm`): software virtualization that runs tiny bare-metal
    /// guests but no Linux.
    Pvm,
    /// A `/dev/kvm` without vmx/svm that is not PVM either.
    OtherSoftware,
    /// No `/dev/kvm`.
    Missing,
}

impl KvmKind {
    /// Whether a stock Linux guest boots on it.
    pub fn boots_linux(self) -> bool {
        matches!(
            self,
            Self::Hardware | Self::NestedHardware | Self::NestedEmulated
        )
    }

    /// Whether software emulation sets the pace of a guest, so that times
    /// say nothing about production hosts.
    pub fn emulated(self) -> bool {
        matches!(self, Self::NestedEmulated | Self::OtherSoftware)
    }

    /// Where a figure measured on this KVM ran, as the report says it.
    pub fn place(self) -> &'static str {
        match self {
            Self::Hardware => "hardware KVM",
            Self::NestedHardware => "nested KVM (under a hardware hypervisor)",
            Self::NestedEmulated => "inside tests/kvm-host (emulated host, nested KVM)",
            Self::Pvm => "direct on PVM /dev/kvm",
            Self::OtherSoftware => "direct on a software /dev/kvm",
            Self::Missing => "no /dev/kvm",
        }
    }

    /// A short description for the machine table.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Hardware => "hardware (vmx/svm)",
            Self::NestedHardware => "nested, hardware-assisted (vmx/svm under a hypervisor)",
            Self::NestedEmulated => "nested in a software-emulated host (TCG)",
            Self::Pvm => "PVM (kvm_pvm, software; no Linux guests)",
            Self::OtherSoftware => "software (no vmx/svm)",
            Self::Missing => "none",
        }
    }
}

/// Facts about the machine a benchmark ran on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// Online CPUs.
    pub cores: usize,
    /// Total memory in MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// CPU model name.
    pub cpu: String,
    /// Which KVM.
    pub kvm: KvmKind,
}

impl Machine {
    /// Looks at this machine.
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib: mem_total_kib(&meminfo).unwrap_or(0) / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            cpu: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            kvm: kvm_kind(
                &cpuinfo,
                Path::new("/dev/kvm").exists(),
                Path::new("/sys/module/kvm_pvm").exists(),
            ),
        }
    }

    /// The machine as `(key, value)` rows for the report.
    pub fn rows(&self) -> Vec<(String, String)> {
        vec![
            ("cores".into(), self.cores.to_string()),
            ("memory".into(), format!("{} MiB", self.memory_mib)),
            ("kernel".into(), self.kernel.clone()),
            ("CPU".into(), self.cpu.clone()),
            ("KVM".into(), self.kvm.describe().into()),
        ]
    }
}

/// The first `model name` of /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

fn mem_total_kib(meminfo: &str) -> Option<u64> {
    let rest = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Classifies `/dev/kvm` from /proc/cpuinfo and two existence checks.
fn kvm_kind(cpuinfo: &str, dev_kvm: bool, pvm_module: bool) -> KvmKind {
    if pvm_module {
        return KvmKind::Pvm;
    }
    if !dev_kvm {
        return KvmKind::Missing;
    }
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == "flags"))
        .map(|(_, v)| v.split_whitespace().collect())
        .unwrap_or_default();
    let has = |f: &str| flags.contains(&f);
    if !has("vmx") && !has("svm") {
        return KvmKind::OtherSoftware;
    }
    if !has("hypervisor") {
        return KvmKind::Hardware;
    }
    // QEMU's software CPU models call themselves "QEMU TCG CPU"; with
    // `-cpu max` under TCG the model name stays QEMU's own.
    match cpu_model(cpuinfo) {
        Some(model) if model.contains("TCG") || model.starts_with("QEMU") => {
            KvmKind::NestedEmulated
        }
        _ => KvmKind::NestedHardware,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCG: &str =
        "processor\t: 0\nmodel name\t: QEMU TCG CPU version 2.5+\nflags\t\t: fpu svm hypervisor\n";
    const METAL: &str = "processor\t: 0\nmodel name\t: AMD EPYC 7763\nflags\t\t: fpu svm lm\n";
    const PVM_HOST: &str =
        "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu hypervisor lm\n";

    #[test]
    fn classifies_kvm() {
        assert_eq!(kvm_kind(PVM_HOST, true, true), KvmKind::Pvm);
        assert_eq!(kvm_kind(PVM_HOST, true, false), KvmKind::OtherSoftware);
        assert_eq!(kvm_kind(METAL, true, false), KvmKind::Hardware);
        assert_eq!(kvm_kind(METAL, false, false), KvmKind::Missing);
        assert_eq!(kvm_kind(TCG, true, false), KvmKind::NestedEmulated);
        let cloud = METAL.replace("lm", "lm hypervisor");
        assert_eq!(kvm_kind(&cloud, true, false), KvmKind::NestedHardware);
    }

    #[test]
    fn reads_model_and_memory() {
        assert_eq!(cpu_model(METAL).as_deref(), Some("AMD EPYC 7763"));
        assert_eq!(
            mem_total_kib("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000)
        );
    }
}
