//! Campaigns: what partners promote and what they earn for it.
//!
//! A campaign has a destination (where the click router sends visitors), the domains deep links
//! may point to, a commission rule (percent of the amount in basis points, or a flat amount),
//! whether renewals earn, the holdback before a commission is approved, and how a conversion
//! is attributed (last or first click within a window). A partner joins a campaign with its first
//! link (or explicitly); the terms are snapshotted then, so later edits change new partnerships
//! only.

pub mod routes;
pub mod store;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::FieldError;

pub use store::{Partnership, StoredCampaign};

/// How a commission is computed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommissionRule {
    /// `bps` basis points of the conversion amount (1500 = 15%).
    Percent { bps: i64 },
    /// A fixed `amount` in minor units of `currency`, whatever the conversion amount.
    Flat { amount: i64, currency: String },
}

/// A commission rule as a request gives it, checked by [`CommissionInput::validate`].
#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct CommissionInput {
    /// `percent` or `flat`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `percent`: 1 to 10000 basis points.
    #[schema(minimum = 1, maximum = 10_000)]
    pub bps: Option<i64>,
    /// For `flat`: minor units, 1 to 10^15.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: Option<i64>,
    /// For `flat`: ISO 4217, e.g. `EUR`.
    pub currency: Option<String>,
}

impl CommissionInput {
    /// The rule, or per-field messages named `{field}.bps` and so on.
    pub fn validate(&self, field: &str, errors: &mut Vec<FieldError>) -> Option<CommissionRule> {
        let name = |part: &str| format!("{field}.{part}");
        match self.kind.as_str() {
            "percent" => match self.bps {
                Some(bps) if (1..=10_000).contains(&bps) => Some(CommissionRule::Percent { bps }),
                _ => {
                    errors.push(FieldError::new(
                        &name("bps"),
                        "a percent commission needs bps between 1 and 10000",
                    ));
                    None
                }
            },
            "flat" => {
                let amount = self
                    .amount
                    .filter(|a| (1..=crate::commissions::MAX_AMOUNT).contains(a));
                if amount.is_none() {
                    errors.push(FieldError::new(
                        &name("amount"),
                        "a flat commission needs an amount of 1 to 10^15 minor units",
                    ));
                }
                let currency = self.currency.as_deref().and_then(currency_code);
                if currency.is_none() {
                    errors.push(FieldError::new(
                        &name("currency"),
                        "a flat commission needs an ISO 4217 currency such as EUR",
                    ));
                }
                Some(CommissionRule::Flat {
                    amount: amount?,
                    currency: currency?,
                })
            }
            _ => {
                errors.push(FieldError::new(&name("type"), "must be percent or flat"));
                None
            }
        }
    }
}

/// An ISO 4217-shaped code, upper-cased: three ASCII letters.
pub fn currency_code(raw: &str) -> Option<String> {
    let code = raw.trim().to_ascii_uppercase();
    (code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())).then_some(code)
}

/// The columns a rule is stored in: type, bps, amount, currency.
pub type RuleColumns = (String, Option<i64>, Option<i64>, Option<String>);

impl CommissionRule {
    pub fn to_columns(&self) -> RuleColumns {
        match self {
            CommissionRule::Percent { bps } => ("percent".to_owned(), Some(*bps), None, None),
            CommissionRule::Flat { amount, currency } => (
                "flat".to_owned(),
                None,
                Some(*amount),
                Some(currency.clone()),
            ),
        }
    }

    /// The rule stored in these columns; `None` when no rule is stored (`kind` is NULL).
    pub fn from_columns(
        kind: Option<&str>,
        bps: Option<i64>,
        amount: Option<i64>,
        currency: Option<&str>,
    ) -> Option<CommissionRule> {
        match kind? {
            "percent" => Some(CommissionRule::Percent { bps: bps? }),
            _ => Some(CommissionRule::Flat {
                amount: amount?,
                currency: currency?.to_owned(),
            }),
        }
    }
}

/// A lower-cased host name such as `shop.example.com`; `None` for anything else.
pub fn domain_name(raw: &str) -> Option<String> {
    let domain = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    (labels_ok && domain.contains('.') && domain.len() <= 253).then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(
        kind: &str,
        bps: Option<i64>,
        amount: Option<i64>,
        currency: Option<&str>,
    ) -> CommissionInput {
        CommissionInput {
            kind: kind.to_owned(),
            bps,
            amount,
            currency: currency.map(str::to_owned),
        }
    }

    #[test]
    fn commission_rules_are_checked_per_field() {
        let mut errors = Vec::new();
        assert_eq!(
            input("percent", Some(1500), None, None).validate("commission", &mut errors),
            Some(CommissionRule::Percent { bps: 1500 })
        );
        assert_eq!(
            input("flat", None, Some(500), Some("eur")).validate("commission", &mut errors),
            Some(CommissionRule::Flat {
                amount: 500,
                currency: "EUR".to_owned()
            })
        );
        assert!(errors.is_empty());
        input("percent", Some(10_001), None, None).validate("commission", &mut errors);
        input("flat", None, Some(0), Some("euro")).validate("commission", &mut errors);
        input("tiered", None, None, None).validate("commission", &mut errors);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "commission.bps",
                "commission.amount",
                "commission.currency",
                "commission.type"
            ]
        );
    }

    #[test]
    fn rules_round_trip_through_their_columns() {
        for rule in [
            CommissionRule::Percent { bps: 250 },
            CommissionRule::Flat {
                amount: 1000,
                currency: "GBP".to_owned(),
            },
        ] {
            let (kind, bps, amount, currency) = rule.to_columns();
            assert_eq!(
                CommissionRule::from_columns(Some(&kind), bps, amount, currency.as_deref()),
                Some(rule)
            );
        }
        assert_eq!(CommissionRule::from_columns(None, None, None, None), None);
    }

    #[test]
    fn domains_are_host_names() {
        assert_eq!(
            domain_name("Shop.Example.com").as_deref(),
            Some("shop.example.com")
        );
        for bad in [
            "example",
            "http://example.com",
            "-x.com",
            "a..com",
            "ex ample.com",
            "",
        ] {
            assert_eq!(domain_name(bad), None, "{bad}");
        }
    }
}
