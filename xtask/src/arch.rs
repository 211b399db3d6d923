//! The target architectures, and every name each one goes by.

/// ELF `e_machine` values of the binaries we ship.
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// Alloy's and our file names: `amd64`, `arm64`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// systemd's name, for `ARCHITECTURE=` in extension-release.
    pub fn systemd_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86-64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The ELF `e_machine` value of binaries for this architecture.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => EM_X86_64,
            Arch::Arm64 => EM_AARCH64,
        }
    }

    /// The release asset: `alloy-linux-amd64.zip`.
    pub fn release_zip(self) -> String {
        format!("alloy-linux-{}.zip", self.name())
    }

    /// The one file inside the release zip: `alloy-linux-amd64`.
    pub fn release_binary(self) -> String {
        format!("alloy-linux-{}", self.name())
    }
}

impl std::str::FromStr for Arch {
    type Err = anyhow::Error;

    /// `amd64` or `arm64`, as in file names.
    fn from_str(name: &str) -> anyhow::Result<Arch> {
        Arch::ALL
            .into_iter()
            .find(|arch| arch.name() == name)
            .ok_or_else(|| {
                anyhow::anyhow!("{name:?} is not an architecture we build: amd64 or arm64")
            })
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_alloy_assets_and_systemd() {
        assert_eq!(Arch::Amd64.release_zip(), "alloy-linux-amd64.zip");
        assert_eq!(Arch::Arm64.release_binary(), "alloy-linux-arm64");
        assert_eq!(Arch::Amd64.systemd_name(), "x86-64");
        assert_eq!(Arch::Arm64.systemd_name(), "arm64");
        for arch in Arch::ALL {
            assert_eq!(arch.name().parse::<Arch>().unwrap(), arch);
        }
        assert!("x86-64".parse::<Arch>().is_err());
    }
}
