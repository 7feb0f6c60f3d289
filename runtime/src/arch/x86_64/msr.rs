//! Model-specific registers a vCPU starts with.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

/// Why the boot MSRs could not be set.
#[derive(Debug, thiserror::Error)]
pub enum MsrError {
    /// The MSR list could not be built.
    #[error("cannot build the MSR list")]
    Build,
    /// The ioctl failed.
    #[error("KVM refused the MSRs")]
    Set(#[source] kvm_ioctls::Error),
    /// KVM set only some of them.
    #[error("KVM set {set} of {total} boot MSRs; the first refused is {first_refused:#x}")]
    Partial {
        /// How many were set.
        set: usize,
        /// How many were asked for.
        total: usize,
        /// The first MSR refused.
        first_refused: u32,
    },
}

/// MSR index and starting value, with what it is.
const BOOT_MSRS: &[(u32, u64, &str)] = &[
    (0x174, 0, "IA32_SYSENTER_CS"),
    (0x175, 0, "IA32_SYSENTER_ESP"),
    (0x176, 0, "IA32_SYSENTER_EIP"),
    (0xc000_0081, 0, "STAR"),
    (0xc000_0082, 0, "LSTAR"),
    (0xc000_0083, 0, "CSTAR"),
    (0xc000_0084, 0, "SYSCALL_MASK"),
    (0xc000_0102, 0, "KERNEL_GS_BASE"),
    (0x10, 0, "IA32_TSC"),
    (0x1a0, 1, "IA32_MISC_ENABLE: fast strings"),
    (
        0x2ff,
        (1 << 11) | 6,
        "MTRR default type: MTRRs on, write-back",
    ),
];

/// The boot MSRs as KVM takes them.
pub fn boot_msrs() -> Result<Msrs, MsrError> {
    let entries: Vec<kvm_msr_entry> = BOOT_MSRS
        .iter()
        .map(|(index, data, _)| kvm_msr_entry {
            index: *index,
            data: *data,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&entries).map_err(|_| MsrError::Build)
}

/// Sets the boot MSRs on `vcpu`.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), MsrError> {
    let msrs = boot_msrs()?;
    let set = vcpu.set_msrs(&msrs).map_err(MsrError::Set)?;
    if set != BOOT_MSRS.len() {
        return Err(MsrError::Partial {
            set,
            total: BOOT_MSRS.len(),
            first_refused: BOOT_MSRS[set].0,
        });
    }
    Ok(())
}
