//! Retention by classification: how long an object must stay unchangeable, from the most
//! sensitive event it holds. The replicator applies it; the verifier checks stores against it.

use serde::Deserialize;

/// Days of retention per classification code (FORMATS.md §1: 0 UNCLASSIFIED … 4 CUI//SP-LEI).
/// Defaults follow DESIGN.md; CUI//SP-LEI (law-enforcement records), which DESIGN.md does
/// not name, gets the longest default, 3650 days, so no class is kept shorter than a less
/// sensitive one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionPolicy {
    #[serde(rename = "UNCLASSIFIED")]
    pub unclassified: u32,
    #[serde(rename = "CUI//BASIC")]
    pub cui_basic: u32,
    #[serde(rename = "CUI//SP-PRIV")]
    pub cui_sp_priv: u32,
    #[serde(rename = "CUI//SP-PROP")]
    pub cui_sp_prop: u32,
    #[serde(rename = "CUI//SP-LEI")]
    pub cui_sp_lei: u32,
}

impl Default for RetentionPolicy {
    fn default() -> RetentionPolicy {
        RetentionPolicy {
            unclassified: 1825,
            cui_basic: 2555,
            cui_sp_priv: 3650,
            cui_sp_prop: 3650,
            cui_sp_lei: 3650,
        }
    }
}

/// The legal floor per classification, compiled in: no configuration and no approved
/// request can keep a class for less (DESIGN.md "Trust model"). UNCLASSIFIED 5 years,
/// CUI//BASIC 7, the CUI specified categories 10.
pub const LEGAL_FLOOR_DAYS: [u32; 5] = [1825, 2555, 3650, 3650, 3650];

pub const CLASS_NAMES: [&str; 5] = [
    "UNCLASSIFIED",
    "CUI//BASIC",
    "CUI//SP-PRIV",
    "CUI//SP-PROP",
    "CUI//SP-LEI",
];

impl RetentionPolicy {
    /// Days for a classification code; codes past the table take the longest.
    pub fn days(&self, class: u8) -> u32 {
        match class {
            0 => self.unclassified,
            1 => self.cui_basic,
            2 => self.cui_sp_priv,
            3 => self.cui_sp_prop,
            4 => self.cui_sp_lei,
            _ => self.longest_days(),
        }
    }

    pub fn longest_days(&self) -> u32 {
        (0..5).map(|c| self.days(c)).max().unwrap_or(0)
    }

    /// Retain-until for an object sealed at `sealed_at_unix_s` holding events up to `class`.
    pub fn retain_until(&self, sealed_at_unix_s: u64, class: u8) -> u64 {
        sealed_at_unix_s + u64::from(self.days(class)) * 86_400
    }

    /// The first class kept for less than its legal floor, as a message naming it.
    pub fn below_floor(&self) -> Option<String> {
        (0..5u8).find_map(|c| {
            let (days, floor) = (self.days(c), LEGAL_FLOOR_DAYS[c as usize]);
            (days < floor).then(|| {
                format!(
                    "{}: {days} days is below the legal floor of {floor} days",
                    CLASS_NAMES[c as usize]
                )
            })
        })
    }

    /// Sets one class by its marking (`CUI//BASIC=2555` on a command line).
    pub fn set(&mut self, name: &str, days: u32) -> Result<(), String> {
        let slot = match name {
            "UNCLASSIFIED" => &mut self.unclassified,
            "CUI//BASIC" => &mut self.cui_basic,
            "CUI//SP-PRIV" => &mut self.cui_sp_priv,
            "CUI//SP-PROP" => &mut self.cui_sp_prop,
            "CUI//SP-LEI" => &mut self.cui_sp_lei,
            _ => return Err(format!("unknown classification {name:?}")),
        };
        *slot = days;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_legal_floor_and_nothing_goes_below_it() {
        let p = RetentionPolicy::default();
        assert_eq!(p.below_floor(), None);
        for (c, name) in CLASS_NAMES.iter().enumerate() {
            let mut q = p;
            q.set(name, LEGAL_FLOOR_DAYS[c] - 1).expect("set");
            let why = q.below_floor().expect("below");
            assert!(why.starts_with(name), "{why}");
            q.set(name, LEGAL_FLOOR_DAYS[c] + 1).expect("set");
            assert_eq!(q.below_floor(), None);
        }
    }

    #[test]
    fn defaults_and_longest() {
        let p = RetentionPolicy::default();
        assert_eq!(p.days(0), 1825);
        assert_eq!(p.days(1), 2555);
        assert_eq!(p.days(3), 3650);
        assert_eq!(p.days(9), 3650);
        assert_eq!(p.retain_until(100, 0), 100 + 1825 * 86_400);
    }
}
