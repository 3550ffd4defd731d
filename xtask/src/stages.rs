//! The list of stages: one chapter crate, one book chapter and one test file
//! each. A stage is added here when its code lands.

pub struct Stage {
    pub number: u32,
    /// Directory name under chapters/, e.g. "01-namespace".
    pub slug: &'static str,
}

pub const STAGES: &[Stage] = &[
    Stage {
        number: 1,
        slug: "01-namespace",
    },
    Stage {
        number: 2,
        slug: "02-cgroups",
    },
    Stage {
        number: 3,
        slug: "03-rootfs",
    },
    Stage {
        number: 4,
        slug: "04-overlay",
    },
    Stage {
        number: 5,
        slug: "05-volumes",
    },
    Stage {
        number: 6,
        slug: "06-commit",
    },
    Stage {
        number: 7,
        slug: "07-detach",
    },
    Stage {
        number: 8,
        slug: "08-exec",
    },
    Stage {
        number: 9,
        slug: "09-network",
    },
];

pub fn last() -> u32 {
    STAGES.iter().map(|s| s.number).max().unwrap_or(0)
}

pub fn find(number: u32) -> Option<&'static Stage> {
    STAGES.iter().find(|s| s.number == number)
}
