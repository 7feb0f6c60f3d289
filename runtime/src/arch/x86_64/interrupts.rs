//! The local APIC's LINT0/LINT1 wiring, as on a PC: the legacy PIC on
//! LINT0 (ExtINT), NMI on LINT1.

use kvm_bindings::kvm_lapic_state;
use kvm_ioctls::VcpuFd;

/// LVT LINT0 register offset.
const APIC_LVT0: usize = 0x350;
/// LVT LINT1 register offset.
const APIC_LVT1: usize = 0x360;
/// Delivery mode: NMI.
const DELIVERY_NMI: u32 = 0x4;
/// Delivery mode: ExtINT.
const DELIVERY_EXTINT: u32 = 0x7;

/// Why the local APIC could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("KVM: {what} the local APIC")]
pub struct LapicError {
    what: &'static str,
    #[source]
    source: kvm_ioctls::Error,
}

fn read_reg(state: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &state.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn write_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().iter().enumerate() {
        state.regs[offset + i] = *byte as _;
    }
}

/// Sets a local vector table entry's delivery mode (bits 8–10).
fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Wires LINT0 to ExtINT and LINT1 to NMI.
pub fn set_lint(vcpu: &VcpuFd) -> Result<(), LapicError> {
    let mut state = vcpu.get_lapic().map_err(|source| LapicError {
        what: "read",
        source,
    })?;
    let lvt0 = read_reg(&state, APIC_LVT0);
    write_reg(
        &mut state,
        APIC_LVT0,
        with_delivery_mode(lvt0, DELIVERY_EXTINT),
    );
    let lvt1 = read_reg(&state, APIC_LVT1);
    write_reg(
        &mut state,
        APIC_LVT1,
        with_delivery_mode(lvt1, DELIVERY_NMI),
    );
    vcpu.set_lapic(&state).map_err(|source| LapicError {
        what: "write",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_round_trip_and_modes_replace_only_their_bits() {
        let mut state = kvm_lapic_state::default();
        write_reg(&mut state, APIC_LVT0, 0x0001_0700);
        assert_eq!(read_reg(&state, APIC_LVT0), 0x0001_0700);
        assert_eq!(with_delivery_mode(0x0001_0700, DELIVERY_NMI), 0x0001_0400);
        assert_eq!(
            with_delivery_mode(0x0001_0000, DELIVERY_EXTINT),
            0x0001_0700
        );
    }
}
