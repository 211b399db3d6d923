//! Just enough ELF to refuse a binary built for the wrong machine.

pub use crate::arch::{Arch, EM_AARCH64, EM_X86_64};
use crate::util::le::u16_at;

fn machine_name(machine: u16) -> String {
    match machine {
        3 => "x86 (32-bit)".into(),
        EM_X86_64 => "x86-64".into(),
        40 => "ARM (32-bit)".into(),
        EM_AARCH64 => "AArch64".into(),
        21 => "PowerPC64".into(),
        22 => "s390x".into(),
        243 => "RISC-V".into(),
        other => format!("machine {other}"),
    }
}

/// Bytes of an ELF64 file header: all that [`check_header`] reads.
pub const HEADER_BYTES: usize = 64;

/// Checks an ELF header: a 64-bit little-endian executable (or PIE) for `arch`.
pub fn check_header(header: &[u8], arch: Arch) -> Result<(), String> {
    if header.len() < HEADER_BYTES || &header[..4] != b"\x7fELF" {
        return Err("it is not an ELF file".into());
    }
    if header[4] != 2 || header[5] != 1 {
        return Err("it is not a 64-bit little-endian ELF file".into());
    }
    let e_type = u16_at(header, 16);
    if e_type != 2 && e_type != 3 {
        return Err(format!(
            "it is an ELF file but not an executable (e_type {e_type})"
        ));
    }
    let machine = u16_at(header, 18);
    if machine != arch.elf_machine() {
        return Err(format!(
            "it is an ELF executable for {}, not for {} ({})",
            machine_name(machine),
            machine_name(arch.elf_machine()),
            arch
        ));
    }
    Ok(())
}

/// A minimal 64-bit executable header for `machine`, for tests.
#[doc(hidden)]
pub fn fake_header(machine: u16) -> Vec<u8> {
    let mut header = vec![0u8; HEADER_BYTES];
    header[..4].copy_from_slice(b"\x7fELF");
    header[4] = 2;
    header[5] = 1;
    header[16..18].copy_from_slice(&2u16.to_le_bytes());
    header[18..20].copy_from_slice(&machine.to_le_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_right_machine_only() {
        assert_eq!(check_header(&fake_header(EM_X86_64), Arch::Amd64), Ok(()));
        assert_eq!(check_header(&fake_header(EM_AARCH64), Arch::Arm64), Ok(()));
        let err = check_header(&fake_header(EM_AARCH64), Arch::Amd64).unwrap_err();
        assert_eq!(
            err,
            "it is an ELF executable for AArch64, not for x86-64 (amd64)"
        );
        let err = check_header(&fake_header(22), Arch::Arm64).unwrap_err();
        assert!(err.contains("s390x"), "{err}");
    }

    #[test]
    fn refuses_non_elf_and_non_executables() {
        assert!(check_header(b"#!/bin/sh\necho alloy\n", Arch::Amd64)
            .unwrap_err()
            .contains("not an ELF"));
        let mut shared_object_32 = fake_header(EM_X86_64);
        shared_object_32[4] = 1;
        assert!(check_header(&shared_object_32, Arch::Amd64)
            .unwrap_err()
            .contains("64-bit"));
        let mut relocatable = fake_header(EM_X86_64);
        relocatable[16] = 1;
        assert!(check_header(&relocatable, Arch::Amd64)
            .unwrap_err()
            .contains("not an executable"));
    }
}
