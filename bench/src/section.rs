//! The sections of a run by name: which run, in what order, on which system. How each is
//! measured is in [`crate::sections`].

/// A section of the run, by its command-line name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Section {
    Batch,
    Crud,
    Checkout,
    Ceiling,
    Stress,
    /// Closed-loop clients far above capacity (1,000 and 3,000), fresh and random orders:
    /// statuses, and `GET /orders/find` latency beside them.
    Overload,
    /// Fresh checkouts while coordinator-1, order-1 and the stock database are killed in turn:
    /// the dip and the recovery of the rate.
    Faults,
    Consistency,
    /// `--ha` only: `checkout` again, on the system with Patroni clusters, and the ratio
    /// HA/single at each concurrency.
    #[value(skip)]
    HaCheckout,
    /// `--ha` only: each database's primary killed in turn ([`launcher::System::failover`]).
    #[value(skip)]
    Failover,
}

impl Section {
    /// Run order: `batch` loads what `crud`, `checkout` and `ceiling` use; `faults` kills
    /// processes, so it follows the sections measured on an undisturbed system;
    /// `consistency` overwrites item 0 and users 0..999, so it comes last.
    pub const ALL: [Section; 8] = [
        Section::Batch,
        Section::Crud,
        Section::Checkout,
        Section::Ceiling,
        Section::Stress,
        Section::Overload,
        Section::Faults,
        Section::Consistency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Batch => "batch",
            Section::Crud => "crud",
            Section::Checkout => "checkout",
            Section::Ceiling => "ceiling",
            Section::Stress => "stress",
            Section::Overload => "overload",
            Section::Faults => "faults",
            Section::Consistency => "consistency",
            Section::HaCheckout => "ha-checkout",
            Section::Failover => "failover",
        }
    }

    /// What runs on the system with one server per database: `only`, in run order and
    /// without repeats, every section when empty. With `ha`, only `checkout` (the baseline of
    /// the HA ratios) and what `only` names.
    pub fn selected(only: &[Section], ha: bool) -> Vec<Section> {
        Section::ALL
            .into_iter()
            .filter(|section| {
                only.contains(section)
                    || if ha {
                        *section == Section::Checkout
                    } else {
                        only.is_empty()
                    }
            })
            .collect()
    }

    /// What runs on the system with Patroni clusters (`--ha`).
    pub const HA: [Section; 2] = [Section::HaCheckout, Section::Failover];
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn with_ha_the_single_system_runs_checkout_and_what_only_names() {
        use Section::*;
        assert_eq!(Section::selected(&[], false), Section::ALL);
        assert_eq!(Section::selected(&[Stress, Crud], false), [Crud, Stress]);
        assert_eq!(Section::selected(&[], true), [Checkout]);
        assert_eq!(
            Section::selected(&[Consistency, Crud], true),
            [Crud, Checkout, Consistency]
        );
        assert_eq!(Section::selected(&[Checkout], true), [Checkout]);
    }

    #[test]
    fn the_ha_sections_are_not_command_line_names() {
        for section in Section::HA {
            assert!(Section::from_str(section.name(), false).is_err());
        }
    }
}
